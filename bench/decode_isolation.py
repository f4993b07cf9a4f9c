"""What decoding in worker processes costs: ``DecodePool.load_video`` vs in-process ``load_video``.

Usage:
    .venv/bin/python bench/decode_isolation.py [--repeats 7] [--videos 24] [--workers 2]

Measured in one run, on the same clips (synthetic H.264, keyframe every 2 s, cached in a temp dir):

* latency: one video at a time, median of ``--repeats`` (in-process and pool calls interleaved; the
  pool warm, one worker busy at a time);
* throughput: ``--videos`` videos loaded by ``--workers`` callers at once: threads calling
  ``load_video`` in-process vs the same number of pool workers (videos/s), and the pool decoding
  but sending back only the frames' shape (what the transfer costs);
* result transfer: a job returning a frames-sized uint8 array (through ``memfd`` shared memory)
  vs the same bytes pickled through the pipe;
* start-up: a pool's first answer, and a job right after a worker crash (its replacement starting).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# Jobs for the workers (found by module name: this file's folder is on the workers' sys.path).


def frames_array(nbytes: int) -> np.ndarray:
    return np.ones(nbytes, dtype=np.uint8)


def frames_bytes(nbytes: int) -> bytes:
    return np.ones(nbytes, dtype=np.uint8).tobytes()


def decode_shape(path: str, num_frames: int) -> tuple:
    """Decode in the worker but send back only the shape: the pool's cost without the transfer."""
    from llava_next_video_hf.video_io import load_video

    return load_video(path, num_frames=num_frames)[0].shape


def crash() -> None:
    os._exit(9)


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from llava_next_video_hf import testing
    from llava_next_video_hf.video_io import DecodePool, DecoderCrashError, load_video

    me = importlib.import_module(Path(__file__).stem)  # jobs pickled by module name, not __main__
    root = Path(tempfile.mkdtemp(prefix="decode-isolation-"))
    clips = {
        "640x360 20 s": (
            testing.make_video(root / "a.mp4", num_frames=600, fps=30, width=640, height=360),
            32,
        ),
        "1280x720 10 s": (
            testing.make_video(root / "b.mp4", num_frames=300, fps=30, width=1280, height=720),
            32,
        ),
        "320x240 10 s": (
            testing.make_video(root / "c.mp4", num_frames=300, fps=30, width=320, height=240),
            8,
        ),
    }
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}")  # fmt: skip

    t = time.perf_counter()
    pool = DecodePool(workers=args.workers)
    pool.submit(me.frames_array, 1).result()
    startup = time.perf_counter() - t
    with pool:
        print("\n## latency (one video at a time, median ms)\n")
        print(
            "| clip | frames | output MB | in-process | pool | overhead | ratio |\n|---|---|---|---|---|---|---|"
        )
        for name, (path, n) in clips.items():
            frames, _ = load_video(path, num_frames=n)
            pool.load_video(path, num_frames=n)  # warm both
            inproc, pooled = [], []
            for _ in range(args.repeats):
                inproc.append(_median_ms(lambda p=path, k=n: load_video(p, num_frames=k), 1))
                pooled.append(_median_ms(lambda p=path, k=n: pool.load_video(p, num_frames=k), 1))
            a, b = statistics.median(inproc), statistics.median(pooled)
            print(
                f"| {name} | {n} | {frames.nbytes / 1e6:.1f} | {a:.1f} | {b:.1f} | {b - a:+.1f} ms | {b / a:.2f} |"
            )

        print(f"\n## throughput ({args.videos} videos, {args.workers} at a time, videos/s)\n")
        print(
            "| clip | in-process threads | pool workers | ratio | pool, shape only (no transfer) |\n"
            "|---|---|---|---|---|"
        )
        for name, (path, n) in clips.items():
            # Results are dropped as they arrive, as a server hands them on.
            with ThreadPoolExecutor(args.workers) as threads:
                t = time.perf_counter()
                for _ in threads.map(lambda _, p=path, k=n: load_video(p, num_frames=k), range(args.videos)):
                    pass
                a = args.videos / (time.perf_counter() - t)
            t = time.perf_counter()
            pending: deque = deque()
            for _ in range(args.videos):  # keep every worker busy, two jobs queued per worker
                pending.append(pool.submit_load_video(path, num_frames=n))
                if len(pending) >= 2 * args.workers:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
            b = args.videos / (time.perf_counter() - t)
            t = time.perf_counter()
            for f in [pool.submit(me.decode_shape, str(path), n) for _ in range(args.videos)]:
                f.result()
            c = args.videos / (time.perf_counter() - t)
            print(f"| {name} | {a:.1f} | {b:.1f} | {b / a:.2f} | {c:.1f} |")

        print("\n## result transfer (median ms)\n")
        print("| bytes | shared memory (memfd) | pickled through the pipe |\n|---|---|---|")
        for nbytes in (22_118_400, 88_473_600):  # 32 frames of 640x360 / 1280x720
            shm = _median_ms(lambda k=nbytes: pool.submit(me.frames_array, k).result(), args.repeats)
            pipe = _median_ms(lambda k=nbytes: pool.submit(me.frames_bytes, k).result(), args.repeats)
            print(f"| {nbytes / 1e6:.1f} MB | {shm:.1f} | {pipe:.1f} |")

        t = time.perf_counter()
        try:
            pool.submit(me.crash).result()
        except DecoderCrashError:
            pass
        crash_ms = 1000 * (time.perf_counter() - t)
        path, n = clips["320x240 10 s"]
        t = time.perf_counter()
        for _ in range(args.workers):  # the crashed slot's replacement answers one of these
            pool.load_video(path, num_frames=n)
        after = 1000 * (time.perf_counter() - t)
        print(f"\npool start-up to first answer: {startup * 1000:.0f} ms; a crash reported in {crash_ms:.0f} ms; "
              f"{args.workers} jobs right after it (one worker restarting): {after:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
