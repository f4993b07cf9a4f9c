"""Greedy ``vllm.LLM(...).generate`` equals our transformers model's greedy ``generate``, token for token.

One engine for the module (the tiny checkpoint with a linear RoPE factor of 2, so its context is
8192 = 2 x 4096 trained positions; ``float32``); the reference is
``LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt)`` with our processor on the same
prompts and media, one prompt at a time. Besides the tokens, the log-probability of every generated
token must agree, which catches feature errors too small to flip a greedy choice.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from llava_next_video_hf import testing
from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration

pytestmark = pytest.mark.vllm

MAX_NEW_TOKENS = 12
SYSTEM = "A chat between a curious user and an artificial intelligence assistant. "


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return testing.make_tiny_checkpoint(
        tmp_path_factory.mktemp("gen") / "ckpt", seed=1, rope_scaling_factor=2
    )


@pytest.fixture(scope="module")
def llm(ckpt):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    engine = LLM(
        model=str(ckpt),
        dtype="float32",
        enforce_eager=True,
        seed=0,
        gpu_memory_utilization=0.3,
        limit_mm_per_prompt={"image": 2, "video": 1},
    )
    yield engine
    engine.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="module")
def reference(ckpt):
    """Greedy tokens and their log-probabilities from our transformers model, one prompt at a time."""
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)
    model = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt).eval()

    def run(prompt: dict) -> tuple[list[int], list[float]]:
        media = prompt.get("multi_modal_data", {})
        inputs = processor(
            text=prompt["prompt"], images=media.get("image"), videos=media.get("video"), return_tensors="pt"
        )
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
        tokens = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
        logprobs = [
            torch.log_softmax(step[0].double(), -1)[t].item()
            for step, t in zip(out.logits, tokens, strict=True)
        ]
        return tokens, logprobs

    return run


def _generate(llm, prompts: list[dict]) -> list[tuple[list[int], list[float]]]:
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS, logprobs=0)
    results = []
    for out in llm.generate(prompts, params, use_tqdm=False):
        completion = out.outputs[0]
        tokens = list(completion.token_ids)
        results.append(
            (tokens, [step[t].logprob for step, t in zip(completion.logprobs, tokens, strict=True)])
        )
    return results


def _assert_same(got: tuple[list[int], list[float]], ref: tuple[list[int], list[float]], what: str) -> None:
    assert got[0] == ref[0], f"{what}: vLLM {got[0]} != transformers {ref[0]}"
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(got[1], ref[1], strict=True)), (
        f"{what}: log-probabilities differ: {got[1]} vs {ref[1]}"
    )


def _video(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    return testing.make_frames(frames, height=height, width=width, seed=seed)


def _image(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8))


def _prompt(question: str, *, images: int = 0, video: bool = False) -> str:
    media = "<image>\n" * images + ("<video>\n" if video else "")
    return f"{SYSTEM}USER: {media}{question} ASSISTANT:"


def test_video_prompt(llm, reference):
    prompt = {
        "prompt": _prompt("What is happening in this video?", video=True),
        "multi_modal_data": {"video": _video(6, 240, 320, seed=0)},
    }
    (got,) = _generate(llm, [prompt])
    _assert_same(got, reference(prompt), "video")


def test_image_prompt(llm, reference):
    prompt = {
        "prompt": _prompt("What is shown in this image?", images=1),
        "multi_modal_data": {"image": _image(300, 500, seed=1)},
    }
    (got,) = _generate(llm, [prompt])
    _assert_same(got, reference(prompt), "image")


def test_long_video_beyond_the_trained_context(llm, reference):
    """40 frames = 5760 video tokens: positions past 4096 work only through the linear RoPE factor."""
    prompt = {
        "prompt": _prompt("Describe the video in detail.", video=True),
        "multi_modal_data": {"video": _video(40, 120, 160, seed=10)},
    }
    assert llm.llm_engine.model_config.max_model_len == 8192
    (got,) = _generate(llm, [prompt])
    _assert_same(got, reference(prompt), "long video")


def test_batch_of_eight_mixed_prompts(llm, reference):
    """Videos of different lengths and sizes, AnyRes images of different shapes, and text only, in
    one ``generate`` call (continuous batching, encoder batching across requests)."""
    prompts = [
        {"prompt": _prompt("Which direction does it move?", video=True), "multi_modal_data": {"video": _video(2, 180, 320, 2)}},
        {"prompt": _prompt("What colour is the square?", images=1), "multi_modal_data": {"image": _image(400, 260, 3)}},
        {"prompt": _prompt("yes or no?")},
        {"prompt": _prompt("How many times does it flash?", video=True), "multi_modal_data": {"video": _video(9, 240, 320, 4)}},
        {"prompt": _prompt("Which object appears first?", images=2), "multi_modal_data": {"image": [_image(200, 900, 5), _image(100, 100, 6)]}},
        {"prompt": _prompt("Describe the video in detail.", video=True), "multi_modal_data": {"video": _video(4, 360, 640, 7)}},
        {"prompt": _prompt("It moves left. It moves right.")},
        {"prompt": _prompt("What is shown?", images=1, video=True), "multi_modal_data": {"image": _image(672, 672, 8), "video": _video(3, 200, 200, 9)}},
    ]  # fmt: skip
    got = _generate(llm, prompts)
    for i, prompt in enumerate(prompts):
        _assert_same(got[i], reference(prompt), f"prompt {i}")
    assert len({tuple(g[0]) for g in got}) > 4, "the media should change the answers"
