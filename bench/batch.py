"""Benchmark: ``llava-next-video batch`` against the loops a user would write, and its two bounds.

Usage:
    PYTHONPATH=src .venv/bin/python bench/batch.py [--clips 24] [--min-s 5] [--max-s 60] [--frames 8]
        [--new-tokens 32] [--workers N] [--model CKPT] [--ray] [--json out.json]

The same ``--clips`` synthetic clips (lengths spread from ``--min-s`` to ``--max-s`` seconds, sizes
from 160x120 to 640x360, cached in ~/.cache/llava_next_video_hf/bench/batch), one prompt, 8
frames, exactly ``--new-tokens`` tokens per answer (EOS ignored), greedy, float32, measured in one
run and one process (one vLLM engine shared by b/c/d and the engine bound; start-up not timed):

* (a) plain loop: ``video_io.load_video`` + processor + transformers ``generate``, one clip at a time;
* (b) a loop of one ``LLM.chat`` per clip (vLLM loads the video itself, with the plugin's loader);
* (c) one ``LLM.chat`` call over the whole list;
* (d) ``batch.run`` on this machine (decoding workers + the same engine);
* (e) with ``--ray``: ``batch --ray`` on a local two-node Ray cluster (``ray start`` x2, torn down);
* bound 1: decoding + preparing alone, every clip, on all cores (the job's worker pool);
* bound 2: the engine alone on prepared frames already in memory (one ``LLM.generate``).

Prints videos/s and the ratios the issue asks for: (d)/(a), (d)/(c), (d)/min(bound 1, bound 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "Describe this video in detail."
SIZES = [(160, 120), (320, 240), (640, 360), (200, 300), (480, 270)]


def make_clips(n: int, min_s: float, max_s: float) -> list[Path]:
    from llava_next_video_hf import testing

    folder = Path.home() / ".cache" / "llava_next_video_hf" / "bench" / "batch"
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(n):
        seconds = min_s + (max_s - min_s) * i / max(1, n - 1)
        w, h = SIZES[i % len(SIZES)]
        path = folder / f"clip{i:04d}_{int(seconds)}s_{w}x{h}.mp4"
        if not path.exists():
            testing.make_video(path, num_frames=max(2, int(seconds * 10)), fps=10, width=w, height=h, seed=i)
        clips.append(path)
    return clips


def timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    elapsed = time.perf_counter() - start
    print(f"  ... {elapsed:.2f} s", flush=True)
    return elapsed, out


def loop_transformers(model: str, clips: list[Path], frames: int, new_tokens: int) -> list[str]:
    import torch
    from transformers import AutoModelForImageTextToText

    from llava_next_video_hf.batch.prepare import processor_for
    from llava_next_video_hf.video_io import load_video
    from llava_next_video_hf.vllm_plugin.offline import build_messages

    processor = processor_for(model)
    net = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32).eval()
    text = processor.apply_chat_template(
        build_messages(PROMPT, video=True, num_images=0), add_generation_prompt=True, tokenize=False
    )

    def run() -> list[str]:
        answers = []
        for clip in clips:
            video, _ = load_video(clip, num_frames=frames)
            inputs = processor(text=text, videos=[video], do_sample_frames=False)
            with torch.inference_mode():
                out = net.generate(
                    **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
                )
            answers.append(processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
        return answers

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--min-s", type=float, default=5)
    p.add_argument("--max-s", type=float, default=60)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--ray", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    from llava_next_video_hf import batch, cli
    from llava_next_video_hf.batch.engines import Sampling, VllmEngine
    from llava_next_video_hf.batch.pipeline import decode_pool, default_workers
    from llava_next_video_hf.batch.prepare import Settings, prepare, processor_for, warm_up

    model = str(args.model or cli.default_checkpoint())
    clips = make_clips(args.clips, args.min_s, args.max_s)
    workers = args.workers or default_workers()
    n = len(clips)
    results: dict[str, float] = {}
    print(f"{n} clips {args.min_s:g}-{args.max_s:g} s, {args.frames} frames, {args.new_tokens} new tokens, "
          f"{workers} decoding workers, {os.cpu_count()} cores, {platform.processor() or platform.machine()}")  # fmt: skip

    # (a) the plain loop
    run_a = loop_transformers(model, clips, args.frames, args.new_tokens)
    results["a_loop_transformers"], _ = timed(run_a)

    # bound 1: decoding + preparing on all cores
    settings = Settings(model, "vllm", num_frames=args.frames)
    processor_for(model)
    pool = decode_pool(workers)
    [f.result() for f in [pool.submit(warm_up, settings) for _ in range(workers)]]  # imports, not timed
    t, prepared = timed(
        lambda: [f.result() for f in [pool.submit(prepare, str(c), PROMPT, settings) for c in clips]]
    )
    results["bound_decode"] = t  # the pool stays up (warm) for (d)

    sampling = Sampling(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    # no multimodal processor cache and no prefix cache: every path pays for every clip (b's clips
    # are c's and d's clips)
    engine = VllmEngine(
        model, sampling, allowed_local_media_path="/", capacity=64, mm_processor_cache_gb=0,
        enable_prefix_caching=False,
    )  # fmt: skip
    llm = engine.llm
    messages = [
        [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": f"file://{c}"}},
                                      {"type": "text", "text": PROMPT}]}]
        for c in clips
    ]  # fmt: skip
    warm = [[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]]
    llm.chat(warm, engine.params, use_tqdm=False)

    # bound 2: the engine alone on frames in memory
    items = [(str(i), it) for i, it in enumerate(prepared)]
    results["bound_engine"], _ = timed(lambda: engine.generate(items))
    prepared = items = []  # free the frames
    # (b) one LLM.chat per clip; (c) one LLM.chat over the list
    results["b_loop_llm_chat"], _ = timed(
        lambda: [
            llm.chat(m, engine.params, use_tqdm=False, mm_processor_kwargs={"num_frames": args.frames})
            for m in messages
        ]  # fmt: skip
    )
    results["c_llm_chat_list"], _ = timed(
        lambda: llm.chat(
            messages, engine.params, use_tqdm=False, mm_processor_kwargs={"num_frames": args.frames}
        )
    )
    # (d) the batch job on this machine (the same engine): with the decoding workers already
    # started (as the engine is), and cold (the job starts its workers, which import transformers)
    for name, reuse in (("d_batch", pool), ("d_batch_cold_workers", None)):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "d.jsonl"
            results[name], summary = timed(
                lambda reuse=reuse, out=out: batch.run(
                    model,
                    [str(c) for c in clips],
                    out,
                    prompt=PROMPT,
                    engine=engine,
                    num_frames=args.frames,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    workers=workers,
                    decode_workers_pool=reuse,
                    progress=False,
                )  # fmt: skip
            )
            assert summary.done == n, summary
    pool.close()
    engine.close()

    if args.ray:
        results["e_batch_ray"] = run_ray(model, clips, args)

    rate = {k: n / v for k, v in results.items()}
    print(f"\n{'path':24s} {'seconds':>9s} {'videos/s':>9s}")
    for k in results:
        print(f"{k:24s} {results[k]:9.2f} {rate[k]:9.3f}")
    bound = min(rate["bound_decode"], rate["bound_engine"])
    ratios = {
        "d/a": rate["d_batch"] / rate["a_loop_transformers"],
        "d/c": rate["d_batch"] / rate["c_llm_chat_list"],
        "d/b": rate["d_batch"] / rate["b_loop_llm_chat"],
        "d/min(bounds)": rate["d_batch"] / bound,
    }
    if "e_batch_ray" in rate:
        ratios["e/d"] = rate["e_batch_ray"] / rate["d_batch"]
    print("\n" + "  ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"seconds": results, "videos_per_s": rate, "ratios": ratios}, indent=1)
        )
    return 0


def run_ray(model: str, clips: list[Path], args: argparse.Namespace) -> float:
    """(e): ``batch --ray`` through the CLI on a local two-node cluster (start-up not timed)."""
    from llava_next_video_hf.vllm_plugin.testing import free_port

    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = [
        "--block",
        "--num-cpus",
        "2",
        "--object-store-memory",
        str(300 * 1024**2),
        "--node-ip-address",
        "127.0.0.1",
    ]
    procs = [subprocess.Popen([ray_bin, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                              env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        time.sleep(8)
        procs.append(subprocess.Popen([ray_bin, "start", "--address", f"127.0.0.1:{port}", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        time.sleep(8)
        with tempfile.TemporaryDirectory() as tmp:
            listing = Path(tmp) / "clips.txt"
            listing.write_text("\n".join(map(str, clips)) + "\n")
            cmd = [sys.executable, "-m", "llava_next_video_hf.cli", "batch", model, str(listing), "-o",
                   str(Path(tmp) / "e.jsonl"), "--prompt", PROMPT, "--frames", str(args.frames),
                   "--max-new-tokens", str(args.new_tokens), "--ray", "--ray-address", f"127.0.0.1:{port}",
                   "--replicas", "2", "--no-progress"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(cmd, env=env, check=True)
            return time.perf_counter() - start  # includes the replicas' engine start-up
    finally:
        import signal

        for proc in reversed(procs):  # the worker node, then the head: their whole process groups
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=20)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue


if __name__ == "__main__":
    sys.exit(main())
