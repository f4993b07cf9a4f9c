"""Fidelity to the original LLaVA-NeXT code (issue 11): the inputs the released weights were trained on.

Every expected value here is written out from the original code's rule (github LLaVA-VL/LLaVA-NeXT:
``mm_utils.tokenizer_image_token``, ``conversation.py``, ``llava_arch.get_2dPool`` /
``SpatialPool`` and the newline insertion of ``prepare_inputs_labels_for_multimodal``), never computed
by the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from llava_next_video_hf import testing
from llava_next_video_hf.tokenization import tokenize_like_original

QUESTION = "What is happening in this video?"

# Vicuna v1 (conv_vicuna_v1.get_prompt()): system + " USER: <image>\n{q} ASSISTANT:", tokenized by
# tokenizer_image_token: the chunk before the media token with the tokenizer's BOS, the chunk after
# it on its own (so it starts with the SentencePiece boundary "▁", then "\n" by byte fallback).
VICUNA_BEFORE = (
    "<s> ▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant . ▁The "
    "▁assistant ▁gives ▁helpful , ▁detailed , ▁and ▁polite ▁answers ▁to ▁the ▁user 's ▁questions . "
    "▁USER : ▁"
).split()
VICUNA_AFTER = "▁ <0x0A> What ▁is ▁happening ▁in ▁this ▁video ? ▁ASSISTANT :".split()
# Mistral instruct (conv_mistral_instruct, LLAMA_2 style, empty system): "[INST] <image>\n{q} [/INST]"
MISTRAL_BEFORE = "<s> ▁[ INST ] ▁".split()
MISTRAL_AFTER = "▁ <0x0A> What ▁is ▁happening ▁in ▁this ▁video ? ▁[/ INST ]".split()


def _video(t: int = 2) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (t, 40, 56, 3), dtype=np.uint8)


def _messages(kind: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": QUESTION}]}]


def _processor(tokenizer, **config):
    return testing.make_processor(testing.tiny_config(tokenizer, **config), tokenizer)


def _ids(tokenizer, pieces: list[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(pieces)
    assert tokenizer.unk_token_id not in ids, pieces  # every piece written above is in the vocabulary
    return ids


@pytest.fixture(scope="module")
def vicuna_tok():
    return testing.make_sentencepiece_tokenizer("vicuna")


@pytest.fixture(scope="module")
def mistral_tok():
    return testing.make_sentencepiece_tokenizer("mistral")


# ------------------------------------------------------------------------------- token ids


@pytest.mark.parametrize("style", ["vicuna", "mistral"])
def test_video_chat_prompt_ids_are_the_originals(style, vicuna_tok, mistral_tok):
    tok = vicuna_tok if style == "vicuna" else mistral_tok
    before, after = (VICUNA_BEFORE, VICUNA_AFTER) if style == "vicuna" else (MISTRAL_BEFORE, MISTRAL_AFTER)
    proc = _processor(tok)
    n = proc.num_video_tokens(2)
    text = proc.apply_chat_template(_messages("video"), add_generation_prompt=True)
    out = proc(text=text, videos=_video(2))
    expected = _ids(tok, before) + [tok.video_token_id] * n + _ids(tok, after)
    assert out["input_ids"][0].tolist() == expected
    # transformers' whole-string tokenization stays reachable, and differs exactly where issue 11 says
    whole = proc(text=text, videos=_video(2), tokenization="transformers", add_special_tokens=False)
    whole_ids = whole["input_ids"][0].tolist()
    assert whole_ids != expected
    assert tok.convert_ids_to_tokens(whole_ids[1]) != before[1]  # "<s> A" / "<s> [" without the "▁"
    first_after = whole_ids[whole_ids.index(tok.video_token_id) + n]
    assert tok.convert_ids_to_tokens(first_after) == "<0x0A>"  # no "▁" after the media token


def test_image_chat_prompt_ids_are_the_originals(vicuna_tok):
    proc = _processor(vicuna_tok)
    image = np.random.default_rng(1).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    text = proc.apply_chat_template(_messages("image"), add_generation_prompt=True)
    out = proc(text=text, images=[image])
    n = proc.num_image_tokens(300, 500)
    after = ["▁", "<0x0A>", "What", "▁is", "▁happening", "▁in", "▁this", "▁video", "?", "▁ASSISTANT", ":"]
    expected = _ids(vicuna_tok, VICUNA_BEFORE) + [vicuna_tok.image_token_id] * n + _ids(vicuna_tok, after)
    assert out["input_ids"][0].tolist() == expected


def test_chat_template_tokenize_true_gives_the_original_ids(vicuna_tok):
    """transformers' apply_chat_template(tokenize=True) passes add_special_tokens=False (the text has a
    literal <s>): the BOS still comes once, from the tokenizer."""
    proc = _processor(vicuna_tok)
    msgs = [
        {
            "role": "user",
            "content": [{"type": "video", "video": _video(2)}, {"type": "text", "text": QUESTION}],
        }
    ]
    out = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
    n = proc.num_video_tokens(2)
    expected = (
        _ids(vicuna_tok, VICUNA_BEFORE) + [vicuna_tok.video_token_id] * n + _ids(vicuna_tok, VICUNA_AFTER)
    )
    assert out["input_ids"][0].tolist() == expected


def test_raw_prompt_without_bos_and_batch_padding(vicuna_tok):
    proc = _processor(vicuna_tok)
    prompts = ["USER: <video>\nWhat is happening? ASSISTANT:", "<video>\nDescribe it"]
    out = proc(text=prompts, videos=[_video(1), _video(1)], padding_side="left")
    n = proc.num_video_tokens(1)
    first = _ids(vicuna_tok, "<s> ▁USER : ▁".split()) + [vicuna_tok.video_token_id] * n
    first += _ids(vicuna_tok, "▁ <0x0A> What ▁is ▁happening ? ▁ASSISTANT :".split())
    # the chunk before a leading media token is empty: BOS only (tokenizer("") == [BOS])
    second = _ids(vicuna_tok, ["<s>"]) + [vicuna_tok.video_token_id] * n
    second += _ids(vicuna_tok, "▁ <0x0A> Describe ▁it".split())
    pad = len(first) - len(second)
    assert out["input_ids"][0].tolist() == first
    assert out["input_ids"][1].tolist() == [vicuna_tok.pad_token_id] * pad + second
    assert out["attention_mask"][1].tolist() == [0] * pad + [1] * len(second)


def test_assistant_mask_covers_the_answer_with_original_tokenization(vicuna_tok):
    proc = _processor(vicuna_tok)
    msgs = _messages("video") + [{"role": "assistant", "content": [{"type": "text", "text": "Answer"}]}]
    msgs[0]["content"][0]["video"] = _video(1)
    out = proc.apply_chat_template(
        [msgs], tokenize=True, return_dict=True, return_assistant_tokens_mask=True, padding_side="right"
    )
    ids, mask = list(out["input_ids"][0].tolist()), list(out["assistant_masks"][0])
    masked = [vicuna_tok.convert_ids_to_tokens(i) for i, m in zip(ids, mask, strict=True) if m]
    assert masked == ["▁Answer", "</s>"]


def test_qwen_byte_level_bpe_ids_unchanged():
    """Byte-level BPE: piece-wise (the original rule, restated here) == whole-string == our default."""
    tok = testing.make_qwen_tokenizer()
    proc = _processor(tok, text_config={"bos_token_id": None, "eos_token_id": tok.eos_token_id,
                                        "pad_token_id": tok.pad_token_id})  # fmt: skip
    text = proc.apply_chat_template(_messages("video"), add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    out = proc(text=text, videos=_video(2))["input_ids"][0].tolist()
    whole = proc(text=text, videos=_video(2), tokenization="transformers")["input_ids"][0].tolist()
    n = proc.num_video_tokens(2)
    before, after = text.split("<video>")
    reference = tok(before).input_ids + [tok.video_token_id] * n + tok(after).input_ids  # no BOS to strip
    assert out == reference == whole


def test_tokenize_like_original_rule_on_two_placeholders(vicuna_tok):
    out = tokenize_like_original(vicuna_tok, "<image>\n<video>\nWhat", ["<image>", "<video>"])
    expected = ["<s>", "<image>", "▁", "<0x0A>", "<video>", "▁", "<0x0A>", "What"]
    assert out["input_ids"] == _ids(vicuna_tok, expected)


def test_unknown_tokenization_mode_is_refused(vicuna_tok):
    proc = _processor(vicuna_tok)
    with pytest.raises(ValueError, match="tokenization must be one of"):
        proc(text="<video>", videos=_video(1), tokenization="sentencepiece")


# ------------------------------------------------------------------------------- video pixels


@pytest.mark.parametrize(
    "height,width",
    [(360, 640), (640, 360), (200, 150), (120, 90), (337, 501), (333, 777), (336, 336)],
    ids=["landscape", "portrait", "small", "small-portrait", "odd", "odd-wide", "exact"],
)
def test_video_pixels_bit_equal_to_pil_clip_image_processor_per_frame(height, width):
    """The original preprocesses each frame with CLIPImageProcessor (PIL): 0.0 difference by default."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from llava_next_video_hf.processing import LlavaNextVideoAnyResVideoProcessor

    frames = np.random.default_rng(height * width).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    clip_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    )
    expected = np.stack([clip_processor(f, return_tensors="np")["pixel_values"][0] for f in frames])
    vp = LlavaNextVideoAnyResVideoProcessor()
    ours = vp(frames)["pixel_values_videos"][0].numpy()
    assert ours.dtype == expected.dtype == np.float32
    assert np.abs(ours - expected).max() == 0.0
    # the torch path (transformers' video processor) stays available, and is the one that differs
    torch_path = vp(frames, resize_backend="torch")["pixel_values_videos"][0].numpy()
    if (height, width) != (336, 336):
        assert np.abs(torch_path - expected).max() > 0


def test_resize_backend_is_checked_and_saved(tmp_path):
    from llava_next_video_hf.processing import LlavaNextVideoAnyResVideoProcessor

    with pytest.raises(ValueError, match="resize_backend must be one of"):
        LlavaNextVideoAnyResVideoProcessor(resize_backend="cv2")
    vp = LlavaNextVideoAnyResVideoProcessor(resize_backend="torch")
    vp.save_pretrained(tmp_path)
    assert LlavaNextVideoAnyResVideoProcessor.from_pretrained(tmp_path).resize_backend == "torch"


# ------------------------------------------------------------------------------- pinpoints and config forms


def _convert_lmms_lab(tmp_path, **config):
    from llava_next_video_hf.convert import convert
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    src = testing.make_lmms_lab_checkpoint(tmp_path / "src", **config)
    convert(src, tmp_path / "out", progress=False)
    register_auto_classes()
    from llava_next_video_hf.configuration import LlavaNextVideoAnyResConfig

    out = tmp_path / "out"
    return LlavaNextVideoAnyResConfig.from_pretrained(out), LlavaNextVideoAnyResProcessor.from_pretrained(out)


def test_asymmetric_pinpoints_are_read_as_width_height(tmp_path):
    """Original pinpoints (width, height) [[1008, 336], [672, 672]]: a 777 wide x 333 high image fits the
    3-tiles-wide canvas (1008x336): grid 24 x 72, width padding removed: 56 columns (777 * 24 / 333 =
    55.99 -> 56, (72 - 56) // 2 = 8 on each side), 24 rows, one newline per row: 24 * 57 = 1368 tile
    tokens + 576 base = 1944. Read as (height, width), the list gives 2x2 tiles and 1556 tokens."""
    config, processor = _convert_lmms_lab(tmp_path, image_grid_pinpoints=[[1008, 336], [672, 672]])
    assert config.image_grid_pinpoints == [[336, 1008], [672, 672]]
    assert config.num_image_tokens(333, 777) == processor.num_image_tokens(333, 777) == 24 * 57 + 576
    image = np.random.default_rng(2).integers(0, 256, (333, 777, 3), dtype=np.uint8)
    out = processor(text="<image>\nWhat is this?", images=[image])
    assert out["pixel_values"].shape[1] == 1 + 3  # base view + the 1x3 canvas' tiles
    assert (out["input_ids"] == config.image_token_id).sum().item() == 1944


def test_range_pinpoints_and_anyres_max_convert(tmp_path):
    """OneVision's "(1x1),...,(2x3)" expands to (i * 336, j * 336) for i in 1..2, j in 1..3, each read as
    (width, height); anyres_max_9 never downsamples with at most 6 tiles."""
    config, _ = _convert_lmms_lab(
        tmp_path, image_grid_pinpoints="(1x1),...,(2x3)", image_aspect_ratio="anyres_max_9"
    )
    assert config.image_grid_pinpoints == [
        [336, 336], [672, 336], [1008, 336], [336, 672], [672, 672], [1008, 672],
    ]  # fmt: skip


# ------------------------------------------------------------------------------- token math


@pytest.mark.parametrize(
    "stride,mode,per_frame",
    # the original: avg_pool2d / max_pool2d / nn.AvgPool2d(kernel=stride, stride=stride) floor,
    # get_2dPool's bilinear resizes to ceil(24 / stride)
    [(3, "average", 64), (5, "average", 16), (5, "max", 16), (5, "bilinear", 25), (7, "average", 9)],
)
def test_non_dividing_strides_floor_like_the_original(stride, mode, per_frame):
    config = testing.tiny_config(spatial_pool_stride=stride, spatial_pool_mode=mode)
    assert config.num_video_tokens(8) == 8 * per_frame
    model = testing.make_tiny_model(seed=0, spatial_pool_stride=stride, spatial_pool_mode=mode)
    frames = torch.randn(2, 3, 336, 336)
    with torch.no_grad():
        tokens = model.model.encode_frames(frames)
    assert tokens.shape[:2] == (2, per_frame)


def test_stride_5_matches_transformers_llava_next_video():
    """transformers' LlavaNextVideo pools with avg_pool2d(stride) too: 16 tokens per frame, equal values."""
    from llava_next_video_hf.layout import spatial_pool

    feats = torch.randn(2, 576, 8)
    ours = spatial_pool(feats, 24, 5, "average")
    theirs = torch.nn.functional.avg_pool2d(feats.view(2, 24, 24, 8).permute(0, 3, 1, 2), 5)
    torch.testing.assert_close(ours, theirs.flatten(2).transpose(1, 2), rtol=0, atol=0)


# ------------------------------------------------------------------------------- pooling and newlines
# A tower of 84 px / patch 14 gives a 6x6 patch grid; the vision features are replaced by a grid whose
# values are written by hand (one value per token, the same in every channel, CLS = -999 first), the
# projector is the identity (or Linear(I)-GELU-Linear(I)), image_newline is -1. Expected tokens follow the
# original's rules: get_2dPool / SpatialPool, add_token_per_grid / add_token_per_frame, one_token.

NEWLINE = -1.0


def _layout_model(**config):
    model = testing.make_tiny_model(seed=0, vision_config={"image_size": 84}, **config)
    with torch.no_grad():
        model.model.image_newline.fill_(NEWLINE)
    return model


def _stub_features(model, values: torch.Tensor) -> None:
    """values (N, 6, 6): token (r, c) of frame n gets values[n, r, c] in all 64 channels, after a CLS."""
    n = values.shape[0]
    grid = values.reshape(n, 36, 1).expand(n, 36, 64)
    feats = torch.cat([torch.full((n, 1, 64), -999.0), grid], dim=1)
    model.model.vision_features = lambda pixels: feats[: pixels.shape[0]]


def _video_tokens(model, frames: int) -> list[float]:
    with torch.no_grad():
        # the token layout on the injected vision_features (get_video_features runs the real tower
        # to return its outputs too)
        (video,) = model.model.split_videos(
            model.model.encode_frames(torch.zeros(frames, 3, 84, 84)), [frames]
        )
    assert torch.equal(video, video[:, :1].expand_as(video))  # channel-constant, as fed
    return video[:, 0].tolist()


def _linear_grid(frames: int) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    return torch.stack([100 * f + 10 * r + c for f in range(frames)])


def test_bilinear_pooling_values_follow_get_2dpool():
    """get_2dPool bilinear, stride 4 on a 6x6 grid: F.interpolate to ceil(6/4) = 2 (align_corners=False):
    source coordinates (i + 0.5) * 3 - 0.5 = 1 and 4, i.e. exactly the pixels (1|4, 1|4). With values
    10 r^2 + c^2: 11, 26, 161, 176 (average pooling would give 1 token, nearest would pick 0 and 3)."""
    model = _layout_model(spatial_pool_mode="bilinear", spatial_pool_stride=4)
    model.model.multi_modal_projector = torch.nn.Identity()
    r, c = torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij")
    _stub_features(model, (10 * r**2 + c**2)[None])
    assert _video_tokens(model, 1) == [11.0, 26.0, 161.0, 176.0]


def _gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("position", ["before_projector", "after_projector"])
def test_max_pooling_before_and_after_the_projector(position):
    """Every 2x2 window holds -0.75 (top-left) and three -3.0; projector = Linear(I)-GELU-Linear(I).
    Before it (SpatialPool): gelu(max) = gelu(-0.75); after it (get_2dPool on projected features):
    max(gelu) = gelu(-3.0), since GELU is not monotonic below -0.75."""
    model = _layout_model(spatial_pool_mode="max", spatial_pool_position=position)
    proj = model.model.multi_modal_projector
    with torch.no_grad():
        for layer in (proj.linear_1, proj.linear_2):
            layer.weight.copy_(torch.eye(64))
            layer.bias.zero_()
    values = torch.full((6, 6), -3.0)
    values[::2, ::2] = -0.75
    _stub_features(model, values[None])
    expected = _gelu(-0.75) if position == "before_projector" else _gelu(-3.0)
    assert _video_tokens(model, 1) == pytest.approx([expected] * 9, abs=1e-6)


# average 2x2 pooling of 100 f + 10 r + c: token (i, j) of frame f = 100 f + 20 i + 2 j + 5.5
F0 = [[5.5, 7.5, 9.5], [25.5, 27.5, 29.5], [45.5, 47.5, 49.5]]
F1 = [[v + 100 for v in row] for row in F0]


@pytest.mark.parametrize(
    "position,expected",
    [
        # add_token_per_grid: a newline after every row of every frame
        ("grid", [*F0[0], NEWLINE, *F0[1], NEWLINE, *F0[2], NEWLINE, *F1[0], NEWLINE, *F1[1], NEWLINE,
                  *F1[2], NEWLINE]),
        # add_token_per_frame: a newline after every frame
        ("frame", [*F0[0], *F0[1], *F0[2], NEWLINE, *F1[0], *F1[1], *F1[2], NEWLINE]),
        # one_token: all frames flattened, one newline after the video
        ("one_token", [*F0[0], *F0[1], *F0[2], *F1[0], *F1[1], *F1[2], NEWLINE]),
        ("no_token", [*F0[0], *F0[1], *F0[2], *F1[0], *F1[1], *F1[2]]),
    ],
)  # fmt: skip
def test_newline_layouts_follow_the_original(position, expected):
    model = _layout_model(video_newline_position=position, spatial_pool_position="after_projector")
    model.model.multi_modal_projector = torch.nn.Identity()
    _stub_features(model, _linear_grid(2))
    assert _video_tokens(model, 2) == expected
    assert len(expected) == model.config.num_video_tokens(2)


# ------------------------------------------------------------------------------- attention backends


def test_eager_and_sdpa_logits_agree(tiny_ckpt, tokenizer):
    """Same logits (values) with both attention implementations, on a left-padded batch with a video."""
    from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration as Model

    processor = testing.make_processor(Model.config_class.from_pretrained(tiny_ckpt), tokenizer)
    videos = [_video(2), _video(1)]
    batch = processor(
        text=["USER: <video>\nWhat is happening in this video? ASSISTANT:", "<video>\nWhat?"],
        videos=videos,
        padding_side="left",
    )
    logits = {}
    for attn in ("eager", "sdpa"):
        model = Model.from_pretrained(tiny_ckpt, attn_implementation=attn).eval()
        assert model.model.language_model.config._attn_implementation == attn
        with torch.no_grad():
            logits[attn] = model(**batch).logits
    keep = batch["attention_mask"].bool()
    assert logits["eager"][keep].abs().max() > 0.1  # real values, not zeros
    torch.testing.assert_close(logits["eager"][keep], logits["sdpa"][keep], atol=1e-5, rtol=1e-5)
