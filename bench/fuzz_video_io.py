"""Fuzz ``video_io.load_video`` with thousands of damaged clips (the large run; the tests run 150).

Usage:
    .venv/bin/python bench/fuzz_video_io.py [--mutants 2400] [--seed 0] [--workers N]
        [--deadline 60] [--kinds h264-mp4 ...] [--sizes 128x96 320x240] [--frames 30] [--rounds 1]
        [--num-frames 8] [--save DIR]
    make fuzz ARGS="--mutants 5000"

Clips: every kind in ``llava_next_video_hf.testing.fuzz.CLIP_KINDS`` (H.264 with and without
B-frames in mp4/Matroska/MPEG-TS, HEVC, VP9, AV1, MPEG-4 part 2 in AVI, MJPEG in MOV, MPEG-2 in
MPEG-TS), encoded with PyAV at each ``--sizes`` (``--frames`` frames, 10 fps). Each mutant (1 to ``--rounds``
of: bit flips, zeroed runs, cuts, duplicated/inserted bytes, a damaged header, swapped chunks) is
loaded with ``load_video(data, num_frames=--num-frames)`` in a ``DecodePool`` worker under ``--deadline`` seconds of wall
time. Prints the counts (decoded / refused / escaped / crashed / hung) overall, per clip kind and
per mutation, and up to 10 examples of each bad outcome; ``--save DIR`` writes the mutants that
escaped, crashed or hung there for replay. Exits 1 if any escaped, crashed or hung.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from llava_next_video_hf.testing import fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument(
        "--kinds", nargs="+", default=sorted(fuzz.CLIP_KINDS), choices=sorted(fuzz.CLIP_KINDS)
    )
    parser.add_argument("--sizes", nargs="+", default=["128x96", "320x240"])
    parser.add_argument("--frames", type=int, default=30, help="frames per clip (10 fps, keyframe every 10)")
    parser.add_argument("--rounds", type=int, default=1, help="up to this many mutations per mutant")
    parser.add_argument("--num-frames", type=int, default=8, help="load_video(num_frames=...)")
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    clips = {}
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        made_clips = fuzz.make_clips(
            args.kinds, num_frames=args.frames, width=width, height=height, seed=args.seed
        )
        for kind, data in made_clips.items():
            clips[f"{kind}@{size}"] = data
    made = time.monotonic() - t0
    keep: list = []
    report = fuzz.run_fuzz(
        args.mutants,
        seed=args.seed,
        clips=clips,
        workers=args.workers,
        deadline_s=args.deadline,
        keep=keep,
        num_frames=args.num_frames,
        max_rounds=args.rounds,
    )
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, python {platform.python_version()}"
    )
    print(f"clips: {len(clips)} ({made:.1f} s to encode); {report.summary()}")
    print("\n| by | decoded | refused | escaped | crashed | hung |\n|---|---|---|---|---|---|")
    for title, table in (("kind", report.by_kind), ("mutation", report.by_mutation)):
        for name in sorted(table):
            row = " | ".join(str(table[name].get(o, 0)) for o in fuzz.OUTCOMES)
            print(f"| {title} {name} | {row} |")
    for outcome, examples in report.examples.items():
        print(f"\n{outcome}: {len(examples)}")
        for line in examples[:10]:
            print("  ", line)
    if args.save and keep:
        args.save.mkdir(parents=True, exist_ok=True)
        for i, (kind, mutation, data) in enumerate(keep):
            (args.save / f"{i:04d}-{kind}-{mutation}.bin").write_bytes(data)
        print(f"saved {len(keep)} mutants to {args.save}")
    bad = sum(report.counts.get(o, 0) for o in ("escaped", "crashed", "hung"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
