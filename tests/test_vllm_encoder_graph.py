"""The vLLM video encoder is CUDA-graph friendly: what can be proved on a CPU.

vLLM captures one CUDA graph per token budget for models implementing ``SupportsEncoderCudaGraph``
(``cudagraph_mm_encoder``). On a CPU there are no CUDA graphs, so these tests prove the properties
the capture relies on, with the real model (vLLM's CLIP tower and layers, the tiny checkpoint's
weights) built in-process:

* ``torch.compile(fullgraph=True, dynamic=False)`` of the captured path per frame bucket: no graph
  break (so no host synchronisation and no data-dependent shape), and no recompilation when a bucket
  is used again with other frames;
* the manager's replay protocol, emulated step by step (item specs, greedy selection of a budget,
  the zero-padded copy into the captured buffer, forward, postprocess), gives the same per-video
  embeddings as the eager path, which itself equals our transformers model.
"""

from __future__ import annotations

import pytest
import torch

from llava_next_video_hf import testing
from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration

pytestmark = pytest.mark.vllm

# one checkpoint per layout the captured path must handle: per-frame newlines (a static count per
# frame) with pooling after the projector, a single per-video newline added after the graph, and
# the towers and feature selections the model supports (CLIP keeping CLS, several layers, SigLIP)
POLICIES = {
    "grid-after-max-clip-full": {
        "video_newline_position": "grid",
        "spatial_pool_position": "after_projector",
        "spatial_pool_mode": "max",
        "vision_feature_select_strategy": "full",
    },
    "one_token-before-bilinear-clip-2layers": {
        "video_newline_position": "one_token",
        "spatial_pool_position": "before_projector",
        "spatial_pool_mode": "bilinear",
        "vision_feature_layer": [-2, -1],
    },
    "frame-before-average-siglip": {
        "video_newline_position": "frame",
        "vision_config": {"model_type": "siglip_vision_model"},
    },
}


@pytest.fixture(scope="module", params=sorted(POLICIES))
def models(request, tmp_path_factory):
    """(vLLM model, transformers model) on one tiny checkpoint of the given layout."""
    from llava_next_video_hf.vllm_plugin.testing import build_model

    ckpt = testing.make_tiny_checkpoint(
        tmp_path_factory.mktemp(request.param) / "ckpt", **POLICIES[request.param]
    )
    hf = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt).eval()
    with build_model(ckpt) as (model, _):
        yield model, hf


def _frames(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


def _clips(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    return [_frames(n, seed + i) for i, n in enumerate(lengths)]


@torch.inference_mode()
def test_eager_embeddings_equal_transformers(models):
    """vLLM's tower and layers + our pooling/newlines give our transformers model's features."""
    from llava_next_video_hf.layout import num_image_crops

    model, hf = models
    clips = _clips([2, 3])
    ours = model.embed_multimodal(
        pixel_values_videos=torch.cat(clips), video_num_frames=torch.tensor([2, 3], dtype=torch.int64)
    )
    ref = hf.get_video_features(clips).pooler_output
    assert [v.shape[0] for v in ours] == [hf.config.num_video_tokens(2), hf.config.num_video_tokens(3)]
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    sizes = [(300, 500), (672, 300)]  # AnyRes: base view + the tiles of each image's canvas
    crops = [_frames(num_image_crops(h, w, hf.config), seed=20 + i) for i, (h, w) in enumerate(sizes)]
    ours = model.embed_multimodal(
        pixel_values=torch.cat(crops),
        image_sizes=torch.tensor(sizes),
        image_num_patches=torch.tensor([len(c) for c in crops]),
    )
    padded = torch.zeros(len(crops), max(len(c) for c in crops), 3, 336, 336)
    for i, c in enumerate(crops):
        padded[i, : len(c)] = c
    ref = hf.get_image_features(padded, torch.tensor(sizes)).pooler_output
    assert [v.shape[0] for v in ours] == [hf.config.num_image_tokens(h, w) for h, w in sizes]
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _replay(model, compiled, captured: dict[int, dict], mm_kwargs: dict) -> list[torch.Tensor]:
    """vLLM's EncoderCudaGraphManager._execute_local for one batch, with ``compiled`` as the graph.

    Every item goes into one batch; the smallest captured budget that holds its tokens is used.
    """
    specs = model.get_encoder_cudagraph_item_specs(mm_kwargs)
    indices = sorted(range(len(specs)), key=lambda i: specs[i].output_tokens)  # the manager's order
    tokens = sum(s.output_tokens for s in specs)
    budget = min(b for b in captured if b >= tokens)
    batch = model.select_encoder_cudagraph_items(mm_kwargs, indices)
    replay = model.prepare_encoder_cudagraph_replay_buffers(batch, len(specs), 64)
    buffers = captured[budget]
    for key, buf in buffers.items():  # the manager's default padding logic: zero, then slice-copy
        buf.zero_()
        buf[: replay.values[key].shape[0]].copy_(replay.values[key])
    output = compiled(buffers)
    dest: dict[int, torch.Tensor] = {}
    model.postprocess_encoder_output(
        {"default": output},
        indices,
        [s.output_tokens for s in specs],
        dest,
        clone=True,
        batch_mm_kwargs=batch,
    )
    return [dest[i] for i in range(len(specs))]


@torch.inference_mode()
def test_captured_path_compiles_per_bucket_without_breaks_or_recompiles(models):
    """fullgraph=True fails on any graph break (``.item()``, ``.tolist()``, data-dependent shapes)."""
    from torch._dynamo.utils import counters

    model, _ = models
    per_frame = model.tokens_per_frame
    # frame buckets of 2 and 4 frames, sized in tokens for as many one-frame videos (one_token adds
    # a newline per video, so a budget holds fewer frames than budget / per_frame when videos are many)
    budgets = [frames * model.config.num_video_tokens(1) for frames in (2, 4)]
    lo, hi = model.get_encoder_cudagraph_budget_range(model.vllm_config)
    assert lo == per_frame and hi >= max(budgets)

    torch._dynamo.reset()
    compiled = torch.compile(
        model.encoder_cudagraph_forward, fullgraph=True, dynamic=False, backend="aot_eager"
    )
    graphs_before = counters["stats"]["unique_graphs"]
    captured = {}
    for budget in budgets:  # "capture": one compiled graph per budget, on its own input buffer
        inputs = model.prepare_encoder_cudagraph_capture_inputs(
            budget, 4, 64, torch.device("cpu"), torch.float32
        )
        frames = budget // per_frame
        assert inputs.values["pixel_values_videos"].shape == (frames, 3, 336, 336)
        out = compiled(inputs.values)
        assert out.shape == (frames * per_frame, model.config.text_config.hidden_size)
        captured[budget] = inputs.values
    assert counters["stats"]["unique_graphs"] - graphs_before == len(budgets)

    batches = [[1], [1, 1], [2, 1], [3], [1, 3], [4]]  # frames per video; every batch fits a bucket
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed, lengths in enumerate(batches):
            clips = _clips(lengths, seed=10 * seed)
            mm_kwargs = {
                "pixel_values_videos": torch.cat(clips),
                "video_num_frames": torch.tensor(lengths, dtype=torch.int64),
            }
            graphed = _replay(model, compiled, captured, mm_kwargs)
            eager = model.embed_multimodal(**mm_kwargs)
            assert [g.shape[0] for g in graphed] == [model.config.num_video_tokens(n) for n in lengths]
            for g, e in zip(graphed, eager, strict=True):
                torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    assert counters["stats"]["unique_graphs"] - graphs_before == len(budgets)  # no recompiles


@torch.inference_mode()
def test_zero_padding_frames_do_not_change_real_frames(models):
    """Frames are encoded independently: padding a bucket with zero frames leaves the others as they are."""
    model, _ = models
    frames = _frames(3, seed=3)
    alone = model.encode_frames(frames)
    padded = model.encode_frames(torch.cat([frames, torch.zeros(5, 3, 336, 336)]))
    assert padded.shape == (8, *alone.shape[1:])
    torch.testing.assert_close(padded[:3], alone, rtol=1e-6, atol=1e-6)
