"""Fidelity to the original LLaVA-NeXT code (issue 11): the inputs the released weights were trained on.

Every expected value here is written out from the original code's rule (github LLaVA-VL/LLaVA-NeXT:
``mm_utils.tokenizer_image_token``, ``conversation.py``, ``llava_arch.get_2dPool`` /
``SpatialPool`` and the newline insertion of ``prepare_inputs_labels_for_multimodal``), never computed
by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llava_next_video_hf import testing
from llava_next_video_hf.processing import tokenize_like_original

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
    msgs = [{"role": "user", "content": [{"type": "video", "video": _video(2)}, {"type": "text", "text": QUESTION}]}]
    out = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
    n = proc.num_video_tokens(2)
    expected = _ids(vicuna_tok, VICUNA_BEFORE) + [vicuna_tok.video_token_id] * n + _ids(vicuna_tok, VICUNA_AFTER)
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
    clip_processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
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
