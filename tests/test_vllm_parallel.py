"""vLLM with two workers answers like one: tensor parallelism with the tower split by weights (the
default) or by data (``mm_encoder_tp_mode="data"``), on the CPU build, greedy tokens and their
log-probabilities equal to our transformers model (which the single-worker engine equals too, see
``test_vllm_generate.py``). Pipeline and data parallelism take longer and run in ``make test-scale``
(``test_vllm_scale.py``)."""

from __future__ import annotations

import pytest
from _parity import assert_same, hf_reference, mixed_prompts, parity_llm, two_cpu_workers_env, vllm_generate

from llava_next_video_hf import testing
from llava_next_video_hf.vllm_plugin.offline import cpu_thread_binding

pytestmark = [pytest.mark.vllm, pytest.mark.scale]

MAX_NEW_TOKENS = 8
PROMPTS = mixed_prompts()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return testing.make_tiny_checkpoint(tmp_path_factory.mktemp("tp") / "ckpt", seed=1)


@pytest.fixture(scope="module")
def reference(ckpt):
    run = hf_reference(ckpt, MAX_NEW_TOKENS)
    return [run(p) for p in PROMPTS]


@pytest.fixture(scope="module", params=["weights", "data"])
def tp2(request, ckpt):
    """A 2-worker tensor-parallel engine; each worker bound to its own core(s)."""
    limits = {"image": 1, "video": 1}
    with (
        two_cpu_workers_env(),
        parity_llm(
            ckpt, tensor_parallel_size=2, mm_encoder_tp_mode=request.param, limit_mm_per_prompt=limits
        ) as engine,
    ):
        yield request.param, engine


def tower_shards(model) -> tuple[int, int, bool]:
    """Output rows this worker holds of the first tower attention projection and of the projector's
    first linear (the CPU backend repacks weights, so the layers' own partition sizes), and the mode."""
    qkv = model.vision_tower.vision_model.encoder.layers[0].self_attn.qkv_proj
    projector = model.multi_modal_projector.linear_1
    return qkv.output_size_per_partition, projector.output_size_per_partition, model.encoder_data_parallel


def tower_batch_for_three_crops(model) -> tuple[int, tuple[int, ...]]:
    """Run the vision features of 3 crops on this worker: (crops its tower saw, output shape)."""
    import torch

    seen = []
    hook = model.vision_tower.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
    try:
        size = model.config.vision_config.image_size
        with torch.inference_mode():
            out = model.vision_features(torch.zeros(3, 3, size, size))
    finally:
        hook.remove()
    return sum(seen), tuple(out.shape)


def local_vs_shared_encoding(model) -> float:
    """Under ``data`` mode each rank encodes its own clip through the encoder CUDA-graph entry point
    (vLLM's graph manager gives ranks different videos there), compared with the same clip encoded
    by all ranks together; under ``weights`` all ranks take the same clip. Max abs difference."""
    import torch
    from vllm.distributed import get_tensor_model_parallel_rank

    size = model.config.vision_config.image_size
    generator = torch.Generator().manual_seed(0)
    clips = [torch.randn(3, 3, size, size, generator=generator) for _ in range(2)]  # same on both ranks
    rank = get_tensor_model_parallel_rank() if model.encoder_data_parallel else 0
    with torch.inference_mode():
        local = model.encoder_eager_forward({"pixel_values_videos": clips[rank]})
        together = [model.encode_frames(clip).flatten(0, 1) for clip in clips]
    return (local - together[rank]).abs().max().item()


def test_two_workers_give_the_single_worker_tokens(tp2, reference):
    mode, llm = tp2
    got = vllm_generate(llm, PROMPTS, MAX_NEW_TOKENS)
    for i, (g, r) in enumerate(zip(got, reference, strict=True)):
        assert_same(g, r, f"TP=2 ({mode}) prompt {i}")


def test_the_tower_is_split_by_weights_or_replicated_for_data(tp2, ckpt):
    from transformers import AutoConfig

    from llava_next_video_hf.processing import register_auto_classes

    register_auto_classes()
    config = AutoConfig.from_pretrained(ckpt)
    full_qkv = 3 * config.vision_config.hidden_size  # q, k and v rows of one layer, unsplit
    mode, llm = tp2
    shards = llm.apply_model(tower_shards)
    assert len(shards) == 2
    for qkv_rows, projector_rows, data_parallel in shards:
        assert data_parallel == (mode == "data")
        assert qkv_rows == (full_qkv if mode == "data" else full_qkv // 2)  # replicated vs split
        assert projector_rows == config.text_config.hidden_size // (1 if mode == "data" else 2)
    ran = llm.apply_model(tower_batch_for_three_crops)
    assert [crops for crops, _ in ran] == ([2, 2] if mode == "data" else [3, 3])  # 3 padded to 2 + 2
    assert all(shape[0] == 3 for _, shape in ran)  # every worker ends with all 3 crops' features
    assert max(llm.apply_model(local_vs_shared_encoding)) < 1e-5  # per-rank inputs stay per rank


def test_cpu_thread_binding_gives_each_worker_its_own_cores():
    from llava_next_video_hf.errors import LlavaNextVideoError

    assert cpu_thread_binding(2, [0, 1]) == "0|1"
    assert cpu_thread_binding(2, range(8)) == "0-3|4-7"
    assert cpu_thread_binding(3, range(8)) == "0-2|3-5|6-7"
    assert cpu_thread_binding(2, [0, 2, 4, 6]) == "0,2|4,6"  # not contiguous: listed
    with pytest.raises(LlavaNextVideoError, match="3 vLLM CPU workers need at least 3 cores"):
        cpu_thread_binding(3, [0, 1])
