"""Patches for stock transformers models: zero-shot video (`enable_video`) and linear RoPE (`scale_rope`).

"Our own model converted from the same checkpoint" is built here by loading the stock model's state
dict into ``LlavaNextVideoAnyResForConditionalGeneration(testing.tiny_config(...))``: the llava-hf key
names are ours, so this is exactly what conversion of a llava-hf checkpoint produces. Its config is
written independently of the patch (from ``testing.tiny_config``), so agreement is not circular.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

import llava_next_video_hf as lnv
from llava_next_video_hf import testing
from llava_next_video_hf.configuration import apply_linear_rope, context_length_of
from llava_next_video_hf.errors import PlaceholderMismatchError, UnsupportedModelError
from llava_next_video_hf.modeling_patches import (
    enable_video,
    equivalent_config,
    get_patch_state,
    make_video_processor,
    patched,
    scale_rope,
    undo,
)

ATOL = 1e-4


# ---- helpers ------------------------------------------------------------------------------------
def _ours_like(stock, tokenizer, **overrides):
    """Our model with the stock model's weights and a config written independently of the patch."""
    ours = lnv.LlavaNextVideoAnyResForConditionalGeneration(
        testing.tiny_config(tokenizer, **overrides)
    ).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    return ours


def _prompt(tokenizer, parts: list[tuple[int, int]], question: str = "What happens?") -> list[int]:
    ids = tokenizer("USER: ").input_ids
    for token_id, n in parts:
        ids += [token_id] * n + tokenizer("\n", add_special_tokens=False).input_ids
    return ids + tokenizer(f"{question} ASSISTANT:", add_special_tokens=False).input_ids


def _video(frames: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tiny_lm(cls_config, cls_model, seed: int = 0, **overrides):
    cfg = dict(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=1,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=32,
    )  # fmt: skip
    cfg.update(overrides)
    torch.manual_seed(seed)
    return cls_model(cls_config(**cfg)).eval()


# ---- enable_video: parity with our model --------------------------------------------------------
OPTION_CASES = [
    ({}, {}),
    (
        {"spatial_pool_mode": "max", "newline_position": "grid"},
        {"spatial_pool_mode": "max", "video_newline_position": "grid"},
    ),
    (
        {"spatial_pool_stride": 3, "spatial_pool_mode": "bilinear", "newline_position": "one_token",
         "spatial_pool_position": "after_projector"},
        {"spatial_pool_stride": 3, "spatial_pool_mode": "bilinear", "video_newline_position": "one_token",
         "spatial_pool_position": "after_projector"},
    ),
    ({"spatial_pool_stride": 4, "newline_position": "frame"}, {"spatial_pool_stride": 4, "video_newline_position": "frame"}),
]  # fmt: skip


@pytest.mark.parametrize(
    "options,config_overrides", OPTION_CASES, ids=["default", "max-grid", "bilinear-after", "frame"]
)
def test_patched_image_model_matches_our_model_on_video(tokenizer, options, config_overrides):
    stock = testing.make_llava_hf_image_model(0, tokenizer)
    ours = _ours_like(stock, tokenizer, **config_overrides)
    before = _snapshot(stock)
    enable_video(stock, tokenizer=tokenizer, **options)
    assert _same_weights(before, _snapshot(stock))  # the <video> token exists: no resize, no weight change

    frames = 2
    n = ours.config.num_video_tokens(frames)
    assert equivalent_config(stock).num_video_tokens(frames) == n
    ids = torch.tensor([_prompt(tokenizer, [(tokenizer.video_token_id, n)])])
    video = _video(frames)
    with torch.no_grad():
        expected = ours(input_ids=ids, pixel_values_videos=video).logits
        got = stock(input_ids=ids, pixel_values_videos=video).logits
    assert (expected - got).abs().max().item() <= ATOL


def test_default_token_layout_and_frame_count_fit_the_context(tokenizer):
    stock = enable_video(testing.make_llava_hf_image_model(0, tokenizer), tokenizer=tokenizer)
    config = equivalent_config(stock)
    assert config.num_video_tokens(3) == 3 * 12 * 12  # 336/14 = 24, pooled 2x2 -> 12x12
    assert config.context_length == 4096 and config.num_frames == (4096 - 1000) // 144  # 21 frames + text
    enable_video(stock, tokenizer=tokenizer, max_frames=32)  # factor 2: 32 frames fit
    assert equivalent_config(stock).context_length == 8192 and equivalent_config(stock).num_frames == 32


def test_generate_with_image_and_video_matches_our_model(tokenizer):
    from PIL import Image
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    stock = testing.make_llava_hf_image_model(0, tokenizer)
    ours = _ours_like(stock, tokenizer)
    enable_video(stock, tokenizer=tokenizer)
    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (300, 500, 3), dtype=np.uint8))
    img = LlavaNextImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})(
        image, return_tensors="pt"
    )
    parts = [(tokenizer.image_token_id, ours.config.num_image_tokens(300, 500)),
             (tokenizer.video_token_id, ours.config.num_video_tokens(2))]  # fmt: skip
    ids = torch.tensor([_prompt(tokenizer, parts)])
    inputs = dict(
        input_ids=ids,
        pixel_values=img.pixel_values,
        image_sizes=img.image_sizes,
        pixel_values_videos=_video(2),
    )
    with torch.no_grad():
        assert (stock(**inputs).logits - ours(**inputs).logits).abs().max().item() <= ATOL
    kw = dict(max_new_tokens=8, do_sample=False)
    assert torch.equal(stock.generate(**inputs, **kw), ours.generate(**inputs, **kw))


def test_batch_of_videos_of_different_lengths_and_inputs_embeds(tokenizer):
    stock = testing.make_llava_hf_image_model(0, tokenizer)
    ours = _ours_like(stock, tokenizer)
    enable_video(stock, tokenizer=tokenizer)
    rows = [_prompt(tokenizer, [(tokenizer.video_token_id, ours.config.num_video_tokens(t))]) for t in (2, 1)]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    videos = _video(2, batch=2)
    videos[1, 1:] = 0  # padding frame
    lengths = torch.tensor([2, 1])
    with torch.no_grad():
        expected = ours(
            input_ids=ids, attention_mask=mask, pixel_values_videos=videos, video_num_frames=lengths
        ).logits
        got = stock(
            input_ids=ids, attention_mask=mask, pixel_values_videos=videos, video_num_frames=lengths
        ).logits
        embeds = stock.get_input_embeddings()(ids)
        from_embeds = stock(
            inputs_embeds=embeds, attention_mask=mask, pixel_values_videos=videos, video_num_frames=lengths
        ).logits
        positional = stock(
            ids, pixel_values_videos=videos, video_num_frames=lengths, attention_mask=mask
        ).logits
    assert (expected - got).abs().max().item() <= ATOL
    assert (got - from_embeds).abs().max().item() <= 1e-5
    assert (got - positional).abs().max().item() <= 1e-5


def test_placeholder_mismatch_is_a_clear_error(tokenizer):
    stock = enable_video(testing.make_llava_hf_image_model(0, tokenizer), tokenizer=tokenizer)
    ids = torch.tensor([_prompt(tokenizer, [(tokenizer.video_token_id, 100)])])
    with pytest.raises(PlaceholderMismatchError, match="100 <video> tokens"), torch.no_grad():
        stock(input_ids=ids, pixel_values_videos=_video(1))


def test_video_model_with_its_own_settings_equals_its_stock_video_path(tokenizer):
    stock = testing.make_llava_hf_video_model(0, tokenizer)
    ids = torch.tensor([_prompt(tokenizer, [(tokenizer.video_token_id, 2 * 144)])])
    video = _video(2)
    kw = dict(max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        expected = stock(input_ids=ids, pixel_values_videos=video).logits
    expected_tokens = stock.generate(input_ids=ids, pixel_values_videos=video, **kw)
    enable_video(stock)  # LLaVA-NeXT-Video already has a video token: no tokenizer needed
    with torch.no_grad():
        got = stock(input_ids=ids, pixel_values_videos=video).logits
    assert (expected - got).abs().max().item() <= 1e-5
    assert torch.equal(expected_tokens, stock.generate(input_ids=ids, pixel_values_videos=video, **kw))


def test_video_model_follows_other_options_like_our_model(tokenizer):
    stock = testing.make_llava_hf_video_model(0, tokenizer)
    ours = _ours_like(stock, tokenizer, spatial_pool_mode="max", video_newline_position="frame")
    enable_video(stock, spatial_pool_mode="max", newline_position="frame")
    ids = torch.tensor([_prompt(tokenizer, [(tokenizer.video_token_id, ours.config.num_video_tokens(2))])])
    video = _video(2)
    with torch.no_grad():
        got = stock(input_ids=ids, pixel_values_videos=video).logits
        assert (ours(input_ids=ids, pixel_values_videos=video).logits - got).abs().max().item() <= ATOL
    kw = dict(max_new_tokens=6, do_sample=False)
    assert torch.equal(
        stock.generate(input_ids=ids, pixel_values_videos=video, **kw),
        ours.generate(input_ids=ids, pixel_values_videos=video, **kw),
    )


def test_max_frames_scales_rope_like_our_auto_config_and_generates_past_the_context(tokenizer):
    small = {"text_config": {"max_position_embeddings": 256}}
    stock = testing.make_llava_hf_image_model(0, tokenizer, **small)
    ours = _ours_like(stock, tokenizer, **small, max_frames=2, rope_scaling_factor="auto")
    enable_video(stock, tokenizer=tokenizer, max_frames=2)
    factor = math.ceil((2 * 144 + 1000) / 256)  # the reference recipe, written out
    text = stock.config.text_config
    assert text.rope_parameters["rope_type"] == "linear" and text.rope_parameters["factor"] == factor
    assert context_length_of(text) == 256 * factor == ours.config.context_length
    assert text.max_position_embeddings == 256  # the trained context, stored once
    rotary = stock.model.language_model.rotary_emb
    assert torch.allclose(rotary.inv_freq, ours.model.language_model.rotary_emb.inv_freq, rtol=0, atol=0)

    ids = torch.tensor([_prompt(tokenizer, [(tokenizer.video_token_id, 2 * 144)])])
    assert ids.shape[1] > 256  # longer than the original context
    video = _video(2)
    with torch.no_grad():
        assert (stock(input_ids=ids, pixel_values_videos=video).logits
                - ours(input_ids=ids, pixel_values_videos=video).logits).abs().max().item() <= ATOL  # fmt: skip
    kw = dict(max_new_tokens=4, do_sample=False)
    out = stock.generate(input_ids=ids, pixel_values_videos=video, **kw)
    assert torch.equal(out, ours.generate(input_ids=ids, pixel_values_videos=video, **kw))


def test_processor_pairing_expands_video_tokens_for_the_patched_model(tokenizer):
    stock = enable_video(testing.make_llava_hf_image_model(0, tokenizer), tokenizer=tokenizer, max_frames=4)
    ours = _ours_like(stock, tokenizer, max_frames=4, rope_scaling_factor="auto")
    processor = make_video_processor(stock, tokenizer)
    clip = np.random.RandomState(0).randint(0, 256, (3, 96, 128, 3), dtype=np.uint8)
    inputs = processor(
        text="USER: <video>\nWhat happens? ASSISTANT:", videos=[clip], num_frames=3, return_tensors="pt"
    )
    assert int((inputs["input_ids"] == tokenizer.video_token_id).sum()) == 3 * 144
    with torch.no_grad():
        assert (stock(**inputs).logits - ours(**inputs).logits).abs().max().item() <= ATOL


# ---- enable_video: tokens, idempotence, undo, refusal --------------------------------------------
def test_missing_video_token_is_added_and_embeddings_resized_reported_and_undone():
    tok = testing.make_plain_tokenizer(extra_tokens=("<image>",))  # a LLaVA-NeXT image tokenizer
    stock = testing.make_llava_hf_image_model(0, tok)
    rows = stock.get_input_embeddings().num_embeddings
    assert rows == len(tok) and tok.convert_tokens_to_ids("<video>") == tok.unk_token_id
    before, config_before = _snapshot(stock), stock.config.to_dict()
    with pytest.warns(UserWarning, match=f"resized input and output embeddings to {rows + 1}"):
        enable_video(stock, tokenizer=tok)
    video_id = tok.convert_tokens_to_ids("<video>")
    assert video_id == rows and stock.config.video_token_id == rows and len(tok) == rows + 1
    assert get_patch_state(stock).video.resized_embeddings == (rows, rows + 1)
    emb, head = stock.get_input_embeddings().weight, stock.get_output_embeddings().weight
    assert torch.equal(emb[:rows], before["model.language_model.embed_tokens.weight"])
    assert torch.equal(head[:rows], before["lm_head.weight"])
    assert torch.allclose(emb[rows], emb[:rows].mean(0)) and torch.allclose(head[rows], head[:rows].mean(0))

    ids = torch.tensor([_prompt(tok, [(video_id, 144)])])
    with torch.no_grad():
        assert torch.isfinite(stock(input_ids=ids, pixel_values_videos=_video(1)).logits).all()
    undo(stock)
    assert _same_weights(before, _snapshot(stock))
    assert stock.config.to_dict() == config_before and "vocab_size" not in stock.__dict__


def test_image_model_without_tokenizer_or_id_is_told_what_to_pass(tokenizer):
    stock = testing.make_llava_hf_image_model(0, tokenizer)
    with pytest.raises(ValueError, match="pass tokenizer="):
        enable_video(stock)
    assert get_patch_state(stock) is None


def test_patching_twice_changes_nothing(tokenizer):
    stock = testing.make_llava_hf_image_model(0, tokenizer)
    ids = torch.tensor([_prompt(tokenizer, [(tokenizer.video_token_id, 144)])])
    video = _video(1)
    enable_video(stock, tokenizer=tokenizer, max_frames=40)
    scale_rope(stock, max_frames=40)
    weights, config, forward = _snapshot(stock), stock.config.to_dict(), stock.forward.__func__
    saved = len(get_patch_state(stock).video.saved_attrs)
    with torch.no_grad():
        once = stock(input_ids=ids, pixel_values_videos=video).logits
        enable_video(stock, tokenizer=tokenizer, max_frames=40)
        scale_rope(stock, max_frames=40)
        twice = stock(input_ids=ids, pixel_values_videos=video).logits
    assert _same_weights(weights, _snapshot(stock)) and stock.config.to_dict() == config
    assert stock.forward.__func__ is forward and len(get_patch_state(stock).video.saved_attrs) == saved
    assert torch.equal(once, twice)


def test_undo_and_context_manager_restore_the_original_model(tokenizer):
    stock = testing.make_llava_hf_image_model(0, tokenizer, text_config={"max_position_embeddings": 256})
    ids = torch.tensor([tokenizer("USER: What happens? ASSISTANT:").input_ids])
    weights, config = _snapshot(stock), stock.config.to_dict()
    rotary = stock.model.language_model.rotary_emb
    inv_freq = rotary.inv_freq.clone()
    with torch.no_grad():
        plain = stock(input_ids=ids).logits
        with patched(stock, tokenizer=tokenizer, max_frames=8, newline_position="grid") as m:
            assert m is stock and "forward" in stock.__dict__
            assert context_length_of(stock.config.text_config) > 256
            assert not torch.equal(rotary.inv_freq, inv_freq)
            with pytest.raises(ValueError, match="already patched"), patched(stock):
                pass
        after = stock(input_ids=ids).logits
    assert get_patch_state(stock) is None and "forward" not in stock.__dict__
    assert "get_video_features" not in stock.model.__dict__ and "input_modalities" not in stock.__dict__
    assert stock.config.to_dict() == config and torch.equal(rotary.inv_freq, inv_freq)
    assert _same_weights(weights, _snapshot(stock)) and torch.equal(plain, after)
    assert undo(stock) is stock  # undoing an unpatched model is a no-op


def test_unsupported_classes_are_refused_by_name(tokenizer):
    llama = _tiny_lm(LlamaConfig, LlamaForCausalLM)
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM.*LlavaNextForConditionalGeneration"):
        enable_video(llama, tokenizer=tokenizer)
    with pytest.raises(UnsupportedModelError, match="takes videos natively"):
        enable_video(testing.make_tiny_model(0, tokenizer))
    conv = testing.make_llava_hf_video_model(0, tokenizer, spatial_pool_mode="conv")
    with pytest.raises(UnsupportedModelError, match="conv"):
        enable_video(conv)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=1, vocab_size=64, n_positions=32)).eval()
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel.*'gpt2'.*llama"):
        scale_rope(gpt2, 2)
    with pytest.raises(UnsupportedModelError, match="PreTrainedModel, got Linear"):
        scale_rope(nn.Linear(2, 2), 2)
    llama3 = _tiny_lm(
        LlamaConfig, LlamaForCausalLM,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="'llama3'"):
        scale_rope(llama3, 2)
    for model in (llama, gpt2, llama3):
        assert get_patch_state(model) is None


# ---- scale_rope --------------------------------------------------------------------------------
def test_scaled_attention_at_p_q_equals_unscaled_at_half_positions():
    """Linear factor 2: position p rotates like p/2 did. With even positions the check is exact in fp32
    (inv_freq/2 * p == inv_freq * (p/2): halving and doubling are exact)."""
    model = _tiny_lm(LlamaConfig, LlamaForCausalLM, max_position_embeddings=64, attn_implementation="eager")
    rotary = model.model.rotary_emb
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32, generator=g), torch.randn(1, 1, 1, 32, generator=g)

    def score(p: int, r: int) -> torch.Tensor:  # q at position p attends to k at position r
        cos, sin = rotary(q, torch.tensor([[p, r]]))
        q_rot, k_rot = apply_rotary_pos_emb(q.expand(1, 1, 2, 32), k.expand(1, 1, 2, 32), cos, sin)
        return (q_rot[0, 0, 0] * k_rot[0, 0, 1]).sum()

    pairs = [(0, 0), (10, 4), (40, 2), (62, 30), (100, 0)]
    embeds = torch.randn(1, 24, 32, generator=g)
    mask = torch.ones(1, 24, dtype=torch.long)  # explicit: position gaps must not be read as packed sequences
    half, full = torch.arange(24)[None], 2 * torch.arange(24)[None]

    def attentions(pos: torch.Tensor) -> torch.Tensor:
        out = model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, output_attentions=True)
        return out.attentions[0]  # (1, heads, L, L)

    with torch.no_grad():
        unscaled = {(p, r): score(p // 2, r // 2) for p, r in pairs}
        unscaled_same = {(p, r): score(p, r) for p, r in pairs}
        attn_half, attn_full_before = attentions(half), attentions(full)
        scale_rope(model, 2)
        for p, r in pairs:
            assert (score(p, r) - unscaled[(p, r)]).abs().item() <= 1e-5
        assert any((score(p, r) - unscaled_same[(p, r)]).abs().item() > 1e-3 for p, r in pairs)  # not vacuous
        attn_full = attentions(full)
    assert (attn_full - attn_half).abs().max().item() <= 1e-6
    assert (attn_full_before - attn_half).abs().max().item() > 1e-3


@pytest.mark.parametrize(
    "cls_config,cls_model",
    [(LlamaConfig, LlamaForCausalLM), (MistralConfig, MistralForCausalLM), (Qwen2Config, Qwen2ForCausalLM)],
    ids=["llama", "mistral", "qwen2"],
)
def test_scale_rope_equals_a_model_built_scaled_and_reverses_exactly(cls_config, cls_model):
    model = _tiny_lm(cls_config, cls_model)
    weights, config = _snapshot(model), model.config.to_dict()
    rotary = model.model.rotary_emb
    inv_freq = rotary.inv_freq.clone()
    scaled_config = copy.deepcopy(model.config)
    scaled_config.rope_parameters = {**scaled_config.rope_parameters, "rope_type": "linear", "factor": 2.0}
    reference = cls_model(scaled_config).eval()  # transformers builds its rotary from a linear config
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, 64, (1, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(ids).logits
        scale_rope(model, 2)
        scale_rope(model, 2)  # absolute: stays 2, not 4
        assert model.config.rope_parameters["factor"] == 2.0 and model.config.max_position_embeddings == 32
        assert context_length_of(model.config) == 64
        assert torch.equal(rotary.inv_freq, reference.model.rotary_emb.inv_freq)
        assert (model(ids).logits - reference(ids).logits).abs().max().item() <= 1e-5
    assert _same_weights(weights, _snapshot(model))
    out = model.generate(ids, max_new_tokens=24, do_sample=False)  # 72 positions > the original 32
    assert out.shape[1] == 72
    scale_rope(model, 1)
    assert model.config.to_dict() == config and torch.equal(rotary.inv_freq, inv_freq)
    assert get_patch_state(model) is None
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain)


def test_scale_rope_on_our_model_keeps_its_config_consistent(tokenizer):
    ours = testing.make_tiny_model(0, tokenizer, text_config={"max_position_embeddings": 512})
    built_scaled = lnv.LlavaNextVideoAnyResForConditionalGeneration(
        testing.tiny_config(tokenizer, text_config={"max_position_embeddings": 512}, rope_scaling_factor=3)
    ).eval()
    built_scaled.load_state_dict(ours.state_dict())
    scale_rope(ours, 3)
    assert ours.config.rope_scaling_factor == 3 and ours.config.context_length == 1536
    assert ours.config.linear_rope_factor == 3 and ours.config.trained_context_length == 512
    reloaded = type(ours.config).from_dict(ours.config.to_dict())  # what save_pretrained would write
    assert reloaded.context_length == 1536 and reloaded.linear_rope_factor == 3
    ids = torch.randint(10, 100, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(input_ids=ids).logits - built_scaled(input_ids=ids).logits).abs().max().item() <= 1e-5
    undo(ours)
    assert ours.config.rope_scaling_factor is None and ours.config.context_length == 512


def test_scale_rope_max_frames_needs_a_video_model():
    with pytest.raises(ValueError, match="max_frames needs a video-capable"):
        scale_rope(_tiny_lm(LlamaConfig, LlamaForCausalLM), max_frames=8)
    with pytest.raises(ValueError, match="exactly one"):
        scale_rope(_tiny_lm(LlamaConfig, LlamaForCausalLM))


def test_already_linear_model_keeps_its_original_context(tokenizer):
    model = _tiny_lm(LlamaConfig, LlamaForCausalLM)
    apply_linear_rope(model.config, 2.0)  # a checkpoint saved at factor 2: trained 32, context 64
    model = LlamaForCausalLM(model.config).eval()
    scale_rope(model, 4)
    assert context_length_of(model.config) == 128 and model.config.rope_parameters["factor"] == 4.0
    assert model.config.max_position_embeddings == 32
    scale_rope(model, 2)  # its own factor: back to the saved state
    assert get_patch_state(model) is None and context_length_of(model.config) == 64


def test_deepcopy_of_a_patched_model_runs_on_its_own_modules(tokenizer):
    """TRL-style reference models are deep copies: the copy must be patched on its own modules."""
    stock = enable_video(testing.make_llava_hf_image_model(0, tokenizer), tokenizer=tokenizer, max_frames=40)
    twin = copy.deepcopy(stock)
    ids = torch.tensor([_prompt(tokenizer, [(tokenizer.video_token_id, 144)])])
    video = _video(1)
    with torch.no_grad():
        expected = stock(input_ids=ids, pixel_values_videos=video).logits
        assert torch.equal(twin(input_ids=ids, pixel_values_videos=video).logits, expected)
        twin.model.multi_modal_projector.linear_2.bias.add_(1.0)  # only the copy changes
        assert torch.equal(stock(input_ids=ids, pixel_values_videos=video).logits, expected)
    undo(twin)
    assert get_patch_state(stock) is not None and context_length_of(stock.config.text_config) == 8192
