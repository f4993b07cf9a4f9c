"""Benchmark: wall time, CPU time and peak RSS of the package's light entry points, fresh interpreters.

Usage:
    .venv/bin/python bench/imports.py [--repeats 5] [--src DIR]

Each case runs in a new interpreter (``fork`` + ``exec``; the child's rusage from ``os.wait4``):
``import llava_next_video_hf``, ``import llava_next_video_hf.video_io``, ``llava-next-video --help``
(as ``python -m llava_next_video_hf.cli --help``) and ``python -c pass`` as the floor. ``--src`` puts
another source tree first on ``PYTHONPATH`` (e.g. an older checkout's ``src`` for a before/after).
Prints the median of ``--repeats`` runs as a Markdown table row per case.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

CASES = {
    "import llava_next_video_hf": ["-c", "import llava_next_video_hf"],
    "import llava_next_video_hf.video_io": ["-c", "import llava_next_video_hf.video_io"],
    "llava-next-video --help": ["-m", "llava_next_video_hf.cli", "--help"],
    "python -c pass (floor)": ["-c", "pass"],
}


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, user + system CPU s, peak RSS MiB) of one fresh interpreter running ``argv``."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: silence stdout, become the interpreter
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execve(sys.executable, [sys.executable, *argv], env)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{argv} failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--src", type=Path, help="source tree to import from (default: src/ of this repo)")
    args = parser.parse_args()
    src = (args.src or Path(__file__).resolve().parents[1] / "src").resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    print(f"source: {src}; median of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    print("| what | wall (s) | CPU (s) | peak RSS (MiB) |\n|---|---|---|---|")
    for name, argv in CASES.items():
        runs = [run_once(argv, env) for _ in range(args.repeats)]
        wall, cpu, rss = (statistics.median(column) for column in zip(*runs, strict=True))
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
