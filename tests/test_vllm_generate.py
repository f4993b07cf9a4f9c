"""Greedy ``vllm.LLM(...).generate`` equals our transformers model's greedy ``generate``, token for token.

One engine for the module (the tiny checkpoint with a linear RoPE factor of 2, so its context is
8192 = 2 x 4096 trained positions; ``float32``); the reference is
``LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt)`` with our processor on the same
prompts and media, one prompt at a time. Besides the tokens, the log-probability of every generated
token must agree, which catches feature errors too small to flip a greedy choice.
"""

from __future__ import annotations

import os

import pytest
from _parity import assert_same, chat_prompt, hf_reference, make_image, make_video, parity_llm, vllm_generate

from llava_next_video_hf import testing

pytestmark = pytest.mark.vllm

MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return testing.make_tiny_checkpoint(
        tmp_path_factory.mktemp("gen") / "ckpt", seed=1, rope_scaling_factor=2
    )


@pytest.fixture(scope="module")
def llm(ckpt):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with parity_llm(ckpt, limit_mm_per_prompt={"image": 2, "video": 1}) as engine:
        yield engine


@pytest.fixture(scope="module")
def reference(ckpt):
    return hf_reference(ckpt, MAX_NEW_TOKENS)


def _generate(llm, prompts: list[dict]) -> list[tuple[list[int], list[float]]]:
    return vllm_generate(llm, prompts, MAX_NEW_TOKENS)


def test_video_prompt(llm, reference):
    prompt = {
        "prompt": chat_prompt("What is happening in this video?", video=True),
        "multi_modal_data": {"video": make_video(6, 240, 320, seed=0)},
    }
    (got,) = _generate(llm, [prompt])
    assert_same(got, reference(prompt), "video")


def test_image_prompt(llm, reference):
    prompt = {
        "prompt": chat_prompt("What is shown in this image?", images=1),
        "multi_modal_data": {"image": make_image(300, 500, seed=1)},
    }
    (got,) = _generate(llm, [prompt])
    assert_same(got, reference(prompt), "image")


def test_long_video_beyond_the_trained_context(llm, reference):
    """40 frames = 5760 video tokens: positions past 4096 work only through the linear RoPE factor."""
    prompt = {
        "prompt": chat_prompt("Describe the video in detail.", video=True),
        "multi_modal_data": {"video": make_video(40, 120, 160, seed=10)},
    }
    assert llm.llm_engine.model_config.max_model_len == 8192
    (got,) = _generate(llm, [prompt])
    assert_same(got, reference(prompt), "long video")


def test_batch_of_eight_mixed_prompts(llm, reference):
    """Videos of different lengths and sizes, AnyRes images of different shapes, and text only, in
    one ``generate`` call (continuous batching, encoder batching across requests)."""
    prompts = [
        {"prompt": chat_prompt("Which direction does it move?", video=True), "multi_modal_data": {"video": make_video(2, 180, 320, 2)}},
        {"prompt": chat_prompt("What colour is the square?", images=1), "multi_modal_data": {"image": make_image(400, 260, 3)}},
        {"prompt": chat_prompt("yes or no?")},
        {"prompt": chat_prompt("How many times does it flash?", video=True), "multi_modal_data": {"video": make_video(9, 240, 320, 4)}},
        {"prompt": chat_prompt("Which object appears first?", images=2), "multi_modal_data": {"image": [make_image(200, 900, 5), make_image(100, 100, 6)]}},
        {"prompt": chat_prompt("Describe the video in detail.", video=True), "multi_modal_data": {"video": make_video(4, 360, 640, 7)}},
        {"prompt": chat_prompt("It moves left. It moves right.")},
        {"prompt": chat_prompt("What is shown?", images=1, video=True), "multi_modal_data": {"image": make_image(672, 672, 8), "video": make_video(3, 200, 200, 9)}},
    ]  # fmt: skip
    got = _generate(llm, prompts)
    for i, prompt in enumerate(prompts):
        assert_same(got[i], reference(prompt), f"prompt {i}")
    assert len({tuple(g[0]) for g in got}) > 4, "the media should change the answers"
