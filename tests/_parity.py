"""vLLM vs transformers greedy parity helpers shared by the vLLM test modules: the prompts, the media,
our transformers model's greedy tokens with their log-probabilities, and the comparison."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from llava_next_video_hf import testing

SYSTEM = "A chat between a curious user and an artificial intelligence assistant. "
Result = tuple[list[int], list[float]]


def hf_reference(ckpt: str | Path, max_new_tokens: int) -> Callable[[dict], Result]:
    """Greedy tokens and their log-probabilities from our transformers model, one prompt at a time."""
    from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)
    model = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt).eval()

    def run(prompt: dict) -> Result:
        media = prompt.get("multi_modal_data", {})
        inputs = processor(
            text=prompt["prompt"], images=media.get("image"), videos=media.get("video"), return_tensors="pt"
        )
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
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


def vllm_generate(llm, prompts: list[dict], max_new_tokens: int) -> list[Result]:
    """Greedy ``llm.generate`` tokens and the log-probability vLLM gives each of them."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, logprobs=0)
    results = []
    for out in llm.generate(prompts, params, use_tqdm=False):
        completion = out.outputs[0]
        tokens = list(completion.token_ids)
        results.append(
            (tokens, [step[t].logprob for step, t in zip(completion.logprobs, tokens, strict=True)])
        )
    return results


def assert_same(got: Result, ref: Result, what: str) -> None:
    assert got[0] == ref[0], f"{what}: vLLM {got[0]} != transformers {ref[0]}"
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(got[1], ref[1], strict=True)), (
        f"{what}: log-probabilities differ: {got[1]} vs {ref[1]}"
    )


def make_video(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    return testing.make_frames(frames, height=height, width=width, seed=seed)


def make_image(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8))


def chat_prompt(question: str, *, images: int = 0, video: bool = False) -> str:
    media = "<image>\n" * images + ("<video>\n" if video else "")
    return f"{SYSTEM}USER: {media}{question} ASSISTANT:"
