"""The transformers 5 contracts transformers' own common tests check (issue 14), tested directly.

``make conformance`` runs transformers' ``ModelTesterMixin`` itself against our classes; these
tests pin each contract down cheaply in CI: feature getters' output objects, static-cache and
compiled generation, custom 4D masks, initialisation of missing weights, the video processor's
``BaseVideoProcessor`` sampling API and ``ProcessorMixin`` kwargs merging.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.video_utils import VideoMetadata

import llava_next_video_hf as lnv
from llava_next_video_hf import testing
from llava_next_video_hf.processing import LlavaNextVideoAnyResVideoProcessor


@pytest.fixture(scope="module")
def model(tokenizer):
    return testing.make_tiny_model(0, tokenizer)


@pytest.fixture(scope="module")
def processor(tokenizer):
    return testing.make_processor(testing.tiny_config(tokenizer), tokenizer)


def _video_prompt(tokenizer, n_tokens: int) -> list[int]:
    pre = tokenizer("USER: ").input_ids
    post = tokenizer("\nWhat happens? ASSISTANT:", add_special_tokens=False).input_ids
    return pre + [tokenizer.video_token_id] * n_tokens + post


# ---------------------------------------------------------------------------- feature getters


def test_get_video_features_returns_transformers_output(tokenizer):
    model = testing.make_tiny_model(0, tokenizer)
    model.set_attn_implementation("eager")  # attentions need eager attention
    g = torch.Generator().manual_seed(0)
    videos = torch.randn(2, 2, 3, 336, 336, generator=g)
    lengths = torch.tensor([2, 1])
    with torch.no_grad():
        out = model.get_video_features(videos, lengths, output_attentions=True)
        wrapped = model.model.get_video_features(videos, lengths)
        as_tuple = model.get_video_features(videos, lengths, return_dict=False)
        tower = model.model.vision_tower(videos[0, :2], output_hidden_states=True)
        ids = torch.tensor([_video_prompt(tokenizer, model.config.num_video_tokens(2))])
        scattered = model(input_ids=ids, pixel_values_videos=videos[:1]).video_hidden_states
    assert isinstance(out, BaseModelOutputWithPooling) and isinstance(as_tuple, tuple)
    # one tensor per video, each with the tokens its <video> placeholder expands to
    assert isinstance(out.pooler_output, tuple)
    assert [v.shape for v in out.pooler_output] == [
        (model.config.num_video_tokens(2), 64),
        (model.config.num_video_tokens(1), 64),
    ]
    torch.testing.assert_close(out.pooler_output[0], scattered, rtol=0, atol=0)
    for a, b in zip(out.pooler_output, wrapped.pooler_output, strict=True):
        assert torch.equal(a, b)
    # the tower's own outputs over the 3 real frames (padding dropped): 2 layers + embeddings
    assert out.last_hidden_state.shape == (3, 577, 64)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (3, 2, 577, 577)
    torch.testing.assert_close(out.last_hidden_state[:2], tower.last_hidden_state, rtol=1e-5, atol=1e-5)


def test_get_image_features_returns_transformers_output(model):
    from llava_next_video_hf.layout import num_image_crops

    sizes = [(300, 500), (336, 336)]
    counts = [num_image_crops(h, w, model.config) for h, w in sizes]
    g = torch.Generator().manual_seed(1)
    pixels = torch.zeros(2, max(counts), 3, 336, 336)
    for i, n in enumerate(counts):
        pixels[i, :n] = torch.randn(n, 3, 336, 336, generator=g)
    with torch.no_grad():
        out = model.get_image_features(pixels, torch.tensor(sizes))
        as_tuple = model.model.get_image_features(pixels, torch.tensor(sizes), return_dict=False)
    assert isinstance(out, BaseModelOutputWithPooling) and isinstance(as_tuple, tuple)
    assert [f.shape[0] for f in out.pooler_output] == [model.config.num_image_tokens(h, w) for h, w in sizes]
    assert out.last_hidden_state.shape[0] == sum(counts)  # every real crop, zero padding dropped
    assert out.attentions is None and len(out.hidden_states) == 3


def test_feature_getters_refuse_a_layout_the_config_does_not_have(model):
    videos = torch.zeros(1, 1, 3, 336, 336)
    with pytest.raises(ValueError, match="vision_feature_layer=-1 differs from the config's -2"):
        model.get_video_features(videos, vision_feature_layer=-1)
    with pytest.raises(ValueError, match="vision_feature_select_strategy='full'"):
        model.get_image_features(videos[0], torch.tensor([[336, 336]]), vision_feature_select_strategy="full")
    # the config's own values are accepted
    model.get_video_features(videos, vision_feature_layer=-2, vision_feature_select_strategy="default")


def test_forward_takes_pre_encoded_media(model, tokenizer):
    """``mm_encoder_outputs`` (what generate() passes after encoding media once) equals pixels."""
    video = torch.randn(1, 2, 3, 336, 336, generator=torch.Generator().manual_seed(6))
    ids = torch.tensor([_video_prompt(tokenizer, model.config.num_video_tokens(2))])
    with torch.no_grad():
        from_pixels = model(input_ids=ids, pixel_values_videos=video).logits
        encoded = {"video": model.get_video_features(video)}
        from_features = model(input_ids=ids, mm_encoder_outputs=encoded).logits
        with pytest.raises(ValueError, match="either pixels or mm_encoder_outputs"):
            model(input_ids=ids, pixel_values_videos=video, mm_encoder_outputs=encoded)
        beams = model.generate(
            input_ids=ids, pixel_values_videos=video, num_beams=2, num_return_sequences=2, max_new_tokens=3
        )
    assert torch.equal(from_pixels, from_features)
    # a batch without videos (an empty tensor, as collators send) encodes to nothing
    empty = model.get_video_features(torch.zeros(0, 2, 3, 336, 336))
    assert empty.pooler_output == () and empty.last_hidden_state is None
    assert beams.shape == (2, ids.shape[1] + 3) and torch.equal(beams[:, : ids.shape[1]], ids.expand(2, -1))


# ------------------------------------------------------------------- static cache / compile


def test_static_cache_generation_equals_dynamic_cache(model, tokenizer):
    assert model._can_compile_fullgraph
    video = torch.randn(1, 2, 3, 336, 336, generator=torch.Generator().manual_seed(4))
    ids = torch.tensor([_video_prompt(tokenizer, model.config.num_video_tokens(2))])
    kw = dict(input_ids=ids, pixel_values_videos=video, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    dynamic = model.generate(**kw)
    static = model.generate(**kw, cache_implementation="static")
    assert static.shape == (1, ids.shape[1] + 8)
    assert torch.equal(dynamic, static)


def test_decoding_step_compiles_fullgraph_without_recompiling(model, tokenizer):
    """The step generate() compiles (text only, static cache) traces as one graph, gives the eager
    logits, and a later position (same shapes) reuses the graph."""
    import torch._dynamo
    from transformers import StaticCache

    torch._dynamo.reset()
    ids = torch.tensor([tokenizer("USER: What happens? ASSISTANT:").input_ids])
    cache = StaticCache(config=model.config.text_config, max_cache_len=64)
    with torch.no_grad():
        prefill = model(input_ids=ids, past_key_values=cache, use_cache=True)
    step = torch.compile(model.forward, fullgraph=True, backend="eager", dynamic=False)
    token = prefill.logits[:, -1:].argmax(-1)
    n = ids.shape[1]
    eager_cache = StaticCache(config=model.config.text_config, max_cache_len=64)
    with torch.no_grad():
        model(input_ids=ids, past_key_values=eager_cache, use_cache=True)
        for pos in (n, n + 1):
            position = torch.tensor([pos])
            kw = dict(input_ids=token, cache_position=position, position_ids=position[None], use_cache=True)
            expected = model(**kw, past_key_values=eager_cache).logits
            with torch._dynamo.config.patch(error_on_recompile=pos > n):
                got = step(**kw, past_key_values=cache).logits
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
            token = expected.argmax(-1)
    torch._dynamo.reset()


def test_video_prefill_compiles_fullgraph(model, tokenizer):
    """The whole multimodal forward (tower, pooling, scatter, LLM) traces as one graph."""
    import torch._dynamo

    torch._dynamo.reset()
    video = torch.randn(1, 2, 3, 336, 336, generator=torch.Generator().manual_seed(5))
    ids = torch.tensor([_video_prompt(tokenizer, model.config.num_video_tokens(2))])
    compiled = torch.compile(model.forward, fullgraph=True, backend="eager")
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values_videos=video).logits
        got = compiled(input_ids=ids, pixel_values_videos=video).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def test_custom_4d_attention_mask_packs_sequences(model, tokenizer):
    """Two prompts packed in one row with a block-causal 4D mask give each prompt's own logits."""
    a = tokenizer("USER: What happens? ASSISTANT:").input_ids
    b = tokenizer("USER: Which colour is it?").input_ids
    packed = torch.tensor([a + b])
    n = len(a) + len(b)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[: len(a), : len(a)] = torch.tril(torch.ones(len(a), len(a), dtype=torch.bool))
    allowed[len(a) :, len(a) :] = torch.tril(torch.ones(len(b), len(b), dtype=torch.bool))
    mask = torch.zeros(1, 1, n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)
    position_ids = torch.tensor([list(range(len(a))) + list(range(len(b)))])
    with torch.no_grad():
        got = model(input_ids=packed, attention_mask=mask, position_ids=position_ids).logits[0]
        alone_a = model(input_ids=torch.tensor([a])).logits[0]
        alone_b = model(input_ids=torch.tensor([b])).logits[0]
    torch.testing.assert_close(got, torch.cat([alone_a, alone_b]), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- weights


def _clip_in_proj_std(vision) -> float:
    """CLIP's documented init for q/k/v and fc2 (``CLIPPreTrainedModel._init_weights``)."""
    return vision.hidden_size**-0.5 * (2 * vision.num_hidden_layers) ** -0.5 * vision.initializer_factor


def test_missing_weights_are_initialised_like_a_model_built_from_config(tmp_path, tokenizer):
    config = testing.tiny_config(tokenizer)
    torch.manual_seed(0)
    built = lnv.LlavaNextVideoAnyResForConditionalGeneration(config)
    built.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    kept = {k: v for k, v in weights.items() if ".vision_tower." not in k}
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(tmp_path)

    params_built, params_loaded = dict(built.named_parameters()), dict(loaded.named_parameters())
    vision = config.vision_config
    in_proj = _clip_in_proj_std(vision)
    expected = {  # CLIP's own scales, far from the generic initializer_range 0.02
        "self_attn.q_proj.weight": in_proj,
        "self_attn.v_proj.weight": in_proj,
        "self_attn.out_proj.weight": vision.hidden_size**-0.5 * vision.initializer_factor,
        "mlp.fc1.weight": (2 * vision.hidden_size) ** -0.5 * vision.initializer_factor,
        "mlp.fc2.weight": in_proj,
    }
    for suffix, std in expected.items():
        for layer in range(vision.num_hidden_layers):
            name = f"model.vision_tower.encoder.layers.{layer}.{suffix}"
            assert params_built[name].std().item() == pytest.approx(std, rel=0.05), name
            assert params_loaded[name].std().item() == pytest.approx(std, rel=0.05), name
            assert not torch.equal(params_built[name], params_loaded[name])  # freshly drawn
    # loaded weights are untouched
    for name, value in kept.items():
        assert torch.equal(params_loaded[name] if name in params_loaded else loaded.state_dict()[name], value)


def test_saved_image_newline_survives_reload(tmp_path, tokenizer):
    model = testing.make_tiny_model(0, tokenizer)
    marker = torch.arange(64, dtype=torch.float32) / 7.0
    with torch.no_grad():
        model.model.image_newline.copy_(marker)
    model.save_pretrained(tmp_path)
    loaded = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(tmp_path)
    assert torch.equal(loaded.model.image_newline.detach(), marker)

    # missing from the checkpoint: drawn with the documented std 1/sqrt(hidden)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.image_newline"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    redrawn = lnv.LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(tmp_path).model.image_newline
    assert not torch.equal(redrawn.detach(), marker)
    assert redrawn.std().item() == pytest.approx(1 / math.sqrt(64), rel=0.35)


# ------------------------------------------------------------------------- video processor


def _ramp(t: int) -> np.ndarray:
    """Frame i is filled with the value i, so the frames kept can be read back from the pixels."""
    return np.stack([np.full((24, 32, 3), i, dtype=np.uint8) for i in range(t)])


def _kept(vp: LlavaNextVideoAnyResVideoProcessor, out) -> list[int]:
    pixels = out["pixel_values_videos"][0, : int(out["video_num_frames"][0]), 0, 0, 0]
    values = pixels * vp.image_std[0] + vp.image_mean[0]
    return [round(v) for v in (values * 255).tolist()]


def test_do_sample_frames_false_never_samples():
    vp = LlavaNextVideoAnyResVideoProcessor(num_frames=4)
    frames = _ramp(10)
    assert _kept(vp, vp(frames, num_frames=4)) == [0, 3, 6, 9]  # call asks for 4: linspace
    assert _kept(vp, vp(frames, num_frames=4, do_sample_frames=False)) == list(range(10))
    assert _kept(vp, vp(frames, fps=1.0, source_fps=10, do_sample_frames=False)) == list(range(10))
    assert _kept(vp, vp(frames, do_sample_frames=True)) == [0, 3, 6, 9]  # default num_frames
    saved_off = LlavaNextVideoAnyResVideoProcessor(num_frames=4, do_sample_frames=False)
    assert _kept(saved_off, saved_off(frames)) == list(range(10))


def test_sample_frames_takes_metadata():
    vp = LlavaNextVideoAnyResVideoProcessor(num_frames=4)
    meta = VideoMetadata(total_num_frames=10, fps=10.0)
    assert vp.sample_frames(meta).tolist() == [0, 3, 6, 9]
    assert vp.sample_frames(meta, num_frames=2).tolist() == [0, 9]
    assert vp.sample_frames({"total_num_frames": 20, "fps": 10.0}, fps=2.0).tolist() == [0, 5, 10, 15]
    assert vp.sample_frames(meta).dtype == np.int64
    with pytest.raises(ValueError, match="mutually exclusive"):
        vp.sample_frames(meta, num_frames=2, fps=1.0)
    with pytest.raises(ValueError, match="source frame rate"):
        vp.sample_frames({"total_num_frames": 20}, fps=2.0)


def test_video_metadata_gives_the_rate_and_is_returned():
    vp = LlavaNextVideoAnyResVideoProcessor()
    out = vp(_ramp(20), fps=2.0, video_metadata=[{"total_num_frames": 20, "fps": 10.0}], return_metadata=True)
    assert _kept(vp, out) == [0, 5, 10, 15]
    (meta,) = out["video_metadata"]
    assert isinstance(meta, VideoMetadata) and meta.frames_indices == [0, 5, 10, 15] and meta.fps == 10.0
    with pytest.raises(ValueError, match="video_metadata has 2 entries for 1 video"):
        vp(_ramp(4), video_metadata=[{"fps": 1.0}, {"fps": 1.0}])


def test_more_frames_than_the_video_has_keeps_the_short_clip():
    """Documented rule (transformers raises instead): every frame once, no repeats, no padding."""
    vp = LlavaNextVideoAnyResVideoProcessor()
    out = vp(_ramp(5), num_frames=16, return_metadata=True)
    assert out["video_num_frames"].tolist() == [5] and _kept(vp, out) == [0, 1, 2, 3, 4]
    assert out["video_metadata"][0].frames_indices == [0, 1, 2, 3, 4]
    assert vp.sample_frames({"total_num_frames": 5}, num_frames=16).tolist() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------ kwargs merging


def test_nested_text_kwargs_reach_the_tokenizer(processor):
    prompt = "USER: <video>\nWhat happens? ASSISTANT:"
    video = np.zeros((2, 48, 64, 3), dtype=np.uint8)
    longest = processor(text=prompt, videos=video)["input_ids"].shape[1]
    out = processor(
        text=prompt, videos=video, text_kwargs={"padding": "max_length", "max_length": longest + 5}
    )
    assert out["input_ids"].shape == (1, longest + 5)
    assert out["attention_mask"][0].sum().item() == longest
    frames = processor(text=prompt, videos=video, videos_kwargs={"num_frames": 1, "do_sample_frames": True})
    assert frames["video_num_frames"].tolist() == [1]


def test_flat_and_nested_duplicate_is_rejected(processor):
    with pytest.raises(ValueError, match="padding was passed two times"):
        processor(text="USER: hi", padding="longest", text_kwargs={"padding": "max_length"})
    with pytest.raises(ValueError, match="num_frames was passed two times"):
        processor(text="USER: <video>", videos=_ramp(4), num_frames=2, videos_kwargs={"num_frames": 3})


def test_tokenizers_own_padding_side_is_the_default(tokenizer):
    prompts = ["USER: hi", "USER: What happens in this video? ASSISTANT:"]
    for side in ("left", "right"):
        tok = testing.make_tokenizer()
        tok.padding_side = side
        proc = testing.make_processor(testing.tiny_config(tok), tok)
        mask = proc(text=prompts)["attention_mask"][0]
        assert (mask[0].item() == 0) == (side == "left") and (mask[-1].item() == 0) == (side == "right")
    other = "right" if tokenizer.padding_side == "left" else "left"
    proc = testing.make_processor(testing.tiny_config(tokenizer), tokenizer)
    mask = proc(text=prompts, padding_side=other)["attention_mask"][0]  # the call still wins
    assert (mask[0].item() == 0) == (other == "left")


def test_plain_dict_crop_size_counts_tokens(tokenizer):
    proc = testing.make_processor(testing.tiny_config(tokenizer), tokenizer)
    expected = (proc.num_image_tokens(300, 500), proc.num_video_tokens(3))
    proc.image_processor.crop_size = {"height": 336, "width": 336}
    proc.video_processor.crop_size = {"height": 336, "width": 336}
    assert (proc.num_image_tokens(300, 500), proc.num_video_tokens(3)) == expected
