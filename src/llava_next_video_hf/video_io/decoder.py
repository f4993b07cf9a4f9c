"""Decoding the sampled frames of an encoded source (:class:`_Decoder`): sequentially from the start,
or by seeking through an index, in contiguous groups of samples on several threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import VideoLoadError
from .index import _Index
from .output import _Output
from .sources import _READ_ERRORS, _reason, _Source


class _SeekUnreliable(Exception):
    """Seeking gave results that cannot be trusted; decode sequentially instead."""


#: Frames that one seek is worth: decoding forward is preferred while it costs fewer frames.
_SEEK_COST_FRAMES = 8
#: Below this many frames to decode, one thread does the work (a thread and a container cost more).
_MIN_FRAMES_PER_THREAD = 48


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _tail_tolerance(total: int) -> int:
    """Frames a container's frame count may overstate before we call the file truncated."""
    return max(3, total // 100)


class _TruncatedDecode(VideoLoadError):
    """Fewer frames decode than the index counted (``readable`` of them did)."""

    def __init__(self, message: str, readable: int):
        super().__init__(message)
        self.readable = readable


def _truncated(desc: str, readable: int, total: int, target: int, error: str | None) -> _TruncatedDecode:
    detail = f" ({error})" if error else ""
    return _TruncatedDecode(
        f"{desc}: truncated or corrupt: only {readable} of {total} frames could be decoded, "
        f"frame {target} is missing{detail}",
        readable,
    )


def _set_codec_threads(stream: Any, codec_threads: int) -> None:
    """1: decode on the calling thread only; 0: FFmpeg's frame/slice threads on every core."""
    if codec_threads == 1:
        stream.thread_type = "NONE"
        stream.thread_count = 1
    else:
        stream.thread_type = "AUTO"


class _Decoder:
    """Decodes the sampled frames of one encoded source."""

    def __init__(self, source: _Source, deadline_s: float | None = None):
        self.source = source
        self.deadline_s = deadline_s
        self._deadline_at = time.monotonic() + deadline_s if deadline_s is not None else None
        self.frames_decoded = 0
        self.seeks = 0
        self.fresh: tuple[Any, Any] | None = None
        self.index_container: Any = None
        self.index_container_unread = False  # nothing decoded from it yet: a group may use it
        self._lock = threading.Lock()

    def check_deadline(self) -> None:
        """Raise once the decode deadline has passed (called on every packet and frame)."""
        if self._deadline_at is not None and time.monotonic() > self._deadline_at:
            raise VideoLoadError(
                f"{self.source.desc}: decoding took longer than the deadline of {self.deadline_s:g} s "
                "(deadline_s); the file may be damaged or too long to decode"
            )

    def close(self) -> None:
        """Close a container opened but never used."""
        if self.fresh is not None:
            self.fresh[0].close()
            self.fresh = None

    def close_all(self) -> None:
        """Close every container still open (the one the container index reads from too)."""
        self.close()
        if self.index_container is not None:
            self.index_container.close()
            self.index_container = None

    def _open_stream(self, codec_threads: int = 0) -> tuple[Any, Any]:
        with self._lock:
            opened, self.fresh = self.fresh, None
        if opened is not None:  # opened by the caller and not read from yet
            container, stream = opened
        else:
            container = self.source.open()
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["none"]
                container.close()
                raise VideoLoadError(
                    f"{self.source.desc}: no video stream (streams found: {', '.join(kinds)})"
                )
            stream = container.streams.video[0]
            if stream.codec_context is None:
                container.close()
                raise VideoLoadError(
                    f"{self.source.desc}: the video stream has no decoder (unknown codec; the stream "
                    "header may be damaged)"
                )
        _set_codec_threads(stream, codec_threads)
        return container, stream

    def _count(self, decoded: int, seeks: int) -> None:
        with self._lock:
            self.frames_decoded += decoded
            self.seeks += seeks

    # -- sequential ---------------------------------------------------------------------------

    def sequential(self, out: _Output, total: int, index: _Index | None, codec_threads: int = 0) -> None:
        """Decode from the start, keeping only the sampled frames: frame i = the i-th one out
        (``codec_threads=1``: on the calling thread only, as ``threads=1`` asks)."""
        container, stream = self._open_stream(codec_threads)
        decoded = 0
        try:
            remaining = list(out.targets)
            wanted = set(remaining)
            last_target = remaining[-1]
            index_i = -1
            last_frame = None
            error = None
            frames = container.decode(stream)
            while True:
                self.check_deadline()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except _READ_ERRORS as exc:
                    error = _reason(exc)
                    break
                index_i += 1
                decoded += 1
                last_frame = frame
                if index_i in wanted:
                    time = index.time_of(index_i) if index is not None and index_i < index.total else None
                    out.put(index_i, frame, index_i, time)
                    wanted.discard(index_i)
                    if index_i >= last_target:
                        break
            readable = index_i + 1
            if wanted:
                missing = sorted(wanted)
                if readable == 0:
                    raise VideoLoadError(
                        f"{self.source.desc}: zero decodable frames"
                        + (f" ({error})" if error else "")
                        + "; the file may be truncated, corrupt or not a video"
                    )
                if missing[0] < readable or total - readable > _tail_tolerance(total):
                    raise _truncated(self.source.desc, readable, total, missing[0], error)
                # The container overstated its frame count by a few frames: use the last one.
                for target in missing:
                    out.put(target, last_frame, readable - 1, None)
        finally:
            self._count(decoded, 0)
            container.close()

    # -- seeking ------------------------------------------------------------------------------

    def plan(self, index: _Index, targets: list[int]) -> tuple[list[int], list[bool]]:
        """Frames each target costs and whether reaching it starts with a seek (one decoder)."""
        costs, seeks = [], []
        cursor: int | None = None
        for t in targets:
            k = index.key_before(t)
            start = 0 if k is None else k
            seek_cost = t - start + 1 + _SEEK_COST_FRAMES
            forward = t - cursor if cursor is not None else None
            if forward is not None and forward <= seek_cost:
                costs.append(forward)
                seeks.append(False)
            else:
                costs.append(t - start + 1)
                seeks.append(True)
            cursor = t
        return costs, seeks

    def decode_group(
        self, out: _Output, index: _Index, targets: list[int], codec_threads: int, reuse: bool = False
    ) -> None:
        """Decode ``targets`` (sorted) with one container: seek to the keyframe before a target
        (or decode forward when that is cheaper), then count frames up to it, checking each
        frame's timestamp against the index.

        With ``reuse``, the container the container index reads from (opened, nothing read yet)
        decodes this group, which saves opening the file once more; it stays open for the index.
        """
        shared = None
        if reuse and self.index_container_unread:
            shared, self.index_container_unread = self.index_container, False
        if shared is not None:
            container, stream = shared, shared.streams.video[0]
            _set_codec_threads(stream, codec_threads)
        else:
            container, stream = self._open_stream(codec_threads)
        frames: Iterator[Any] | None = None
        cursor = -1  # presentation index of ``current``
        current: Any = None
        decoded = seeks = 0

        def pull() -> Any:
            nonlocal decoded
            assert frames is not None
            self.check_deadline()
            try:
                frame = next(frames)
            except StopIteration:
                raise _SeekUnreliable(
                    f"the stream ends after frame {cursor}, the index lists {index.total} frames"
                ) from None
            except _READ_ERRORS as exc:
                raise _SeekUnreliable(f"decoding failed after frame {cursor} ({_reason(exc)})") from exc
            decoded += 1
            if frame.pts is None:
                raise _SeekUnreliable("decoded frames have no pts")
            return frame

        def advance() -> None:
            nonlocal cursor, current
            frame = pull()
            cursor += 1
            expected = index.expected_pts(cursor)
            if frame.pts != expected:
                raise _SeekUnreliable(
                    f"decoded frame {cursor} has pts {frame.pts}, the {index.kind} index says {expected}"
                )
            current = frame

        try:
            for t in targets:
                k = index.key_before(t)
                start = 0 if k is None else k
                seek_cost = t - start + 1 + _SEEK_COST_FRAMES
                if frames is not None and cursor < t and t - cursor <= seek_cost:
                    pass  # decode forward from the current position
                elif k is None or k == 0:
                    if frames is not None:  # decode from the very start, without seeking
                        if container is not shared:
                            container.close()
                        container, stream = self._open_stream(codec_threads)
                    frames = iter(container.decode(stream))
                    cursor, current = -1, None
                else:
                    try:
                        index.seek(container, stream, k)
                    except _READ_ERRORS as exc:
                        raise _SeekUnreliable(f"seek failed ({_reason(exc)})") from exc
                    seeks += 1
                    frames = iter(container.decode(stream))
                    # Frames shown before the keyframe (open-GOP leading frames) come out first.
                    frame = pull()
                    while not frame.key_frame:
                        frame = pull()
                    landed = index.identify_key(frame.pts, k)
                    if landed is None or landed > k:
                        raise _SeekUnreliable(
                            f"seeking to frame {k} lands on a keyframe with pts {frame.pts} that the "
                            f"{index.kind} index cannot place"
                        )
                    cursor, current = landed, frame
                while cursor < t:
                    advance()
                out.put(t, current, t, index.time_of(t))
        finally:
            self._count(decoded, seeks)
            if container is not shared:
                container.close()

    def seek_decode(self, out: _Output, index: _Index, threads: int | None) -> int:
        """Decode ``out.targets`` through the index, in contiguous groups on up to ``threads``
        threads (each with its own container); returns the number of threads used."""
        targets = out.targets
        costs, seeks = self.plan(index, targets)
        total_cost = sum(costs)
        if threads is None:
            threads = min(_cpu_count(), max(1, total_cost // _MIN_FRAMES_PER_THREAD))
        if self.source.fileobj is not None:
            threads = 1  # one file object cannot be read by several containers at once
        groups: list[list[int]] = []
        share = total_cost / max(1, threads)
        acc = 0.0
        for t, cost, seek in zip(targets, costs, seeks, strict=True):
            # A new group starts where its share is used up, preferably where a seek happens anyway
            # (a split elsewhere costs the new group one seek and the frames from its keyframe).
            if not groups or (acc >= share * (1.0 if seek else 1.25) and len(groups) < threads):
                groups.append([])
                acc = 0.0
            groups[-1].append(t)
            acc += cost
        if len(groups) == 1:
            # One group: FFmpeg's own frame threads may still use the cores, unless threads=1.
            self.decode_group(out, index, groups[0], codec_threads=1 if threads == 1 else 0, reuse=True)
            return 1
        with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="video_io") as pool:
            futures = [pool.submit(self.decode_group, out, index, g, 1, i == 0) for i, g in enumerate(groups)]
            errors = [f.exception() for f in futures]
        for error in errors:  # a clear error first, then an unreliable seek (fall back)
            if isinstance(error, VideoLoadError):
                raise error
        for error in errors:
            if error is not None:
                raise error
        return len(groups)
