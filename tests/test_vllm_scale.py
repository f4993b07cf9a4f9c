"""Pipeline and data parallelism, and ``generate --engine vllm -tp 2``: two workers answer like one.

CPU build, tiny checkpoints, each worker bound to its own core (``VLLM_CPU_OMP_THREADS_BIND``).
Pipeline parallelism is compiled: on the CPU backend it fails to start under ``--enforce-eager``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from _parity import (
    assert_same,
    chat,
    chat_answer,
    hf_reference,
    mixed_prompts,
    parity_llm,
    served_reference,
    two_cpu_workers_env,
    vllm_generate,
)
from PIL import Image

import llava_next_video_hf
from llava_next_video_hf import testing
from llava_next_video_hf.testing import tasks

pytestmark = [pytest.mark.vllm, pytest.mark.scale]

MAX_NEW_TOKENS = 8
FRAMES = 6


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return testing.make_tiny_checkpoint(tmp_path_factory.mktemp("scale") / "ckpt", seed=1)


@pytest.fixture
def two_workers_env():
    with two_cpu_workers_env() as settings:
        yield settings


def vision_stage(model) -> tuple[bool, str, int]:
    """(this stage runs the tower, the tower's class, tower + projector parameters on this worker)."""
    params = sum(p.numel() for m in (model.vision_tower, model.multi_modal_projector) for p in m.parameters())
    return model.runs_vision, type(model.vision_tower).__name__, params


def test_pipeline_parallel_2_gives_the_single_worker_tokens_and_builds_the_tower_once(ckpt, two_workers_env):

    prompts = mixed_prompts()
    run = hf_reference(ckpt, MAX_NEW_TOKENS)
    reference = [run(p) for p in prompts]
    limits = {"image": 1, "video": 1}
    # compiled: on the CPU build pipeline parallelism fails its first request under enforce_eager
    with parity_llm(ckpt, enforce_eager=False, pipeline_parallel_size=2, limit_mm_per_prompt=limits) as llm:
        got = vllm_generate(llm, prompts, MAX_NEW_TOKENS)
        stages = llm.apply_model(vision_stage)
    for i, (g, r) in enumerate(zip(got, reference, strict=True)):
        assert_same(g, r, f"PP=2 prompt {i}")
    (first, first_cls, first_params), (second, second_cls, second_params) = stages
    assert first and first_cls in ("CLIPVisionModel", "SiglipVisionModel") and first_params > 0
    assert not second and second_cls == "StageMissingLayer" and second_params == 0


def engine_request_counts(base: str) -> dict[str, float]:
    """Finished requests per data-parallel engine, from the server's Prometheus metrics
    (``vllm:request_success_total{engine="0",finished_reason=...}``, summed over the reasons)."""
    import requests

    text = requests.get(f"{base}/metrics", timeout=30).text
    counts: dict[str, float] = {}
    for m in re.finditer(r"^vllm:request_success_total\{([^}]*)\} ([0-9.e+]+)$", text, re.MULTILINE):
        (engine,) = re.findall(r'engine="([^"]*)"', m.group(1))
        counts[engine] = counts.get(engine, 0.0) + float(m.group(2))
    return counts


def reference_logprobs(ckpt, prompt_ids: list[int], tokens: list[int], **media) -> list[float]:
    """Our transformers model's log-probability of each generated token (teacher-forced)."""
    import torch

    from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)
    model = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt).eval()
    pixels = processor(text=None, return_tensors="pt", **media)
    ids = torch.tensor([prompt_ids + tokens])
    with torch.inference_mode():
        logits = model(input_ids=ids, **pixels).logits[0, len(prompt_ids) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist()


def test_data_parallel_2_server_answers_concurrent_chats_like_transformers(ckpt, two_workers_env, tmp_path):
    """Both engines answer (per-engine request counts from /metrics), with transformers' tokens and
    log-probabilities: a wrong second engine cannot hide behind the first."""
    from llava_next_video_hf.vllm_plugin.testing import data_url, serve

    video = testing.make_video(tmp_path / "clip.mp4", num_frames=30, fps=10, width=320, height=240, seed=3)
    image = tmp_path / "image.png"
    Image.fromarray((np.random.RandomState(4).rand(300, 500, 3) * 255).astype(np.uint8)).save(image)
    video_part = {"type": "video_url", "video_url": {"url": data_url(video.read_bytes(), "video/mp4")}}
    image_part = {"type": "image_url", "image_url": {"url": data_url(image.read_bytes(), "image/png")}}
    questions = [
        "What is happening in this video?",
        "What colour is it?",
        "Where does it go?",
        "Describe it.",
    ] * 2
    requests_ = [
        ([video_part if i % 2 == 0 else image_part, {"type": "text", "text": q}], i % 2 == 0)
        for i, q in enumerate(questions)
    ]
    args = [
        "--dtype", "float32", "--enforce-eager", "--gpu-memory-utilization", "0.3",
        "--data-parallel-size", "2",
        "--media-io-kwargs", json.dumps({"video": {"num_frames": FRAMES}}),
    ]  # fmt: skip
    # INFO logs name each engine (EngineCore_DP0/DP1); other tests may have lowered the level in os.environ
    env = {**two_workers_env, "VLLM_LOGGING_LEVEL": "INFO", "VLLM_CONFIGURE_LOGGING": "1"}

    def ask(parts):
        resp = chat(base, str(ckpt), parts, MAX_NEW_TOKENS, logprobs=True)
        prompt_ids, tokens = chat_answer(resp)
        logprobs = [t["logprob"] for t in resp.json()["choices"][0]["logprobs"]["content"]]
        return prompt_ids, tokens, logprobs

    with serve(ckpt, *args, env=env, log_path=tmp_path / "server.log") as base:
        assert engine_request_counts(base) in ({}, {"0": 0.0, "1": 0.0})  # nothing answered yet
        with ThreadPoolExecutor(len(requests_)) as pool:
            answers = list(pool.map(lambda r: ask(r[0]), requests_))
        counts = engine_request_counts(base)
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "EngineCore_DP1" in log, "a second data-parallel engine ran"
    # every request was answered by one of the two engines, and each engine answered some
    assert set(counts) == {"0", "1"} and sum(counts.values()) == len(requests_), counts
    assert min(counts.values()) >= 1, counts
    reference = served_reference(ckpt, MAX_NEW_TOKENS)
    for (prompt_ids, tokens, logprobs), (_, is_video) in zip(answers, requests_, strict=True):
        media = (
            {"videos": [str(video)], "num_frames": FRAMES}
            if is_video
            else {"images": [Image.open(io.BytesIO(image.read_bytes()))]}
        )
        assert tokens == reference(prompt_ids, **media)
        expected = reference_logprobs(ckpt, prompt_ids, tokens, **media)
        assert logprobs == pytest.approx(expected, abs=1e-3), (logprobs, expected)


def test_generate_cli_with_two_tensor_parallel_workers_answers_the_demo_question(tmp_path):
    shipped = Path(llava_next_video_hf.__file__).parent / "assets" / "tiny-video-qa"
    example = tasks.sample_example(np.random.default_rng(3), "colour")
    clip = tasks.write_mp4(example.frames(tasks.file_frames(3)), tmp_path / "clip.mp4")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_OMP_THREADS_BIND"}  # the CLI sets it
    cmd = [sys.executable, "-m", "llava_next_video_hf.cli", "generate", str(shipped), "--engine", "vllm",
           "-tp", "2", "--video", str(clip), "--prompt", example.question, "--max-new-tokens", "8"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == example.answer
