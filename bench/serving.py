"""Benchmark: video question answering throughput, vLLM with our plugin vs transformers ``generate``.

Usage:
    .venv/bin/python bench/serving.py [--requests 16] [--frames 8] [--new-tokens 32] [--no-server]
                                      [--model CKPT] [--enforce-eager] [--json out.json]

The same ``--requests`` video prompts (synthetic clips of ``--frames`` frames, different content and
sizes, one question each), the same checkpoint (the tiny random one unless ``--model``), float32,
greedy, exactly ``--new-tokens`` generated tokens per request (EOS masked until then, as
``min_new_tokens``/``min_tokens`` do), measured in one run:

* ``hf batch 1``: our transformers model, one request after the other (processor + ``generate``);
* ``hf batched``: all requests in one padded batch (processor + one ``generate`` call);
* ``vllm offline``: ``vllm.LLM.generate`` over all requests at once (continuous batching);
* ``vllm serve``: ``vllm serve`` with ``--requests`` concurrent ``/v1/chat/completions`` calls
  carrying the clips as base64 mp4 (so decoding is included; skipped with ``--no-server``).

Frames are decoded before the clock starts for the first three. Engine start-up is reported apart.
Warm-ups use clips and prompts outside the timed set (two extra clips with other content), so vLLM's
prefix and multimodal caches hold no timed video when the clock starts; prefix caching stays on (the
timed prompts share only the system prompt and question text with each other and the warm-up).
Prints requests/s and output tokens/s, and the ratios against both transformers baselines; the
greedy answers of vLLM are checked against transformers batch 1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QUESTIONS = [
    "What is happening in this video?",
    "Which direction does the object move?",
    "What colour is the moving square?",
    "How many times does the screen flash?",
]
SIZES = [(240, 320), (360, 640), (200, 300), (480, 480)]


def make_clips(n: int, frames: int, folder: Path) -> list[Path]:
    """``n`` synthetic mp4 clips (4 sizes, different backgrounds), 10 fps."""
    from llava_next_video_hf import testing

    clips = []
    for i in range(n):
        height, width = SIZES[i % len(SIZES)]
        path = folder / f"clip{i}.mp4"
        testing.make_video(path, num_frames=frames * 3, fps=10, width=width, height=height, seed=i)
        clips.append(path)
    return clips


def prompt_text(processor: Any, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def bench_hf(
    ckpt: Path, texts: list[str], videos: list[Any], new_tokens: int, warmup: tuple[list[str], list[Any]]
) -> dict[str, Any]:
    """Our transformers model: batch 1 (one request after the other), then one padded batch."""
    import torch

    from llava_next_video_hf.modeling import LlavaNextVideoAnyResForConditionalGeneration
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)
    model = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(ckpt, dtype=torch.float32).eval()
    gen = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}

    def run(batch_texts: list[str], batch_videos: list[Any]) -> list[list[int]]:
        inputs = processor(text=batch_texts, videos=batch_videos, padding=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, **gen)
        return out[:, inputs["input_ids"].shape[1] :].tolist()

    run(warmup[0][:1], warmup[1][:1])  # warm-up, outside the timed set
    start = time.perf_counter()
    single = [run([t], [v])[0] for t, v in zip(texts, videos, strict=True)]
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = run(texts, videos)
    batched_s = time.perf_counter() - start
    return {"batch1_s": single_s, "batched_s": batched_s, "tokens": single, "batched_tokens": batched}


def bench_vllm(
    ckpt: Path,
    texts: list[str],
    videos: list[Any],
    new_tokens: int,
    eager: bool,
    warmup: tuple[list[str], list[Any]],
) -> dict[str, Any]:
    """``vllm.LLM.generate`` over all requests at once."""
    from vllm import LLM, SamplingParams

    from llava_next_video_hf.vllm_plugin.offline import engine_kwargs

    start = time.perf_counter()
    llm = LLM(
        **engine_kwargs(
            model=str(ckpt), dtype="float32", enforce_eager=eager, limit_mm_per_prompt={"video": 1}
        )
    )
    startup_s = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens)
    prompts = [{"prompt": t, "multi_modal_data": {"video": v}} for t, v in zip(texts, videos, strict=True)]
    warm = [{"prompt": t, "multi_modal_data": {"video": v}} for t, v in zip(*warmup, strict=True)]
    llm.generate(warm, params, use_tqdm=False)  # warm-up with prompts outside the timed set
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    run_s = time.perf_counter() - start
    llm.llm_engine.engine_core.shutdown()
    return {"startup_s": startup_s, "run_s": run_s, "tokens": [list(o.outputs[0].token_ids) for o in outs]}


def bench_server(
    ckpt: Path,
    questions: list[str],
    clips: list[Path],
    frames: int,
    new_tokens: int,
    eager: bool,
    warmup_clip: Path,
) -> dict[str, Any]:
    """``vllm serve`` with one concurrent chat request per clip (base64 mp4)."""
    import requests

    from llava_next_video_hf.vllm_plugin.testing import data_url, serve

    args = ["--dtype", "float32", "--media-io-kwargs", json.dumps({"video": {"num_frames": frames}})]
    args += ["--gpu-memory-utilization", "0.3", *(["--enforce-eager"] if eager else [])]
    urls = [data_url(p.read_bytes(), "video/mp4") for p in [*clips, warmup_clip]]
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    start = time.perf_counter()
    with serve(ckpt, *args, env=env, startup_timeout=900) as base:
        startup_s = time.perf_counter() - start

        def ask(i: int) -> int:
            content = [
                {"type": "video_url", "video_url": {"url": urls[i]}},
                {"type": "text", "text": questions[i % len(questions)]},
            ]
            body = {
                "model": str(ckpt),
                "messages": [{"role": "user", "content": content}],
                "max_tokens": new_tokens,
                "temperature": 0.0,
                "min_tokens": new_tokens,
            }
            resp = requests.post(f"{base}/v1/chat/completions", json=body, timeout=600)
            resp.raise_for_status()
            return int(resp.json()["usage"]["completion_tokens"])

        ask(len(clips))  # warm-up: the extra clip, outside the timed set
        with concurrent.futures.ThreadPoolExecutor(len(clips)) as pool:
            start = time.perf_counter()
            completion_tokens = sum(pool.map(ask, range(len(clips))))
            run_s = time.perf_counter() - start
    return {"startup_s": startup_s, "run_s": run_s, "completion_tokens": completion_tokens}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--model", type=Path, help="checkpoint (default: a tiny random one)")
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without torch.compile")
    parser.add_argument("--no-server", action="store_true", help="skip the vllm serve measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    from llava_next_video_hf import testing
    from llava_next_video_hf.processing import LlavaNextVideoAnyResProcessor, register_auto_classes

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    ckpt = args.model or testing.make_tiny_checkpoint(tmp / "ckpt")
    register_auto_classes()
    processor = LlavaNextVideoAnyResProcessor.from_pretrained(ckpt)
    # seeds 0..n-1 are timed; the two extra clips (other content) only warm the engines up
    clips = make_clips(args.requests + 2, args.frames, tmp)
    clips, warm_clips = clips[: args.requests], clips[args.requests :]
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.requests)]
    texts = [prompt_text(processor, q) for q in questions]

    def decode(clip: Path) -> Any:  # the same (T, H, W, 3) uint8 frames for transformers and vLLM
        return (
            processor.video_processor.load_clips(str(clip), num_frames=args.frames)[0]
            .permute(0, 2, 3, 1)
            .numpy()
        )

    videos = [decode(c) for c in clips]
    warmup = ([prompt_text(processor, q) for q in QUESTIONS[:2]], [decode(c) for c in warm_clips])

    hf = bench_hf(ckpt, texts, videos, args.new_tokens, warmup)
    vllm = bench_vllm(ckpt, texts, videos, args.new_tokens, args.enforce_eager, warmup)
    server = (
        None
        if args.no_server
        else bench_server(
            ckpt, questions, clips, args.frames, args.new_tokens, args.enforce_eager, warm_clips[0]
        )
    )

    n, tokens = args.requests, args.requests * args.new_tokens
    rows = [("hf batch 1", hf["batch1_s"], None), ("hf batched", hf["batched_s"], None)]
    rows.append(("vllm offline", vllm["run_s"], vllm["startup_s"]))
    if server is not None:
        assert server["completion_tokens"] == tokens, server
        rows.append(("vllm serve", server["run_s"], server["startup_s"]))
    same = sum(a == b for a, b in zip(vllm["tokens"], hf["tokens"], strict=True))
    print(f"\n{n} video requests x {args.frames} frames, {args.new_tokens} new tokens each, float32, greedy")
    print(
        f"{'engine':<14}{'wall s':>9}{'req/s':>9}{'out tok/s':>11}{'vs hf b1':>10}{'vs hf bN':>10}{'start s':>9}"
    )
    results = {}
    for name, wall, startup in rows:
        vs1, vsn = hf["batch1_s"] / wall, hf["batched_s"] / wall
        start = f"{startup:9.1f}" if startup is not None else ""
        print(f"{name:<14}{wall:9.2f}{n / wall:9.2f}{tokens / wall:11.1f}{vs1:9.2f}x{vsn:9.2f}x{start}")
        results[name] = {
            "wall_s": wall,
            "req_per_s": n / wall,
            "out_tok_per_s": tokens / wall,
            "startup_s": startup,
        }
    print(f"vLLM greedy answers equal to transformers batch 1: {same}/{n}")
    if args.json:
        meta = {
            "requests": n,
            "frames": args.frames,
            "new_tokens": args.new_tokens,
            "eager": args.enforce_eager,
        }
        meta.update(python=sys.version.split()[0], machine=platform.machine(), cpus=os.cpu_count())
        args.json.write_text(json.dumps({"meta": meta, "results": results, "vllm_equal_hf": same}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
