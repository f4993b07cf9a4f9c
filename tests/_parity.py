"""vLLM vs transformers greedy parity helpers shared by the vLLM test modules: the prompts, the media,
our transformers model's greedy tokens with their log-probabilities, and the comparison."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def parity_llm(ckpt: str | Path, **overrides) -> Iterator:
    """``vllm.LLM`` on ``ckpt`` set up for parity with transformers (float32, eager, seed 0, a modest
    share of host memory on the CPU build; ``overrides`` win), shut down on exit."""
    from vllm import LLM

    args = {"dtype": "float32", "enforce_eager": True, "seed": 0, "gpu_memory_utilization": 0.3, **overrides}
    engine = LLM(model=str(ckpt), **args)
    try:
        yield engine
    finally:
        engine.llm_engine.engine_core.shutdown()


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


def mixed_prompts() -> list[dict]:
    """A video, an AnyRes image, and an image with a video, as ``LLM.generate`` prompts."""
    return [
        {"prompt": chat_prompt("What is happening in this video?", video=True),
         "multi_modal_data": {"video": make_video(5, 240, 320, seed=0)}},
        {"prompt": chat_prompt("What is shown in this image?", images=1),
         "multi_modal_data": {"image": make_image(300, 500, seed=1)}},
        {"prompt": chat_prompt("What is shown?", images=1, video=True),
         "multi_modal_data": {"image": make_image(200, 640, seed=2), "video": make_video(3, 200, 200, seed=3)}},
    ]  # fmt: skip


def served_reference(ckpt: str | Path, max_new_tokens: int) -> Callable[..., list[int]]:
    """Our transformers model, greedy, on the prompt ids a server used and the same media
    (``processor(text=None, videos=..., images=..., num_frames=...)`` keywords)."""
    from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)
    model = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt).eval()

    def run(prompt_ids: list[int], **media) -> list[int]:
        pixels = processor(text=None, return_tensors="pt", **media)
        ids = torch.tensor([prompt_ids])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, **pixels, max_new_tokens=max_new_tokens, do_sample=False)
        return out[0, ids.shape[1] :].tolist()

    return run


def chat(base: str, model: str, parts: list[dict], max_tokens: int, **extra):
    """One greedy OpenAI chat request to a server; returns the ``requests`` response."""
    import requests

    body = {
        "model": model,
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "return_token_ids": True,
        **extra,
    }
    return requests.post(f"{base}/v1/chat/completions", json=body, timeout=120)


def chat_answer(resp) -> tuple[list[int], list[int]]:
    """(prompt token ids, generated token ids) of a successful chat response."""
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["prompt_token_ids"], body["choices"][0]["token_ids"]


@contextlib.contextmanager
def two_cpu_workers_env() -> Iterator[dict[str, str]]:
    """Environment for a 2-worker vLLM engine on the CPU build, restored on exit: each worker bound
    to its own core(s), a small KV cache, and ``apply_model`` allowed to send functions to workers."""
    from llava_next_video_hf.vllm_plugin.offline import cpu_thread_binding

    settings = {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": cpu_thread_binding(2),
        "VLLM_ALLOW_INSECURE_SERIALIZATION": "1",
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield settings
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
