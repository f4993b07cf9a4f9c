"""The transformers model against transformers' own LLaVA-NeXT-Video / LLaVA-NeXT classes.

The reference models are built by transformers' classes with random weights; ours loads the very
same state dict. Logits must agree within 1e-4 (fp32) and greedy generations token for token.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import llava_next_video_hf as lnv
from llava_next_video_hf import rope, testing
from llava_next_video_hf.errors import PlaceholderMismatchError

ATOL = 1e-4


@pytest.fixture(scope="module")
def pair(tokenizer):
    """(reference LlavaNextVideoForConditionalGeneration, ours) with identical weights."""
    ref = testing.make_llava_hf_video_model(0, tokenizer)
    ours = lnv.LlavaNextVideoAnyResForConditionalGeneration(testing.tiny_config(tokenizer)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _prompt(tokenizer, token_id: int, n: int, question: str = "What happens?") -> list[int]:
    pre = tokenizer("USER: ").input_ids
    post = tokenizer(f"\n{question} ASSISTANT:", add_special_tokens=False).input_ids
    return pre + [token_id] * n + post


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _image_inputs(height: int, width: int, seed: int = 0):
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    proc = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    return proc(Image.fromarray(pixels), return_tensors="pt")


def test_video_logits_and_greedy_tokens_match_reference(pair, tokenizer):
    ref, ours = pair
    frames = 4
    n = ours.config.num_video_tokens(frames)
    assert n == 4 * 144  # stride 2 on a 24x24 grid, no newline: transformers' layout
    ids = torch.tensor([_prompt(tokenizer, tokenizer.video_token_id, n)])
    video = torch.randn(1, frames, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values_videos=video).logits
        got = ours(input_ids=ids, pixel_values_videos=video).logits
    assert (expected - got).abs().max().item() <= ATOL
    kw = dict(max_new_tokens=10, do_sample=False)
    assert torch.equal(
        ref.generate(input_ids=ids, pixel_values_videos=video, **kw),
        ours.generate(input_ids=ids, pixel_values_videos=video, **kw),
    )


@pytest.mark.parametrize("size", [(300, 500), (500, 300), (336, 336), (200, 1000)])
def test_image_logits_match_reference_with_unpad(pair, tokenizer, size):
    ref, ours = pair
    inputs = _image_inputs(*size)
    n = ours.config.num_image_tokens(*size)
    with torch.no_grad():
        ref_tokens = (
            ref.model.get_image_features(inputs.pixel_values, inputs.image_sizes).pooler_output[0].shape[0]
        )
    assert n == ref_tokens
    ids = torch.tensor([_prompt(tokenizer, tokenizer.image_token_id, n)])
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values=inputs.pixel_values, image_sizes=inputs.image_sizes).logits
        got = ours(input_ids=ids, pixel_values=inputs.pixel_values, image_sizes=inputs.image_sizes).logits
    assert (expected - got).abs().max().item() <= ATOL


def test_mixed_batch_matches_reference(pair, tokenizer):
    ref, ours = pair
    image = _image_inputs(300, 500)
    video = torch.randn(1, 2, 3, 336, 336, generator=torch.Generator().manual_seed(2))
    rows = [
        _prompt(tokenizer, tokenizer.video_token_id, ours.config.num_video_tokens(2)),
        _prompt(tokenizer, tokenizer.image_token_id, ours.config.num_image_tokens(300, 500), "And here?"),
        tokenizer("USER: just text ASSISTANT:").input_ids,
    ]
    ids, mask = _left_pad(rows, tokenizer.pad_token_id)
    kw = dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=image.pixel_values,
        image_sizes=image.image_sizes,
        pixel_values_videos=video,
    )
    with torch.no_grad():
        expected = ref(**kw).logits
        got = ours(**kw).logits
    real = mask.bool()
    assert (expected - got)[real].abs().max().item() <= ATOL
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(ref.generate(**kw, **gen), ours.generate(**kw, **gen))


def test_videos_of_different_lengths_in_one_batch(pair, tokenizer):
    """Each video in a padded batch gives the features it gives alone."""
    _, ours = pair
    g = torch.Generator().manual_seed(3)
    long, short = torch.randn(3, 3, 336, 336, generator=g), torch.randn(1, 3, 336, 336, generator=g)
    padded = torch.zeros(2, 3, 3, 336, 336)
    padded[0], padded[1, :1] = long, short
    with torch.no_grad():
        both = ours.get_video_features(padded, torch.tensor([3, 1])).pooler_output
        alone = [ours.get_video_features(v[None]).pooler_output[0] for v in (long, short)]
    assert [b.shape[0] for b in both] == [ours.config.num_video_tokens(3), ours.config.num_video_tokens(1)]
    for b, a in zip(both, alone, strict=True):
        assert (b - a).abs().max().item() <= 1e-5
    rows = [
        _prompt(tokenizer, tokenizer.video_token_id, ours.config.num_video_tokens(3)),
        _prompt(tokenizer, tokenizer.video_token_id, ours.config.num_video_tokens(1)),
    ]
    ids, mask = _left_pad(rows, tokenizer.pad_token_id)
    out = ours.generate(
        input_ids=ids,
        attention_mask=mask,
        pixel_values_videos=padded,
        video_num_frames=torch.tensor([3, 1]),
        max_new_tokens=4,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    solo = ours.generate(
        input_ids=torch.tensor([rows[1]]), pixel_values_videos=short[None], max_new_tokens=4, do_sample=False
    )
    assert torch.equal(out[1, -4:], solo[0, -4:])


@pytest.mark.parametrize("newline", ["no_token", "one_token", "frame", "grid"])
@pytest.mark.parametrize("mode", ["average", "max", "bilinear"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_video_token_count_for_every_policy(tokenizer, newline, mode, stride):
    model = testing.make_tiny_model(
        0, tokenizer, video_newline_position=newline, spatial_pool_mode=mode, spatial_pool_stride=stride
    )
    with torch.no_grad():
        feats = model.get_video_features(torch.randn(1, 2, 3, 336, 336)).pooler_output[0]
    side = math.ceil(24 / stride)
    by_hand = {
        "no_token": 2 * side * side,
        "one_token": 2 * side * side + 1,
        "frame": 2 * (side * side + 1),
        "grid": 2 * side * (side + 1),
    }[newline]
    assert feats.shape == (by_hand, 64)
    assert model.config.num_video_tokens(2) == by_hand


def test_grid_newlines_sit_at_row_ends(tokenizer):
    model = testing.make_tiny_model(0, tokenizer, video_newline_position="grid", spatial_pool_stride=4)
    with torch.no_grad():
        # 2 frames x 6 rows x 7
        feats = model.get_video_features(torch.randn(1, 2, 3, 336, 336)).pooler_output[0]
    rows = feats.view(2 * 6, 7, -1)
    assert torch.equal(rows[:, -1], model.model.image_newline.expand(12, -1))
    assert not torch.isclose(rows[:, :-1], model.model.image_newline).all(-1).any()


def test_pooling_after_projector_equals_manual_composition(tokenizer):
    model = testing.make_tiny_model(0, tokenizer, spatial_pool_position="after_projector")
    frames = torch.randn(2, 3, 336, 336)
    with torch.no_grad():
        got = model.model.encode_frames(frames)
        feats = model.model.vision_tower(frames, output_hidden_states=True).hidden_states[-2][:, 1:]
        proj = model.model.multi_modal_projector(feats)  # (2, 576, D)
        grid = proj.view(2, 24, 24, -1).permute(0, 3, 1, 2)
        manual = torch.nn.functional.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    assert (got - manual).abs().max().item() <= 1e-6


def test_placeholder_mismatch_raises_clear_error(pair, tokenizer):
    _, ours = pair
    ids = torch.tensor([_prompt(tokenizer, tokenizer.video_token_id, 100)])
    with pytest.raises(PlaceholderMismatchError, match=r"100 <video> tokens .* 1 video\(s\) .* 288"):
        ours(input_ids=ids, pixel_values_videos=torch.zeros(1, 2, 3, 336, 336))


def test_labels_give_a_loss_that_trains(tokenizer):
    model = testing.make_tiny_model(0, tokenizer).train()
    ids = torch.tensor([_prompt(tokenizer, tokenizer.video_token_id, 144)])
    labels = ids.clone()
    labels[labels == tokenizer.video_token_id] = -100
    video = torch.randn(1, 1, 3, 336, 336)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values_videos=video, labels=labels)
    manual = torch.nn.functional.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    assert abs(out.loss.item() - manual.item()) < 1e-5
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, pixel_values_videos=video, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_gradient_checkpointing_gives_same_gradients(tokenizer):
    ids = torch.tensor([_prompt(tokenizer, tokenizer.video_token_id, 144)])
    video = torch.randn(1, 1, 3, 336, 336)

    def grads(checkpointing: bool) -> torch.Tensor:
        model = testing.make_tiny_model(0, tokenizer).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model(input_ids=ids, pixel_values_videos=video, labels=ids).loss.backward()
        return model.model.multi_modal_projector.linear_1.weight.grad

    assert torch.allclose(grads(False), grads(True), atol=1e-6)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_implementations_and_hidden_states(tiny_ckpt, tokenizer, attn):
    model = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(
        tiny_ckpt, attn_implementation=attn
    )
    ids = torch.tensor([_prompt(tokenizer, tokenizer.video_token_id, 144)])
    with torch.no_grad():
        out = model(
            input_ids=ids, pixel_values_videos=torch.ones(1, 1, 3, 336, 336), output_hidden_states=True
        )
    assert len(out.hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert out.video_hidden_states.shape == (144, 64)


def test_bf16_runs_close_to_fp32(tiny_ckpt, tokenizer):
    ids = torch.tensor([_prompt(tokenizer, tokenizer.video_token_id, 144)])
    video = torch.randn(1, 1, 3, 336, 336, generator=torch.Generator().manual_seed(4))
    fp32 = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(tiny_ckpt)
    bf16 = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(tiny_ckpt, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    with torch.no_grad():
        a = fp32(input_ids=ids, pixel_values_videos=video).logits
        b = bf16(input_ids=ids, pixel_values_videos=video).logits.float()
    assert (a - b).abs().max().item() < 0.1


def test_auto_classes_round_trip(tiny_ckpt):
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(tiny_ckpt)
    assert type(config) is lnv.LlavaNextVideoAnyResConfig
    assert config.architectures == ["LlavaNextVideoAnyResForConditionalGeneration"]
    full = AutoModelForImageTextToText.from_pretrained(tiny_ckpt)
    base = AutoModel.from_pretrained(tiny_ckpt)
    direct = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(tiny_ckpt)
    assert type(full) is lnv.LlavaNextVideoAnyResForConditionalGeneration
    assert type(base) is lnv.LlavaNextVideoAnyResModel
    for name, tensor in direct.state_dict().items():
        assert torch.equal(tensor, full.state_dict()[name]), name
        assert torch.equal(
            tensor, base.state_dict()[name.removeprefix("model.")] if name.startswith("model.") else tensor
        )


def test_device_map_loading(tiny_ckpt):
    model = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(tiny_ckpt, device_map="cpu")
    assert model.device.type == "cpu"


def test_import_twice_is_harmless():
    import importlib

    importlib.reload(lnv)
    from transformers import AutoConfig

    assert AutoConfig.for_model("llava_next_video_anyres").__class__.__name__ == "LlavaNextVideoAnyResConfig"


# ---- the RoPE rule ----------------------------------------------------------------------------
@pytest.mark.parametrize(("frames", "factor"), [(16, 1), (32, 2), (56, 3), (64, 3), (100, 4)])
def test_rope_rule_matches_reference_formula(frames, factor):
    assert factor == (lambda f: f if f >= 2 else 1)(math.ceil((frames * 144 + 1000) / 4096))
    assert rope.rope_factor(rope.num_video_tokens(frames), 4096) == factor
    config = testing.tiny_config(max_frames=frames, rope_scaling_factor="auto")
    assert config.linear_rope_factor == factor
    # one source of truth, read as transformers and vLLM read it: trained context x factor
    assert config.text_config.max_position_embeddings == 4096
    assert config.context_length == 4096 * factor and config.trained_context_length == 4096
    if factor > 1:
        assert config.text_config.rope_parameters["rope_type"] == "linear"
        assert config.text_config.rope_parameters["factor"] == factor


def test_config_serialises_losslessly(tmp_path):
    config = testing.tiny_config(
        max_frames=40,
        rope_scaling_factor="auto",
        video_newline_position="grid",
        vision_feature_layer=[-2, -1],
    )
    config.save_pretrained(tmp_path)
    again = lnv.LlavaNextVideoAnyResConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()
    assert again.context_length == 4096 * 2 and again.text_config.max_position_embeddings == 4096
    assert "original_max_position_embeddings" not in again.to_dict()  # the context is stored once
    assert again.rope_scaling_factor == "auto"  # the intent survives, not just its value


def test_config_saved_with_a_stretched_context_loads_with_the_trained_one(tmp_path):
    """Configs written before the context was stored once kept ``max_position_embeddings`` stretched by
    the factor and the trained length in ``original_max_position_embeddings``."""
    config = testing.tiny_config(rope_scaling_factor=2)
    legacy = config.to_dict()
    legacy["text_config"]["max_position_embeddings"] = 8192
    legacy["original_max_position_embeddings"] = 4096
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    again = lnv.LlavaNextVideoAnyResConfig.from_pretrained(tmp_path)
    assert (again.trained_context_length, again.context_length, again.linear_rope_factor) == (4096, 8192, 2)
    assert "original_max_position_embeddings" not in again.to_dict()


def test_frame_budget_at_load_time_rederives_the_factor(tiny_ckpt):
    model = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(
        tiny_ckpt, max_frames=56, rope_scaling_factor="auto"
    )
    assert model.config.linear_rope_factor == 3
    assert model.config.context_length == 3 * 4096
    assert model.config.text_config.max_position_embeddings == 4096
    assert model.config.max_frames == 56
    rotary = model.model.language_model.rotary_emb
    plain = testing.make_tiny_model(0).model.language_model.rotary_emb
    assert torch.allclose(rotary.inv_freq * 3, plain.inv_freq)


def test_rotary_embedding_uses_the_factor(tokenizer):
    """Position p*f in the scaled model has the angles of position p in the unscaled one."""
    plain = testing.make_tiny_model(0, tokenizer)
    scaled = testing.make_tiny_model(0, tokenizer, rope_scaling_factor=2.0)
    x = torch.zeros(1, 1, 64)
    p = torch.tensor([[0, 1, 7, 1000, 4095]])
    cos_a, sin_a = plain.model.language_model.rotary_emb(x, p)
    cos_b, sin_b = scaled.model.language_model.rotary_emb(x, p * 2)
    assert torch.allclose(cos_a, cos_b, atol=1e-5) and torch.allclose(sin_a, sin_b, atol=1e-5)
    cos_c, _ = plain.model.language_model.rotary_emb(x, p * 2)
    assert not torch.allclose(cos_a[0, 2:], cos_c[0, 2:], atol=1e-3)  # the check can fail


def test_plain_from_pretrained_reads_a_llava_hf_folder(tmp_path, pair, tokenizer):
    """No conversion step: our class loads transformers' own checkpoint and says the config was derived."""
    ref, _ = pair
    testing.make_llava_hf_checkpoint(tmp_path, "video", seed=0)
    with pytest.warns(UserWarning, match="derived"):
        ours = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(tmp_path)
    ids = torch.tensor([_prompt(tokenizer, tokenizer.video_token_id, ours.config.num_video_tokens(2))])
    video = torch.randn(1, 2, 3, 336, 336, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values_videos=video).logits
        got = ours(input_ids=ids, pixel_values_videos=video).logits
    assert (expected - got).abs().max().item() <= ATOL


@pytest.mark.parametrize("name", ["past_key_values", "cache"])
def test_kv_cache_round_trips_under_either_name(pair, tokenizer, name):
    """One code base for transformers 5.19 (``past_key_values``) and >= 5.24 (``cache``): the cache a
    forward returns, fed back under either name, gives the logits of the uncached full prompt."""
    from llava_next_video_hf.modeling import CACHE_NAME

    _, ours = pair
    ids = torch.tensor([_prompt(tokenizer, tokenizer.video_token_id, 144)])
    video = torch.randn(1, 1, 3, 336, 336, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = ours(input_ids=ids, pixel_values_videos=video, use_cache=False).logits[:, -1]
        first = ours(input_ids=ids[:, :-1], pixel_values_videos=video, use_cache=True)
        cache = first[CACHE_NAME]
        assert cache is not None and cache.get_seq_length() == ids.shape[1] - 1
        step = ours(input_ids=ids[:, -1:], use_cache=True, **{name: cache}).logits[:, -1]
    assert torch.allclose(step, full, atol=ATOL)
    with pytest.raises(ValueError, match="not both"):
        ours(input_ids=ids[:, -1:], past_key_values=cache, cache=cache)
