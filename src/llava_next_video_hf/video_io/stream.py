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


#: Formats whose header declares the duration (checked against the frames found, see ``load``).
#: Others (MPEG-TS/PS, raw streams, Ogg) only estimate it from the data that is there.
DECLARED_DURATION_FORMATS = {"matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2", "avi", "flv", "asf"}


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
    declared_end: float | None = None  # seconds on the stream's clock where the header says the data ends
    other_streams: bool = False


def _get(obj: Any, name: str) -> Any:
    """``obj.name``, or ``None`` where PyAV leaves it unset or fails to read it on a damaged stream.

    PyAV raises ``AttributeError`` for codec attributes of a stream without a codec context,
    and ``ValueError``/``ZeroDivisionError``/``OverflowError`` for some malformed values.
    """
    try:
        return getattr(obj, name)
    except (AttributeError, ValueError, TypeError, ZeroDivisionError, OverflowError, av.FFmpegError):
        return None


def _positive(value: Any) -> float | None:
    """``float(value)`` when it is a finite number > 0 (rates, time bases), else ``None``."""
    try:
        out = float(value) if value is not None else None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return out if out is not None and math.isfinite(out) and out > 0 else None


def _int_or(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def _stream_info(container: Any, stream: Any, source: _Source) -> _StreamInfo:
    """Read the header's facts about ``stream``; every attribute a damaged stream may leave unset is
    checked (a missing codec context, zero or negative sizes, rates and time bases, no duration)."""
    desc = source.desc
    container_format = _get(container, "format")
    fmt = _get(container_format, "name") if container_format is not None else None
    ctx = _get(stream, "codec_context")
    codec = _get(ctx, "name") if ctx is not None else None
    if fmt in _NOT_VIDEO_FORMATS or (fmt or "").endswith("_pipe") or codec in _NOT_VIDEO_CODECS:
        raise VideoLoadError(
            f"{desc}: not a video (FFmpeg reads it as {fmt!r} with codec {codec!r}: a still image or text)"
        )
    if ctx is None:
        raise VideoLoadError(
            f"{desc}: the video stream has no decoder (unknown codec; the stream header may be damaged); "
            "the file may be truncated, corrupt or not a supported video"
        )
    width, height = max(_int_or(_get(ctx, "width"), 0), 0), max(_int_or(_get(ctx, "height"), 0), 0)
    _check_pixels(width, height, desc)
    # average_rate (frames / duration) is the rate of a constant-rate clip; with variable rates or
    # timestamp gaps it drifts from guessed_rate (FFmpeg's estimate of the nominal rate), which is
    # then the better frame rate. Raw streams without timestamps get a default 25 in average_rate.
    average = _positive(_get(stream, "average_rate"))
    guessed = _positive(_get(stream, "guessed_rate"))
    if average and guessed and abs(average / guessed - 1) > 0.01:
        fps = guessed
    else:
        fps = average or guessed or _positive(_get(stream, "base_rate"))
    if fps is not None and fps > 10_000:
        fps = None
    time_base = _positive(_get(stream, "time_base"))
    start_pts = _int_or(_get(stream, "start_time"), 0)
    duration = None
    declared_end = None
    stream_duration = _int_or(_get(stream, "duration"), 0)
    container_duration = _int_or(_get(container, "duration"), 0)
    if stream_duration > 0 and time_base:
        duration = stream_duration * time_base
        declared_end = (start_pts + stream_duration) * time_base
    elif container_duration > 0:
        duration = container_duration / av.time_base
        # Matroska's header stores the time the segment ends (FFmpeg reads it as the duration
        # whatever the first timestamp); other formats store a length from the start.
        start = 0 if fmt == "matroska,webm" else _int_or(_get(container, "start_time"), 0)
        declared_end = (start + container_duration) / av.time_base
    if duration is not None and not math.isfinite(duration):
        duration = declared_end = None
    flags = _int_or(_get(container_format, "flags"), 0) if container_format is not None else 0
    streams = _get(container, "streams")
    try:
        other_streams = streams is not None and len(streams) > 1
    except TypeError:  # pragma: no cover - PyAV always gives a sized StreamContainer
        other_streams = False
    return _StreamInfo(
        fps=fps,
        duration=duration,
        width=width,
        height=height,
        time_base=time_base,
        start_pts=start_pts,
        codec=codec,
        container_format=fmt,
        header_frames=max(_int_or(_get(stream, "frames"), 0), 0),
        reorders=bool(_get(ctx, "has_b_frames")),
        ts_discont=bool(flags & int(av.format.Flags.ts_discont.value)),
        byte_seek=not flags & int(av.format.Flags.no_byte_seek.value),
        declared_end=declared_end if fmt in DECLARED_DURATION_FORMATS else None,
        other_streams=other_streams,
    )
