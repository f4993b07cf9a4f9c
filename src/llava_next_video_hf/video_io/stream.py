"""What the container's header says about the video stream (:class:`_StreamInfo`: frame rate,
duration, size, time base, frame count, reordering, seeking), refusing what FFmpeg reads but is not a
video (text, still images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import av

from ..errors import VideoLoadError
from .frames import _check_pixels
from .sources import _Source

# Demuxers that FFmpeg accepts but that are not videos (text shown as ANSI art, still images).
_NOT_VIDEO_FORMATS = {"tty", "image2", "image2pipe", "lavfi"}
_NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf"}


@dataclass
class _StreamInfo:
    fps: float | None
    duration: float | None
    width: int
    height: int
    time_base: float | None
    start_pts: int
    codec: str | None
    container_format: str | None
    header_frames: int
    reorders: bool
    ts_discont: bool
    byte_seek: bool


def _stream_info(container: Any, stream: Any, source: _Source) -> _StreamInfo:
    desc = source.desc
    fmt = container.format.name if container.format is not None else None
    codec = stream.codec_context.name if stream.codec_context is not None else None
    if fmt in _NOT_VIDEO_FORMATS or (fmt or "").endswith("_pipe") or codec in _NOT_VIDEO_CODECS:
        raise VideoLoadError(
            f"{desc}: not a video (FFmpeg reads it as {fmt!r} with codec {codec!r}: a still image or text)"
        )
    width, height = int(stream.width or 0), int(stream.height or 0)
    _check_pixels(width, height, desc)
    # average_rate (frames / duration) is the rate of a constant-rate clip; with variable rates or
    # timestamp gaps it drifts from guessed_rate (FFmpeg's estimate of the nominal rate), which is
    # then the better frame rate. Raw streams without timestamps get a default 25 in average_rate.
    average = float(stream.average_rate) if stream.average_rate else None
    guessed = float(stream.guessed_rate) if stream.guessed_rate else None
    if average and guessed and abs(average / guessed - 1) > 0.01:
        fps = guessed
    else:
        fps = average or guessed or (float(stream.base_rate) if stream.base_rate else None)
    if fps is not None and (not math.isfinite(fps) or fps <= 0 or fps > 10_000):
        fps = None
    time_base = float(stream.time_base) if stream.time_base else None
    start_pts = int(stream.start_time) if stream.start_time is not None else 0
    duration = None
    if stream.duration and time_base:
        duration = float(stream.duration) * time_base
    elif container.duration and container.duration > 0:
        duration = container.duration / av.time_base
    flags = int(container.format.flags) if container.format is not None else 0
    return _StreamInfo(
        fps=fps,
        duration=duration,
        width=width,
        height=height,
        time_base=time_base,
        start_pts=start_pts,
        codec=codec,
        container_format=fmt,
        header_frames=max(int(stream.frames or 0), 0),
        reorders=bool(stream.codec_context.has_b_frames),
        ts_discont=bool(flags & int(av.format.Flags.ts_discont.value)),
        byte_seek=not flags & int(av.format.Flags.no_byte_seek.value),
    )
