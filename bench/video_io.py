"""Benchmark: sampling 32 frames from long clips, ours vs transformers' PyAV loader (the anchor).

Usage:
    .venv/bin/python bench/video_io.py [--frames 32] [--repeats 3] [--clips 5 60 5:30 5:250]

Each clip is ``MINUTES[:GOP]``: a synthetic 640x360 30 fps H.264 clip (libx264 ultrafast, no
B-frames) of that length with a keyframe every GOP frames (default 60 = 2 s). Clips are generated
once and cached in ``~/.cache/llava_next_video_hf/bench/``. Every measurement runs in a fresh subprocess, so the
peak RSS (``ru_maxrss``) belongs to that one call. Each child imports both loaders before the
clock starts, so the baseline RSS is the same for both and the import time is not counted.
The wall time is the median over ``--repeats`` runs.

Prints one table per clip with the speed-up (anchor time / ours) and the memory ratio
(anchor peak RSS / ours), and checks that our frames carry the sampled indices.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(
    os.environ.get("LLAVA_NEXT_VIDEO_BENCH_CACHE", "~/.cache/llava_next_video_hf/bench")
).expanduser()
WIDTH, HEIGHT, FPS = 640, 360, 30


def clip_path(minutes: int, gop: int = 2 * FPS) -> Path:
    """Cached synthetic clip of ``minutes`` minutes with a keyframe every ``gop`` frames."""
    path = CACHE / f"synthetic_{minutes}min_{WIDTH}x{HEIGHT}_{FPS}fps_gop{gop}.mp4"
    if not path.exists():
        from llava_next_video_hf.synthetic import make_video

        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial.mp4")
        t0 = time.perf_counter()
        make_video(tmp, num_frames=minutes * 60 * FPS, fps=FPS, width=WIDTH, height=HEIGHT, gop=gop)
        tmp.rename(path)
        print(f"  generated {path.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(loader: str, path: str, frames: int) -> None:
    """Run one load in this (fresh) process and print a JSON line with the figures."""
    import resource

    from transformers.video_utils import load_video as hf_load_video

    from llava_next_video_hf.synthetic import read_frame_index
    from llava_next_video_hf.video_io import load_video

    base = _rss_now_mb()
    t0 = time.perf_counter()
    if loader == "ours":
        video, meta = load_video(path, num_frames=frames)
        indices = meta.frames_indices
        extra = {"decode_mode": meta.decode_mode, "frames_decoded": meta.frames_decoded, "seeks": meta.seeks}
    else:
        video, meta = hf_load_video(path, num_frames=frames, backend="pyav")
        indices = [int(i) for i in meta.frames_indices]
        # Its loop decodes every frame up to the last index, plus one more before it breaks.
        extra = {"decode_mode": "sequential", "frames_decoded": indices[-1] + 2, "seeks": 0}
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    pixels_ok = [read_frame_index(f) for f in video] == indices
    print(
        json.dumps(
            {
                "wall_s": wall,
                "peak_rss_mb": peak,
                "base_rss_mb": base,
                "shape": list(video.shape),
                "pixels_ok": pixels_ok,
                **extra,
            }
        )
    )


def run_child(loader: str, path: Path, frames: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", loader, str(path), str(frames)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", nargs="+", default=["5", "60"], help="MINUTES[:GOP] (GOP default 60)")
    parser.add_argument("--child", nargs=3, metavar=("LOADER", "PATH", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    import av
    import transformers

    print(
        f"python {platform.python_version()}, av {av.__version__}, transformers {transformers.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    rows = []
    for spec in args.clips:
        minutes_s, _, gop_s = spec.partition(":")
        minutes, gop = int(minutes_s), int(gop_s or 2 * FPS)
        path = clip_path(minutes, gop)
        size_mb = path.stat().st_size / 2**20
        results: dict[str, list[dict]] = {"ours": [], "transformers": []}
        for _ in range(args.repeats):
            for loader in results:
                results[loader].append(run_child(loader, path, args.frames))
        summary = {}
        for loader, runs in results.items():
            summary[loader] = {
                "wall_s": statistics.median(r["wall_s"] for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "delta_rss_mb": max(r["peak_rss_mb"] - r["base_rss_mb"] for r in runs),
                "runs": runs,
            }
        ours, hf = summary["ours"], summary["transformers"]
        rows.append((minutes, gop, size_mb, ours, hf))
        print(
            f"\n{minutes} min clip, GOP {gop} ({minutes * 60 * FPS} frames, {size_mb:.1f} MiB), {args.frames} frames, "
            f"median of {args.repeats}:"
        )
        print(f"  ours: {json.dumps(ours['runs'][0] | {'wall_s': None})}")
        print(f"  transformers: {json.dumps(hf['runs'][0] | {'wall_s': None})}")

    header = (
        "| clip | loader | frames decoded | wall (s) | peak RSS (MiB) | RSS growth in call (MiB) | speed-up "
        "| peak RSS ratio (anchor/ours) | growth ratio (anchor/ours) |"
    )
    print("\n" + header)
    print("|" + "---|" * 9)
    for minutes, gop, size_mb, ours, hf in rows:
        speed = hf["wall_s"] / ours["wall_s"]
        mem = hf["peak_rss_mb"] / ours["peak_rss_mb"]
        growth = hf["delta_rss_mb"] / max(ours["delta_rss_mb"], 1e-9)
        name = f"{minutes} min, GOP {gop} ({size_mb:.0f} MiB)"
        print(
            f"| {name} | transformers pyav | {hf['runs'][0]['frames_decoded']} | {hf['wall_s']:.3f} | {hf['peak_rss_mb']:.0f} | "
            f"{hf['delta_rss_mb']:.0f} | 1.0x | | |"
        )
        print(
            f"| {name} | ours ({ours['runs'][0]['decode_mode']}) | {ours['runs'][0]['frames_decoded']} | "
            f"{ours['wall_s']:.3f} | {ours['peak_rss_mb']:.0f} | "
            f"{ours['delta_rss_mb']:.0f} | {speed:.1f}x | {mem:.2f} | {growth:.2f} |"
        )


if __name__ == "__main__":
    main()
