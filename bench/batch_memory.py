"""Benchmark: peak memory of ``llava-next-video batch`` does not grow with the number of rows or clip length.

Usage:
    PYTHONPATH=src .venv/bin/python bench/batch_memory.py [--rows 200 1000] [--engine hf] [--workers 2]

Makes the largest ``--rows`` count of short synthetic clips (cached in
~/.cache/llava_next_video_hf/bench/batch_memory), then runs the ``batch`` command (the embedded tiny
checkpoint, 8 frames, 8 new tokens) on the first N of them for each N, plus one run on a few
10-minute clips, sampling the resident memory of the job's process and of its whole process tree
(the job + its decoding workers) every 0.1 s. Prints the peaks and their ratio to the smallest run:
the job holds at most ``workers + queue_size`` prepared videos outside the engine, so the peaks
should not follow N, and a 10-minute clip costs what a 10-second one does at the same frame count.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CACHE = Path.home() / ".cache" / "llava_next_video_hf" / "bench" / "batch_memory"


def make_clips(n: int, seconds: float, prefix: str, size: tuple[int, int] = (160, 120)) -> list[Path]:
    from llava_next_video_hf import testing

    CACHE.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(n):
        path = CACHE / f"{prefix}{i:05d}.mp4"
        if not path.exists():
            frames = max(2, int(seconds * 10))
            testing.make_video(path, num_frames=frames, fps=10, width=size[0], height=size[1], seed=i)
        clips.append(path)
    return clips


def peak_rss(cmd: list[str]) -> tuple[float, float, float, int]:
    """Run ``cmd``; return (seconds, peak RSS of the process in MiB, peak RSS of its tree in MiB, rc)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    top = psutil.Process(proc.pid)
    own = tree = 0
    while proc.poll() is None:
        try:
            rss = top.memory_info().rss
            total = rss + sum(c.memory_info().rss for c in top.children(recursive=True))
        except psutil.Error:
            total = rss = 0
        own, tree = max(own, rss), max(tree, total)
        time.sleep(0.1)
    return time.perf_counter() - start, own / 2**20, tree / 2**20, proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[200, 1000])
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--long-clips", type=int, default=2, help="10-minute clips in the clip-length run")
    args = p.parse_args()

    from llava_next_video_hf.cli import default_checkpoint

    ckpt = str(default_checkpoint())
    short = make_clips(max(args.rows), 3.0, "short")
    runs: list[tuple[str, list[Path]]] = [(f"{n} rows of 3 s clips", short[:n]) for n in args.rows]
    if args.long_clips:
        ten_s = make_clips(args.long_clips, 10.0, "ten_s", (640, 360))
        ten_min = make_clips(args.long_clips, 600.0, "ten_min", (640, 360))
        runs += [(f"{args.long_clips} clips of 10 s, 640x360", ten_s)]
        runs += [(f"{args.long_clips} clips of 10 min, 640x360", ten_min)]
    script = Path(sys.executable).with_name("llava-next-video")
    print(f"# {platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| run | seconds | rows/s | peak RSS job (MiB) | peak RSS job + workers (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for name, clips in runs:
        with tempfile.TemporaryDirectory() as tmp:
            listing = Path(tmp) / "videos.txt"
            listing.write_text("".join(f"{c}\n" for c in clips))
            cmd = [
                str(script), "batch", ckpt, str(listing), "-o", str(Path(tmp) / "out.jsonl"),
                "--engine", args.engine, "--frames", "8", "--max-new-tokens", "8",
                "--workers", str(args.workers), "--no-progress", "--prompt", "Describe this video.",
            ]  # fmt: skip
            seconds, own, tree, rc = peak_rss(cmd)
            done = sum(1 for _ in open(Path(tmp) / "out.jsonl")) if (Path(tmp) / "out.jsonl").exists() else 0
        status = "" if rc == 0 and done == len(clips) else f" (rc {rc}, {done}/{len(clips)} records)"
        print(f"| {name}{status} | {seconds:.1f} | {len(clips) / seconds:.1f} | {own:.0f} | {tree:.0f} |")


if __name__ == "__main__":
    main()
