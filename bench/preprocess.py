"""Benchmark: video preprocessing (32 frames of 640x360) against decoding those frames, same run.

Usage:
    .venv/bin/python bench/preprocess.py [--frames 32] [--repeats 7] [--seconds 60]

Decodes ``--frames`` frames from a cached synthetic 640x360 30 fps H.264 clip with
``video_io.load_video`` (the anchor: what every request pays anyway), then preprocesses the decoded
uint8 frames with our video processor's default (``resize_backend="pil"``, bit-equal to the
original's per-frame CLIP processing), its ``"torch"`` path (transformers' video processor
semantics) and transformers' PIL ``CLIPImageProcessor`` called frame by frame (what the original
code does). Prints the median wall time of each and its ratio to the decode time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

CACHE = Path(
    os.environ.get("LLAVA_NEXT_VIDEO_BENCH_CACHE", "~/.cache/llava_next_video_hf/bench")
).expanduser()
WIDTH, HEIGHT, FPS = 640, 360, 30


def clip_path(seconds: int) -> Path:
    """Cached synthetic 640x360 clip of ``seconds`` seconds (keyframe every 2 s)."""
    path = CACHE / f"synthetic_{seconds}s_{WIDTH}x{HEIGHT}_{FPS}fps_gop60.mp4"
    if not path.exists():
        from llava_next_video_hf.testing.synthetic import make_video

        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial.mp4")
        make_video(tmp, num_frames=seconds * FPS, fps=FPS, width=WIDTH, height=HEIGHT, gop=2 * FPS)
        tmp.rename(path)
    return path


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (imports, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()

    import numpy as np
    import torch
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from llava_next_video_hf.processing import LlavaNextVideoAnyResVideoProcessor
    from llava_next_video_hf.video_io import load_video

    path = clip_path(args.seconds)
    frames, _ = load_video(path, num_frames=args.frames)
    frames = np.asarray(frames)
    vp = LlavaNextVideoAnyResVideoProcessor()
    clip = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})

    pil = vp(frames)["pixel_values_videos"][0].numpy()
    ref = np.stack([clip(f, return_tensors="np")["pixel_values"][0] for f in frames])
    assert np.abs(pil - ref).max() == 0.0, "the default path is not bit-equal to CLIPImageProcessor"

    rows = [
        ("decode (video_io.load_video)", lambda: load_video(path, num_frames=args.frames)),
        ("ours, resize_backend='pil' (default)", lambda: vp(frames)),
        ("ours, resize_backend='torch'", lambda: vp(frames, resize_backend="torch")),
        ("CLIPImageProcessor (PIL) per frame", lambda: [clip(f, return_tensors="np") for f in frames]),
    ]
    print(
        f"# {args.frames} frames of {WIDTH}x{HEIGHT} from a {args.seconds} s clip; median of {args.repeats}; "
        f"torch threads {torch.get_num_threads()}; {platform.processor() or platform.machine()}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    decode = None
    print("| step | wall (ms) | ratio to decode |\n|---|---|---|")
    for name, fn in rows:
        t = median_time(fn, args.repeats)
        decode = decode or t
        print(f"| {name} | {t * 1000:.1f} | {t / decode:.2f} |", flush=True)


if __name__ == "__main__":
    main()
