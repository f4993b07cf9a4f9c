"""Presentation-order indexes, built before anything is decoded.

Frame ``i`` is the i-th frame shown (presentation order). An index maps ``i`` to the
timestamp the decoder gives that frame and to the keyframe decoding must start from, so that
every decoded frame can be checked against it; any disagreement makes the seek path give up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import VideoLoadError
from .stream import _StreamInfo


class _ContainerIndex:
    """The container's own sample table (mp4/mov), used when decode order is presentation order.

    Needs no pass over the file: FFmpeg reads the table with the header. Used only for streams
    without frame reordering whose table lists every frame; decoded timestamps must equal the
    table's, which the decoding loop checks frame by frame.
    """

    kind = "container"
    segments = 1

    def __init__(self, container: Any, stream: Any, time_base: float):
        self.container = container  # kept open while the entries are in use (closed by the caller)
        self.entries = stream.index_entries
        self.total = len(self.entries)
        self.time_base = time_base
        self.t0 = self.entries[0].timestamp

    def key_before(self, t: int) -> int | None:
        k = self.entries.search_timestamp(self.entries[t].timestamp, backward=True)
        return k if 0 <= k <= t else None

    def expected_pts(self, i: int) -> int:
        return self.entries[i].timestamp

    def time_of(self, i: int) -> float:
        return (self.entries[i].timestamp - self.t0) * self.time_base

    def seek(self, container: Any, stream: Any, k: int) -> None:
        container.seek(self.entries[k].timestamp, stream=stream, backward=True)

    def identify_key(self, pts: int, k: int) -> int | None:
        r = self.entries.search_timestamp(pts, backward=True, any_frame=True)
        return r if r >= 0 and self.entries[r].timestamp == pts else None


class _PacketIndex:
    """Presentation order built by one demuxing pass over the packets (no decoding).

    Packets are sorted by (segment, pts, decode order): a segment starts where the decoding
    timestamps of a format that allows discontinuities (MPEG-TS) jump back, as in
    concatenated files; equal timestamps keep their decode order. Timestamps relative to the
    start are continuous across segments. Seeks go by byte position when there are several
    segments (timestamps then repeat), by timestamp otherwise.
    """

    kind = "packets"

    def __init__(
        self,
        pts: list[int],
        dts: list[int | None],
        keys: list[bool],
        pos: list[int],
        time_base: float,
        ts_discont: bool,
        byte_seek: bool,
    ):
        n = len(pts)
        pts_arr = np.asarray(pts, dtype=np.int64)
        dts_arr = np.asarray(
            [d if d is not None else p for d, p in zip(dts, pts, strict=True)], dtype=np.int64
        )
        segment = np.zeros(n, dtype=np.int64)
        if ts_discont and n > 1:
            segment[1:] = np.cumsum(np.diff(dts_arr) < 0)
        order = np.lexsort((np.arange(n), pts_arr, segment))
        self.total = n
        self.time_base = time_base
        self.pts = pts_arr[order]
        self.segment = segment[order]
        self.segments = int(self.segment[-1]) + 1 if n else 0
        key_dec = np.asarray(keys, dtype=bool)
        key_pres = key_dec[order]
        self.keys = np.flatnonzero(key_pres)  # presentation indices of keyframes, sorted
        seek_ts = np.minimum(pts_arr, dts_arr)[order]
        self.key_seek_ts = seek_ts[self.keys]
        self.key_pos = np.asarray(pos, dtype=np.int64)[order][self.keys]
        self.byte_seek = self.segments > 1
        if self.byte_seek and (not byte_seek or (self.key_pos < 0).any()):
            raise _NoIndex("timestamps restart mid-stream and the format cannot seek by byte position")
        self.key_by_pts: dict[int, list[int]] = {}
        for k in self.keys.tolist():
            self.key_by_pts.setdefault(int(self.pts[k]), []).append(k)
        # Seconds from the start, continuous across segments (``self.segment`` is sorted).
        times = np.empty(n, dtype=np.float64)
        offset = 0.0
        bounds = np.searchsorted(self.segment, np.arange(self.segments + 1))
        for s in range(self.segments):
            lo, hi = int(bounds[s]), int(bounds[s + 1])
            seg_pts = self.pts[lo:hi]
            steps = np.diff(seg_pts)
            steps = steps[steps > 0]
            step = float(np.median(steps)) if steps.size else 0.0
            times[lo:hi] = offset + (seg_pts - seg_pts[0]) * time_base
            offset += float(seg_pts[-1] - seg_pts[0] + step) * time_base
        self.times = times
        self.duration = offset
        #: Seconds on the stream's clock where the last frame ends (one segment), else ``None``.
        self.end_time = float(self.pts[0]) * time_base + offset if self.segments == 1 else None

    def key_before(self, t: int) -> int | None:
        i = int(np.searchsorted(self.keys, t, side="right")) - 1
        return int(self.keys[i]) if i >= 0 else None

    def expected_pts(self, i: int) -> int:
        return int(self.pts[i])

    def time_of(self, i: int) -> float:
        return float(self.times[i])

    def _key_slot(self, k: int) -> int:
        return int(np.searchsorted(self.keys, k))

    def seek(self, container: Any, stream: Any, k: int) -> None:
        slot = self._key_slot(k)
        if self.byte_seek:
            container.seek(int(self.key_pos[slot]), unsupported_byte_offset=True)
        else:
            container.seek(int(self.key_seek_ts[slot]), stream=stream, backward=True)

    def identify_key(self, pts: int, k: int) -> int | None:
        if self.byte_seek:
            return k if pts == self.pts[k] else None
        found = self.key_by_pts.get(pts, [])
        return found[0] if len(found) == 1 else None


_Index = _ContainerIndex | _PacketIndex


class _NoIndex(Exception):
    """The file's frames cannot be put in presentation order without decoding them."""


def _scan_packets(
    container: Any,
    stream: Any,
    info: _StreamInfo,
    check: Callable[[], None] | None = None,
    drop_last: bool = False,
) -> _PacketIndex:
    """One demuxing pass (no decoding) over the video packets; ``check`` is called on each one
    (the decode deadline). ``drop_last`` leaves out the last packet read (in a cut file, where the
    data stops inside it, it holds part of a frame)."""
    pts: list[int] = []
    dts: list[int | None] = []
    keys: list[bool] = []
    pos: list[int] = []
    missing = 0
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except IndexError:  # PyAV's flush after a stream appeared mid-file: the packets are read
            break
        if check is not None:
            check()
        if not packet.size:
            continue
        if packet.pts is None:
            missing += 1
            pts.append(0)
        else:
            pts.append(packet.pts)
        dts.append(packet.dts)
        keys.append(packet.is_keyframe)
        pos.append(packet.pos if packet.pos is not None else -1)
    if drop_last and len(pts) > 1:
        for column in (pts, dts, keys, pos):
            column.pop()
    if not pts:
        raise VideoLoadError("zero frames (the video stream holds no packets)")
    if missing:
        raise _NoIndex(f"{missing} of {len(pts)} packets have no pts", len(pts))
    if not info.time_base:
        raise _NoIndex("the stream has no time base", len(pts))
    try:
        return _PacketIndex(pts, dts, keys, pos, info.time_base, info.ts_discont, info.byte_seek)
    except _NoIndex as exc:
        raise _NoIndex(str(exc), len(pts)) from None
