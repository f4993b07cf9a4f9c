"""A fuzz harness for ``video_io.load_video``: damaged copies of synthetic clips, each loaded in a worker.

:func:`make_clips` encodes small clips with PyAV in several codecs and containers (no system
FFmpeg needed); :func:`mutate` damages one the way files get damaged (bit flips, zeroed runs, cut
files, duplicated or inserted bytes, a damaged header); :func:`run_fuzz` loads every mutant with
``load_video`` in a :class:`~llava_next_video_hf.video_io.DecodePool` worker under a wall-time
deadline and counts the outcomes:

* ``decoded``: frames came back;
* ``refused``: a ``VideoLoadError`` (the promised failure);
* ``escaped``: any other exception, or a ``VideoLoadError`` from ``load_video``'s last-resort
  backstop (an unexpected exception inside ``video_io``: a path the checks do not cover);
* ``crashed``: the worker process died (a crash inside FFmpeg);
* ``hung``: the worker ran past the deadline.

The tests run a small seeded batch (``tests/test_video_io_damaged.py``); ``bench/fuzz_video_io.py``
runs thousands.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Clip kinds: name -> ``make_video_bytes`` arguments (codec, container, B-frames).
CLIP_KINDS: dict[str, dict[str, Any]] = {
    "h264-mp4": {"codec": "h264", "container_format": "mp4"},
    "h264-bframes-mp4": {"codec": "h264", "container_format": "mp4", "bframes": 2},
    "h264-bframes-mkv": {"codec": "h264", "container_format": "matroska", "bframes": 2},
    "h264-ts": {"codec": "h264", "container_format": "mpegts"},
    "hevc-mp4": {"codec": "libx265", "container_format": "mp4"},
    "hevc-bframes-mkv": {"codec": "libx265", "container_format": "matroska", "bframes": 2},
    "vp9-webm": {"codec": "libvpx-vp9", "container_format": "webm"},
    "av1-mkv": {"codec": "libsvtav1", "container_format": "matroska"},
    "mpeg4-avi": {"codec": "mpeg4", "container_format": "avi"},
    "mjpeg-mov": {"codec": "mjpeg", "container_format": "mov"},
    "mpeg2-ts": {"codec": "mpeg2video", "container_format": "mpegts", "bframes": 2},
}

#: Kinds whose encoders are quick and quiet: the tests' seeded run uses these.
FAST_KINDS = (
    "h264-mp4",
    "h264-bframes-mp4",
    "h264-bframes-mkv",
    "h264-ts",
    "vp9-webm",
    "mpeg4-avi",
    "mjpeg-mov",
)

MUTATIONS = ("bitflip", "zero_run", "cut", "duplicate", "insert", "header", "swap")

OUTCOMES = ("decoded", "refused", "escaped", "crashed", "hung")


def make_clips(
    kinds: tuple[str, ...] | list[str] = tuple(CLIP_KINDS),
    *,
    num_frames: int = 30,
    fps: float = 10,
    width: int = 128,
    height: int = 96,
    seed: int = 0,
) -> dict[str, bytes]:
    """Encode one small synthetic clip per kind (frames carry their index; see ``synthetic``)."""
    from .synthetic import make_video_bytes

    clips = {}
    for kind in kinds:
        args = CLIP_KINDS[kind]
        clips[kind] = make_video_bytes(
            num_frames=num_frames, fps=fps, width=width, height=height, seed=seed, gop=10, **args
        )
    return clips


def mutate(data: bytes, rng: random.Random, mutation: str | None = None) -> tuple[str, bytes]:
    """Damage ``data`` one way (``mutation``, or one picked by ``rng``); ``(mutation, damaged bytes)``."""
    mutation = mutation or rng.choice(MUTATIONS)
    buf = bytearray(data)
    n = len(buf)
    if mutation == "bitflip":
        for _ in range(rng.randint(1, 32)):
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
    elif mutation == "zero_run":
        start = rng.randrange(n)
        length = rng.randint(1, max(1, n // 8))
        buf[start : start + length] = bytes(len(buf[start : start + length]))
    elif mutation == "cut":
        buf = buf[: rng.randint(1, n - 1)]
    elif mutation == "duplicate":
        start = rng.randrange(n)
        chunk = buf[start : start + rng.randint(1, max(1, n // 4))]
        at = rng.randrange(n)
        buf[at:at] = chunk
    elif mutation == "insert":
        at = rng.randrange(n)
        buf[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 256)))
    elif mutation == "header":
        # The first 5 % (at least 512 bytes) holds the container header and the stream's codec
        # parameters: flip, zero or randomise a few of its bytes.
        span = min(n, max(512, n // 20))
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(span)
            buf[i] = rng.choice((0, 0xFF, rng.getrandbits(8), buf[i] ^ (1 << rng.randrange(8))))
    elif mutation == "swap":
        a, b = sorted(rng.randrange(n) for _ in range(2))
        length = min(rng.randint(1, max(1, n // 8)), b - a)
        buf[a : a + length], buf[b : b + length] = buf[b : b + length], buf[a : a + length]
    else:
        raise ValueError(f"unknown mutation {mutation!r}; expected one of {MUTATIONS}")
    return mutation, bytes(buf)


def load_one(data: bytes, num_frames: int = 8, allow_truncated: bool = False) -> tuple[str, str]:
    """Run in a worker: ``load_video(data)`` and the outcome as ``(outcome, detail)``."""
    from ..errors import VideoLoadError
    from ..video_io import load_video

    try:
        extra = {"allow_truncated": True} if allow_truncated else {}
        frames, meta = load_video(data, num_frames=num_frames, **extra)
    except VideoLoadError as exc:
        if getattr(exc, "unexpected", False):
            return "escaped", f"backstop: {exc}"
        return "refused", str(exc)
    except Exception as exc:  # noqa: BLE001 - what the harness is here to find
        return "escaped", f"{type(exc).__name__}: {exc}"
    return "decoded", f"{frames.shape[0]} frames of {meta.total_num_frames}"


@dataclass
class FuzzReport:
    """Counts of outcomes (overall, per clip kind and per mutation) and examples of the bad ones."""

    counts: Counter = field(default_factory=Counter)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    by_mutation: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, kind: str, mutation: str, outcome: str, detail: str) -> None:
        self.counts[outcome] += 1
        self.by_kind.setdefault(kind, Counter())[outcome] += 1
        self.by_mutation.setdefault(mutation.split("+")[0], Counter())[outcome] += 1
        if outcome in ("escaped", "crashed", "hung"):
            self.examples.setdefault(outcome, []).append(f"{kind}/{mutation}: {detail[:300]}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        line = ", ".join(f"{o} {self.counts.get(o, 0)}" for o in OUTCOMES)
        return f"{self.total} mutants: {line} ({self.seconds:.1f} s)"


def run_fuzz(
    n: int,
    *,
    seed: int = 0,
    kinds: tuple[str, ...] | list[str] = FAST_KINDS,
    clips: dict[str, bytes] | None = None,
    workers: int | None = None,
    deadline_s: float = 30.0,
    num_frames: int = 8,
    keep: list[tuple[str, str, bytes]] | None = None,
    max_rounds: int = 1,
) -> FuzzReport:
    """Load ``n`` seeded mutants of the clips in a :class:`DecodePool`; the :class:`FuzzReport`.

    The same ``seed`` (and clips) gives the same mutants. Each mutant has 1 to ``max_rounds``
    mutations applied one after the other (named ``"cut+bitflip"``; counted under the first).
    ``keep`` (a list) receives ``(kind, mutation, bytes)`` of every mutant that escaped, crashed or
    hung, to replay them.
    """
    import time

    from ..video_io import DecodeDeadlineError, DecodePool, DecoderCrashError

    clips = clips if clips is not None else make_clips(kinds, seed=seed)
    rng = random.Random(seed)
    names = sorted(clips)
    mutants = []
    for _ in range(n):
        kind = rng.choice(names)
        mutation, data = mutate(clips[kind], rng)
        for _ in range(rng.randint(1, max_rounds) - 1 if max_rounds > 1 else 0):
            if len(data) < 2:
                break
            more, data = mutate(data, rng)
            mutation += f"+{more}"
        mutants.append((kind, mutation, data))
    report = FuzzReport()
    t0 = time.monotonic()
    with DecodePool(workers=workers, deadline_s=deadline_s) as pool:
        futures = [pool.submit(load_one, data, num_frames) for _, _, data in mutants]
        for (kind, mutation, data), future in zip(mutants, futures, strict=True):
            try:
                outcome, detail = future.result()
            except DecoderCrashError as exc:
                outcome, detail = "crashed", str(exc)
            except DecodeDeadlineError as exc:
                outcome, detail = "hung", str(exc)
            except Exception as exc:  # noqa: BLE001 - the job itself catches everything
                outcome, detail = "escaped", f"{type(exc).__name__}: {exc}"
            report.add(kind, mutation, outcome, detail)
            if keep is not None and outcome in ("escaped", "crashed", "hung"):
                keep.append((kind, mutation, data))
    report.seconds = time.monotonic() - t0
    return report


__all__ = [
    "CLIP_KINDS",
    "FAST_KINDS",
    "MUTATIONS",
    "OUTCOMES",
    "FuzzReport",
    "load_one",
    "make_clips",
    "mutate",
    "run_fuzz",
]
