"""Benchmark: sampling 32 frames from long clips with every loader at hand, in one table per clip.

Usage:
    .venv/bin/python bench/video_io.py [--frames 32] [--repeats 3] [--clips 5 60 5:30 5:250]
        [--decord-path DIR]

Loaders (each call in a fresh subprocess, so the peak RSS belongs to that one call):

* ``ours, 1 thread``: ``llava_next_video_hf.video_io.load_video(path, num_frames=N, threads=1)``
  (one core: FFmpeg's own threads off too);
* ``ours, auto``: the same with the default ``threads=None`` (sample groups on parallel threads,
  sized to the cores);
* ``transformers pyav``: ``transformers.video_utils.load_video(path, num_frames=N, backend="pyav")``;
* ``vLLM opencv``: ``vllm.multimodal.video.VideoBackend.load_bytes(data, num_frames=N)`` (the loader
  ``vllm serve`` uses by default; the file's bytes are read inside the timed call);
* ``decord``: ``decord.VideoReader(path).get_batch(np.linspace(0, len - 1, N))`` when decord imports
  (``--decord-path`` adds a folder it was ``pip install --target``-ed into; it is never a dependency);
* ``floor``: plain PyAV, one thread, decoding exactly the frames the samples need (from the keyframe
  before each sample, or forward from the previous sample when that is in the same GOP) and
  converting only the samples to RGB: the least single-threaded work an exact loader can do.

Each clip is ``MINUTES[:GOP]``: a synthetic 640x360 30 fps H.264 clip (libx264 ultrafast, no
B-frames) with a keyframe every GOP frames (default 60 = 2 s), cached in
``~/.cache/llava_next_video_hf/bench/``. "frames decoded" is counted: ours and the floor count
decoder output, transformers' and vLLM's calls run with a counting wrapper around PyAV's
``container.decode`` / OpenCV's ``grab``/``read``; decord's C++ decoder cannot be counted (n/a).
Wall = the call only (median of ``--repeats``); each child imports only its own loader before the
clock starts, and "growth" = peak RSS minus the RSS just before the call. Every loader's frames are
checked to carry the indices it reports.
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
LOADERS = ["ours-1", "ours-auto", "floor", "transformers", "vllm-opencv", "decord"]
LABELS = {
    "ours-1": "ours, 1 thread",
    "ours-auto": "ours, auto threads",
    "floor": "floor (PyAV, 1 thread)",
    "transformers": "transformers pyav",
    "vllm-opencv": "vLLM opencv",
    "decord": "decord",
}


def clip_path(minutes: int, gop: int = 2 * FPS) -> Path:
    """Cached synthetic clip of ``minutes`` minutes with a keyframe every ``gop`` frames."""
    path = CACHE / f"synthetic_{minutes}min_{WIDTH}x{HEIGHT}_{FPS}fps_gop{gop}.mp4"
    if not path.exists():
        from llava_next_video_hf.testing.synthetic import make_video

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


def _floor(path: str, frames: int, gop: int) -> tuple[list, list[int], int]:
    """Decode exactly what the samples need, single-threaded (the clip's GOP is known)."""
    import av
    import numpy as np

    container = av.open(path)
    stream = container.streams.video[0]
    stream.thread_type = "NONE"
    stream.thread_count = 1
    total = stream.frames
    step = int(round(1 / (float(stream.time_base) * FPS)))  # pts ticks per frame
    targets = np.linspace(0, total - 1, frames, dtype=int).tolist()
    out, decoded, position, it = [], 0, None, None
    for t in targets:
        key = t - t % gop
        if position is None or key > position:  # the sample's GOP starts after us: seek
            container.seek(key * step, stream=stream, backward=True)
            it, position = container.decode(stream), key - 1
        while position < t:
            frame = next(it)
            decoded += 1
            position += 1
        out.append(frame.to_ndarray(format="rgb24"))
    container.close()
    return out, targets, decoded


def child(loader: str, path: str, frames: int, gop: int, decord_path: str | None) -> None:
    """Run one load in this (fresh) process and print a JSON line with the figures."""
    import resource

    import numpy as np

    from llava_next_video_hf.testing.synthetic import read_frame_index

    counter = {"decoded": 0}
    if loader.startswith("ours"):
        from llava_next_video_hf.video_io import load_video
    elif loader == "transformers":
        import av
        from transformers.video_utils import load_video as hf_load_video

        real_open = av.open

        class Counting:  # counts the frames transformers pulls out of PyAV
            def __init__(self, container):
                self._c = container

            def decode(self, *args, **kwargs):
                for frame in self._c.decode(*args, **kwargs):
                    counter["decoded"] += 1
                    yield frame

            def __getattr__(self, name):
                return getattr(self._c, name)

        av.open = lambda *a, **k: Counting(real_open(*a, **k))
    elif loader == "vllm-opencv":
        import cv2
        from vllm.multimodal.video import VideoBackend

        real_capture = cv2.VideoCapture

        class CountingCapture:  # counts grab()/read(): each decodes one frame
            def __init__(self, *args):
                self._cap = real_capture(*args)

            def grab(self):
                counter["decoded"] += 1
                return self._cap.grab()

            def read(self):
                counter["decoded"] += 1
                return self._cap.read()

            def __getattr__(self, name):
                return getattr(self._cap, name)

        cv2.VideoCapture = CountingCapture
    elif loader == "decord":
        if decord_path:
            sys.path.insert(0, decord_path)
        import decord

    base = _rss_now_mb()
    t0 = time.perf_counter()
    extra: dict = {}
    if loader.startswith("ours"):
        video, meta = load_video(path, num_frames=frames, threads=1 if loader == "ours-1" else None)
        indices = meta.frames_indices
        counter["decoded"] = meta.frames_decoded
        extra = {
            "decode_mode": meta.decode_mode,
            "seeks": meta.seeks,
            "threads": meta.threads,
            "index": meta.index,
        }
    elif loader == "transformers":
        video, meta = hf_load_video(path, num_frames=frames, backend="pyav")
        indices = [int(i) for i in meta.frames_indices]
    elif loader == "vllm-opencv":
        video, meta = VideoBackend.load_bytes(Path(path).read_bytes(), num_frames=frames)
        indices = [int(i) for i in meta["frames_indices"]]
    elif loader == "decord":
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
        indices = np.linspace(0, len(reader) - 1, frames, dtype=int).tolist()
        video = reader.get_batch(indices).asnumpy()
        counter["decoded"] = None
    else:
        video, indices, counter["decoded"] = _floor(path, frames, gop)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    pixels_ok = [read_frame_index(np.asarray(f)) for f in video] == indices
    print(
        json.dumps(
            {
                "wall_s": wall,
                "peak_rss_mb": peak,
                "base_rss_mb": base,
                "frames": len(indices),
                "pixels_ok": pixels_ok,
                "frames_decoded": counter["decoded"],
                **extra,
            }
        )
    )


def run_child(loader: str, path: Path, frames: int, gop: int, decord_path: str | None) -> dict | None:
    cmd = [sys.executable, __file__, "--child", loader, str(path), str(frames), str(gop)]
    if decord_path:
        cmd += ["--decord-path", decord_path]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(
            f"  {loader}: failed ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})"
        )
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", nargs="+", default=["5", "60"], help="MINUTES[:GOP] (GOP default 60)")
    parser.add_argument("--loaders", nargs="+", default=LOADERS, choices=LOADERS)
    parser.add_argument("--decord-path", default=None, help="folder holding a pip --target install of decord")
    parser.add_argument(
        "--child", nargs=4, metavar=("LOADER", "PATH", "FRAMES", "GOP"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]), args.decord_path)
        return

    import av

    print(
        f"python {platform.python_version()}, av {av.__version__}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    tables = []
    for spec in args.clips:
        minutes_s, _, gop_s = spec.partition(":")
        minutes, gop = int(minutes_s), int(gop_s or 2 * FPS)
        path = clip_path(minutes, gop)
        size_mb = path.stat().st_size / 2**20
        runs: dict[str, list[dict]] = {loader: [] for loader in args.loaders}
        for _ in range(args.repeats):
            for loader in args.loaders:  # interleaved, so that load changes hit every loader
                result = run_child(loader, path, args.frames, gop, args.decord_path)
                if result is not None:
                    runs[loader].append(result)
        summary = {}
        for loader, results in runs.items():
            if not results:
                continue
            summary[loader] = {
                "wall_s": statistics.median(r["wall_s"] for r in results),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
                "delta_rss_mb": max(r["peak_rss_mb"] - r["base_rss_mb"] for r in results),
                "first": results[0],
                "pixels_ok": all(r["pixels_ok"] for r in results),
            }
        tables.append((minutes, gop, size_mb, summary))
        print(f"\n{minutes} min clip, GOP {gop}: " + json.dumps({k: v["first"] for k, v in summary.items()}))

    ours = "ours-auto"
    for minutes, gop, size_mb, summary in tables:
        print(
            f"\n**{minutes} min, {minutes * 60 * FPS} frames, GOP {gop} ({gop / FPS:g} s), {size_mb:.0f} MiB**, "
            f"{args.frames} frames, median of {args.repeats}; load average after: {os.getloadavg()[0]:.2f}\n"
        )
        print(
            "| loader | frames decoded | wall (s) | peak RSS (MiB) | RSS growth in call (MiB) "
            "| ours (auto) is faster by | frames ok |"
        )
        print("|---|---|---|---|---|---|---|")
        for loader, s in summary.items():
            decoded = s["first"]["frames_decoded"]
            ratio = s["wall_s"] / summary[ours]["wall_s"] if ours in summary else float("nan")
            threads = f" ({s['first']['threads']} threads)" if "threads" in s["first"] else ""
            print(
                f"| {LABELS[loader]}{threads} | {decoded if decoded is not None else 'n/a'} | {s['wall_s']:.3f} "
                f"| {s['peak_rss_mb']:.0f} | {s['delta_rss_mb']:.0f} | {ratio:.1f}x | {'yes' if s['pixels_ok'] else 'NO'} |"
            )


if __name__ == "__main__":
    main()
