"""Video decoding and frame sampling: seek to the sampled frames, never decode the whole clip.

:func:`load_video` turns a video (path, URL, bytes, file object, array, tensor or list of
frames) into ``uint8`` frames ``(T, H, W, 3)`` plus a :class:`VideoMetadata`. The frames to
keep are chosen by :func:`sample_indices`, the single implementation of the sampling rules
(the original LLaVA-NeXT ones):

* ``num_frames=N``: ``np.linspace(0, total - 1, N, dtype=int)`` (first and last frame
  included). A clip with fewer than ``N`` frames yields all of its frames, each once (no
  repeats); ``metadata.requested_num_frames`` keeps ``N``.
* ``fps=F``: one frame every ``round(source_fps / F)`` frames starting at frame 0; if that
  gives more than ``max_frames`` frames, ``np.linspace(0, total - 1, max_frames, dtype=int)``.
* neither: every frame, or ``linspace`` over ``max_frames`` frames when the clip is longer.
  Without ``max_frames`` a long clip is decoded in full and memory grows with its length
  (bounded by :data:`MAX_OUTPUT_BYTES`).

Encoded videos are decoded with PyAV. For each sampled frame the decoder seeks to the keyframe
at or before it and decodes forward only up to it; frames that are close together are reached
by decoding forward without a new seek. Only the sampled frames are converted to RGB, so
memory grows with the number of sampled frames, not with the clip's length. Files whose
timestamps cannot be trusted (no pts, seeks that land after the target, pts going backwards,
no frame count or duration) are decoded sequentially instead, still keeping only the sampled
frames; ``metadata.decode_mode`` says which path was taken.

Every failure is a :class:`~llava_next_video_hf.errors.VideoLoadError` naming the source and
the problem; PyAV/FFmpeg exceptions never escape.
"""

from __future__ import annotations

import io
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from .errors import VideoLoadError

__all__ = [
    "MAX_OUTPUT_BYTES",
    "MAX_PIXELS",
    "MAX_SOURCE_BYTES",
    "VideoMetadata",
    "load_video",
    "sample_indices",
]

#: Largest frame (width * height) that will be decoded; guards against decompression bombs.
MAX_PIXELS = 8192 * 8192
#: Largest encoded video accepted as bytes, a file object or a download.
MAX_SOURCE_BYTES = 2 * 1024**3
#: Largest decoded result (T * H * W * 3 bytes) that will be allocated.
MAX_OUTPUT_BYTES = 8 * 1024**3
#: Timeout (s) for downloading an http(s) URL.
URL_TIMEOUT_S = 30.0

# Demuxers that FFmpeg accepts but that are not videos (text shown as ANSI art, still images).
_NOT_VIDEO_FORMATS = {"tty", "image2", "image2pipe", "lavfi"}
_NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf"}

DecodeMode = Literal["seek", "sequential", "array"]


@dataclass(frozen=True)
class VideoMetadata:
    """What was loaded and how.

    Attributes:
        total_num_frames: frames in the source (from the container, an estimate from
            duration * fps when ``total_is_estimate``, or counted).
        fps: the source's frame rate (``None`` when unknown, e.g. arrays without ``source_fps``).
        duration: the source's duration in seconds (``None`` when unknown).
        width, height: frame size of the returned frames.
        frames_indices: index in the source of each returned frame.
        timestamps: time (s) of each returned frame; empty when the frame rate is unknown.
        decode_mode: ``"seek"``, ``"sequential"`` or ``"array"`` (no decoding).
        source: short description of the source (a path, a URL without query, ``"<bytes>"``,
            ``"<file-like>"``, ``"<array>"``, ``"<tensor>"`` or ``"<frames list>"``).
        frames_decoded: frames the decoder produced (all passes); shows seeking at work.
        seeks: number of seeks performed.
        sampling: the rule applied: ``"num_frames"``, ``"fps"``, ``"fps->uniform"`` (fell
            back to ``max_frames`` uniform), ``"all"`` or ``"all->uniform"``.
        requested_num_frames: ``num_frames`` as asked (may exceed ``len(frames_indices)``
            for short clips).
        total_is_estimate: ``total_num_frames`` came from duration * fps.
        codec: the video codec's name (``None`` for arrays).
        container_format: the demuxer's name (``None`` for arrays).
        fallback_reason: why the sequential path was taken, if it was.
    """

    total_num_frames: int
    fps: float | None
    duration: float | None
    width: int
    height: int
    frames_indices: list[int]
    timestamps: list[float]
    decode_mode: DecodeMode
    source: str
    frames_decoded: int = 0
    seeks: int = 0
    sampling: str = "all"
    requested_num_frames: int | None = None
    total_is_estimate: bool = False
    codec: str | None = None
    container_format: str | None = None
    fallback_reason: str | None = None
    video_backend: str = field(default="pyav")

    def to_dict(self) -> dict[str, Any]:
        """The metadata as a plain (JSON-serialisable) dict."""
        return asdict(self)

    def to_transformers(self) -> Any:
        """The same facts as a ``transformers.video_utils.VideoMetadata``."""
        from transformers.video_utils import VideoMetadata as HFVideoMetadata

        return HFVideoMetadata(
            total_num_frames=self.total_num_frames,
            fps=self.fps,
            width=self.width,
            height=self.height,
            duration=self.duration,
            video_backend=self.video_backend,
            frames_indices=list(self.frames_indices),
        )


# --------------------------------------------------------------------------- sampling


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_args(num_frames: Any, fps: Any, max_frames: Any) -> None:
    if num_frames is not None and fps is not None:
        raise VideoLoadError(
            f"num_frames={num_frames} and fps={fps} are mutually exclusive: pass only one of them"
        )
    if num_frames is not None and (not _is_int(num_frames) or num_frames < 1):
        raise VideoLoadError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, Real) or not math.isfinite(fps) or fps <= 0
    ):
        raise VideoLoadError(f"fps must be a finite number > 0, got {fps!r}")
    if max_frames is not None and (not _is_int(max_frames) or max_frames < 1):
        raise VideoLoadError(f"max_frames must be an integer >= 1, got {max_frames!r}")
    if num_frames is not None and max_frames is not None and num_frames > max_frames:
        raise VideoLoadError(
            f"num_frames={num_frames} exceeds max_frames={max_frames}: ask for at most {max_frames} frames"
        )


def _uniform(total: int, n: int) -> list[int]:
    return np.linspace(0, total - 1, n, dtype=int).tolist()


def _sample(
    total: int,
    num_frames: int | None,
    fps: float | None,
    source_fps: float | None,
    max_frames: int | None,
) -> tuple[list[int], str]:
    _check_args(num_frames, fps, max_frames)
    if not _is_int(total) or total < 0:
        raise VideoLoadError(f"total number of frames must be an integer >= 0, got {total!r}")
    if total == 0:
        raise VideoLoadError("the video has zero frames: nothing to sample")
    if num_frames is not None:
        return _uniform(total, min(num_frames, total)), "num_frames"
    if fps is not None:
        if source_fps is None or not math.isfinite(source_fps) or source_fps <= 0:
            raise VideoLoadError(
                f"sampling at fps={fps} needs the source frame rate, which is unknown "
                f"(source_fps={source_fps!r}); pass num_frames instead"
            )
        step = max(1, round(source_fps / fps))
        indices = list(range(0, total, step))
        if max_frames is not None and len(indices) > max_frames:
            return _uniform(total, max_frames), "fps->uniform"
        return indices, "fps"
    if max_frames is not None and total > max_frames:
        return _uniform(total, max_frames), "all->uniform"
    return list(range(total)), "all"


def sample_indices(
    total: int,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    source_fps: float | None = None,
    max_frames: int | None = None,
) -> list[int]:
    """Indices of the frames to keep from a clip of ``total`` frames (sorted, no repeats).

    Args:
        total: number of frames in the clip (>= 1).
        num_frames: keep ``np.linspace(0, total - 1, num_frames, dtype=int)``; a clip shorter
            than ``num_frames`` gives all of its ``total`` frames (fewer than asked, no repeats).
        fps: keep one frame every ``round(source_fps / fps)`` frames from frame 0 (at least
            every frame); more than ``max_frames`` of them falls back to uniform sampling of
            ``max_frames`` frames.
        source_fps: the clip's frame rate; required with ``fps``.
        max_frames: frame budget (>= ``num_frames`` when both are given). Without
            ``num_frames``/``fps``: all frames, or ``max_frames`` uniform ones if there are more.

    Raises:
        VideoLoadError: ``total`` is 0, both ``num_frames`` and ``fps`` are given, an argument is
            out of range (``num_frames < 1``, ``fps <= 0``, ``max_frames < 1``,
            ``num_frames > max_frames``), or ``fps`` is given without ``source_fps``.
    """
    return _sample(total, num_frames, fps, source_fps, max_frames)[0]


# --------------------------------------------------------------------------- sources


def _describe_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _read_limited(stream: Any, desc: str) -> bytes:
    data = stream.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise VideoLoadError(f"{desc}: larger than the limit of {MAX_SOURCE_BYTES} bytes (MAX_SOURCE_BYTES)")
    return bytes(data)


def _download(url: str) -> bytes:
    desc = _describe_url(url)
    request = urllib.request.Request(url, headers={"User-Agent": "llava-next-video-hf"})
    try:
        with urllib.request.urlopen(
            request, timeout=URL_TIMEOUT_S
        ) as response:  # http(s) only, checked above
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > MAX_SOURCE_BYTES:
                raise VideoLoadError(
                    f"{desc}: {length} bytes is larger than the limit of {MAX_SOURCE_BYTES} bytes (MAX_SOURCE_BYTES)"
                )
            return _read_limited(response, desc)
    except urllib.error.HTTPError as exc:
        raise VideoLoadError(f"{desc}: download failed with HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VideoLoadError(f"{desc}: download failed ({reason})") from exc


class _Source:
    """An encoded video that can be opened (several times) with PyAV."""

    def __init__(
        self, desc: str, *, path: Path | None = None, data: bytes | None = None, fileobj: Any = None
    ):
        self.desc = desc
        self.path = path
        self.data = data
        self.fileobj = fileobj
        self.start = fileobj.tell() if fileobj is not None else 0

    def open(self) -> av.container.InputContainer:
        opts: dict[str, Any] = {"metadata_errors": "replace"}
        if self.path is not None:
            # "file:" stops FFmpeg from reading the name as a protocol ("concat:", "pipe:"...).
            target: Any = "file:" + os.path.abspath(self.path)
            opts["options"] = {"protocol_whitelist": "file"}
        elif self.data is not None:
            target = io.BytesIO(self.data)
        else:
            self.fileobj.seek(self.start)
            target = self.fileobj
        try:
            return av.open(target, mode="r", **opts)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoLoadError(
                f"{self.desc}: not a readable video ({_reason(exc)}); the file may be truncated, "
                "corrupt or not a video"
            ) from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


def _encoded_source(source: Any) -> _Source:
    if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
        data = _download(source)
        desc = _describe_url(source)
        if not data:
            raise VideoLoadError(f"{desc}: the download is empty (0 bytes)")
        return _Source(desc, data=data)
    if isinstance(source, str) and "://" in source and not Path(source).exists():
        scheme = source.split("://", 1)[0]
        raise VideoLoadError(
            f"{source!r}: unsupported URL scheme {scheme!r}; pass a local path, an http(s) URL, bytes or frames"
        )
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        desc = str(path)
        if not path.exists():
            raise VideoLoadError(f"{desc}: video file not found")
        if not path.is_file():
            raise VideoLoadError(f"{desc}: not a regular file (a directory?)")
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise VideoLoadError(f"{desc}: cannot be read ({_reason(exc)})") from exc
        if size == 0:
            raise VideoLoadError(f"{desc}: the file is empty (0 bytes)")
        if not os.access(path, os.R_OK):
            raise VideoLoadError(f"{desc}: permission denied")
        return _Source(desc, path=path)
    if isinstance(source, bytes | bytearray | memoryview):
        desc = "<bytes>"
        size = memoryview(source).nbytes
        if size > MAX_SOURCE_BYTES:
            raise VideoLoadError(
                f"{desc}: {size} bytes is larger than the limit of {MAX_SOURCE_BYTES} bytes (MAX_SOURCE_BYTES)"
            )
        if size == 0:
            raise VideoLoadError(f"{desc}: the video data is empty (0 bytes)")
        return _Source(desc, data=bytes(source))
    if hasattr(source, "read"):
        desc = "<file-like>"
        try:
            seekable = bool(getattr(source, "seekable", lambda: False)())
            if not seekable:
                data = _read_limited(source, desc)
                if not data:
                    raise VideoLoadError(f"{desc}: the video data is empty (0 bytes)")
                return _Source(desc, data=data)
            start = source.tell()
            size = source.seek(0, io.SEEK_END) - start
            source.seek(start)
        except OSError as exc:
            raise VideoLoadError(f"{desc}: cannot be read ({_reason(exc)})") from exc
        if size > MAX_SOURCE_BYTES:
            raise VideoLoadError(
                f"{desc}: {size} bytes is larger than the limit of {MAX_SOURCE_BYTES} bytes (MAX_SOURCE_BYTES)"
            )
        if size <= 0:
            raise VideoLoadError(f"{desc}: the video data is empty (0 bytes)")
        return _Source(desc, fileobj=source)
    raise VideoLoadError(
        f"unsupported video source of type {type(source).__name__}: expected a path, an http(s) URL, bytes, "
        "a file object, a (T, H, W, 3) uint8 array/tensor or a list of frames"
    )


# --------------------------------------------------------------------------- arrays


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def _tensor_to_numpy(tensor: Any, what: str) -> np.ndarray:
    import torch

    if tensor.dtype != torch.uint8:
        raise VideoLoadError(f"{what}: expected dtype uint8, got {tensor.dtype}")
    return tensor.detach().cpu().numpy()


def _check_pixels(width: int, height: int, desc: str) -> None:
    if width * height > MAX_PIXELS:
        raise VideoLoadError(
            f"{desc}: frame size {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{MAX_PIXELS} pixels (MAX_PIXELS)"
        )


def _check_output(n: int, height: int, width: int, desc: str) -> None:
    nbytes = n * height * width * 3
    if nbytes > MAX_OUTPUT_BYTES:
        raise VideoLoadError(
            f"{desc}: {n} frames of {width}x{height} need {nbytes} bytes, more than the limit of "
            f"{MAX_OUTPUT_BYTES} bytes (MAX_OUTPUT_BYTES); pass num_frames, fps or max_frames"
        )


def _frame_to_array(frame: Any, position: int, desc: str) -> np.ndarray:
    if _is_torch_tensor(frame):
        arr = _tensor_to_numpy(frame, f"{desc} frame {position}")
    elif isinstance(frame, np.ndarray):
        arr = frame
    elif hasattr(frame, "convert") and hasattr(frame, "mode"):  # PIL.Image.Image
        arr = np.asarray(frame if frame.mode == "RGB" else frame.convert("RGB"))
    else:
        raise VideoLoadError(
            f"{desc}: frame {position} is a {type(frame).__name__}; expected a PIL image or an (H, W, 3) uint8 array"
        )
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise VideoLoadError(
            f"{desc}: frame {position} has shape {arr.shape} and dtype {arr.dtype}; expected (H, W, 3) uint8"
        )
    return arr


def _load_frames(
    source: Any,
    num_frames: int | None,
    fps: float | None,
    max_frames: int | None,
    source_fps: float | None,
) -> tuple[np.ndarray, VideoMetadata]:
    if isinstance(source, np.ndarray) or _is_torch_tensor(source):
        desc = "<array>" if isinstance(source, np.ndarray) else "<tensor>"
        arr = source if isinstance(source, np.ndarray) else _tensor_to_numpy(source, desc)
        if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
            raise VideoLoadError(
                f"{desc}: expected frames of shape (T, H, W, 3) and dtype uint8, got shape {tuple(arr.shape)} "
                f"and dtype {arr.dtype}"
            )
        total, height, width = arr.shape[0], arr.shape[1], arr.shape[2]
        if total == 0:
            raise VideoLoadError(f"{desc}: zero frames")
        _check_pixels(width, height, desc)
        indices, sampling = _sample(total, num_frames, fps, source_fps, max_frames)
        frames = np.ascontiguousarray(arr[indices])
    else:
        desc = "<frames list>"
        items = list(source)
        total = len(items)
        if total == 0:
            raise VideoLoadError(f"{desc}: zero frames (empty list)")
        indices, sampling = _sample(total, num_frames, fps, source_fps, max_frames)
        first = _frame_to_array(items[indices[0]], indices[0], desc)
        height, width = first.shape[:2]
        _check_pixels(width, height, desc)
        _check_output(len(indices), height, width, desc)
        frames = np.empty((len(indices), height, width, 3), dtype=np.uint8)
        for pos, index in enumerate(indices):
            arr = first if pos == 0 else _frame_to_array(items[index], index, desc)
            if arr.shape[:2] != (height, width):
                raise VideoLoadError(
                    f"{desc}: frame {index} is {arr.shape[1]}x{arr.shape[0]} but frame {indices[0]} is "
                    f"{width}x{height}; all frames must have the same size"
                )
            frames[pos] = arr
    fps_known = float(source_fps) if source_fps else None
    metadata = VideoMetadata(
        total_num_frames=total,
        fps=fps_known,
        duration=total / fps_known if fps_known else None,
        width=int(width),
        height=int(height),
        frames_indices=list(indices),
        timestamps=[i / fps_known for i in indices] if fps_known else [],
        decode_mode="array",
        source=desc,
        sampling=sampling,
        requested_num_frames=num_frames,
        video_backend="array",
    )
    return frames, metadata


# --------------------------------------------------------------------------- decoding


class _SeekUnreliable(Exception):
    """Seeking gave results that cannot be trusted; decode sequentially instead."""


@dataclass
class _StreamInfo:
    total: int
    total_is_estimate: bool
    fps: float | None
    duration: float | None
    width: int
    height: int
    time_base: float | None
    start_pts: int
    codec: str | None
    container_format: str | None
    seekable: bool


class _Output:
    """Preallocated result; frames are converted to RGB only when kept."""

    def __init__(self, indices: list[int], width: int, height: int, desc: str):
        self.desc = desc
        self.indices = indices
        self.positions: dict[int, list[int]] = {}
        for pos, index in enumerate(indices):
            self.positions.setdefault(index, []).append(pos)
        self.targets = sorted(self.positions)
        self.width = width
        self.height = height
        self.array: np.ndarray | None = None
        self.used_indices: list[int] = list(indices)
        self.times: list[float | None] = [None] * len(indices)
        if width and height:
            _check_output(len(indices), height, width, desc)

    def put(self, target: int, frame: Any, actual_index: int, time: float | None) -> None:
        _check_pixels(frame.width, frame.height, self.desc)
        if self.array is None:
            if not (self.width and self.height):
                self.width, self.height = frame.width, frame.height
                _check_output(len(self.indices), self.height, self.width, self.desc)
            self.array = np.empty((len(self.indices), self.height, self.width, 3), dtype=np.uint8)
        if (frame.width, frame.height) != (self.width, self.height):
            rgb = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
        else:
            rgb = frame.to_ndarray(format="rgb24")
        for pos in self.positions[target]:
            self.array[pos] = rgb
            self.used_indices[pos] = actual_index
            self.times[pos] = time


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
    has_timing = bool(stream.frames or stream.duration or container.duration)
    # average_rate maps pts to frame indices in timed containers; raw streams (no timestamps) get
    # FFmpeg's default 25 there, while guessed_rate reads the codec's own timing info.
    if has_timing:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    else:
        rate = stream.guessed_rate or stream.average_rate or stream.base_rate
    fps = float(rate) if rate else None
    if fps is not None and (not math.isfinite(fps) or fps <= 0 or fps > 10_000):
        fps = None
    time_base = float(stream.time_base) if stream.time_base else None
    start_pts = int(stream.start_time) if stream.start_time is not None else 0
    duration = None
    if stream.duration and time_base:
        duration = float(stream.duration) * time_base
    elif container.duration and container.duration > 0:
        duration = container.duration / av.time_base
    total, estimate = int(stream.frames or 0), False
    if total <= 0 and duration and fps:
        total, estimate = int(round(duration * fps)), True
    if total > 0 and duration is None and fps:
        duration = total / fps
    seekable = bool(stream.frames and stream.frames > 0 or estimate) and bool(fps) and bool(time_base)
    return _StreamInfo(
        total=max(total, 0),
        total_is_estimate=estimate,
        fps=fps,
        duration=duration,
        width=width,
        height=height,
        time_base=time_base,
        start_pts=start_pts,
        codec=codec,
        container_format=fmt,
        seekable=seekable,
    )


def _tail_tolerance(total: int) -> int:
    """Frames a container's frame count may overstate before we call the file truncated."""
    return max(3, total // 100)


def _truncated(desc: str, readable: int, total: int, target: int, error: str | None) -> VideoLoadError:
    detail = f" ({error})" if error else ""
    return VideoLoadError(
        f"{desc}: truncated or corrupt: only {readable} of {total} frames could be decoded, "
        f"frame {target} is missing{detail}"
    )


class _Decoder:
    """Decodes the sampled frames of one encoded source."""

    def __init__(self, source: _Source):
        self.source = source
        self.frames_decoded = 0
        self.seeks = 0
        self.fresh: tuple[Any, Any] | None = None

    def close(self) -> None:
        """Close a container opened but never used."""
        if self.fresh is not None:
            self.fresh[0].close()
            self.fresh = None

    def _open_stream(self) -> tuple[Any, Any]:
        if self.fresh is not None:  # opened by the caller and not read from yet
            opened, self.fresh = self.fresh, None
            return opened
        container = self.source.open()
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            container.close()
            raise VideoLoadError(f"{self.source.desc}: no video stream (streams found: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return container, stream

    def _count_packets(self) -> int:
        container, stream = self._open_stream()
        try:
            return sum(1 for packet in container.demux(stream) if packet.size)
        finally:
            container.close()

    # -- sequential ---------------------------------------------------------------------------

    def sequential(self, out: _Output, total: int) -> None:
        """Decode from the start in decode order, keeping only the sampled frames."""
        container, stream = self._open_stream()
        try:
            remaining = list(out.targets)
            wanted = set(remaining)
            last_target = remaining[-1]
            index = -1
            last_frame = None
            error = None
            frames = container.decode(stream)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except (av.FFmpegError, OSError) as exc:
                    error = _reason(exc)
                    break
                index += 1
                self.frames_decoded += 1
                last_frame = frame
                if index in wanted:
                    out.put(index, frame, index, None)
                    wanted.discard(index)
                    if index >= last_target:
                        break
            readable = index + 1
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
            container.close()

    # -- seeking ------------------------------------------------------------------------------

    def seek_decode(self, out: _Output, info: _StreamInfo) -> None:
        """Seek to each sampled frame (or decode forward when it is close); see the module doc."""
        assert info.fps and info.time_base
        fps, tb, start = info.fps, info.time_base, info.start_pts
        container, stream = self._open_stream()

        def to_index(pts: int) -> int:
            return int(round((pts - start) * tb * fps))

        def to_pts(index: int) -> int:
            return start + int(round(index / fps / tb))

        frames: Iterator[Any] | None = None
        last = None  # (index, frame): last frame pulled with index <= current target
        pending = None  # (index, frame): frame pulled past the previous target
        prev_pulled: int | None = None
        last_key: int | None = None
        gop = 0
        window = max(1, int(round(fps)))
        eof = False
        tolerance = _tail_tolerance(info.total)

        def pull() -> tuple[int, Any] | None:
            nonlocal prev_pulled, last_key, gop, eof
            assert frames is not None
            try:
                frame = next(frames)
            except StopIteration:
                eof = True
                return None
            except (av.FFmpegError, OSError) as exc:
                raise _SeekUnreliable(f"decoding failed after a seek ({_reason(exc)})") from exc
            self.frames_decoded += 1
            if frame.pts is None:
                raise _SeekUnreliable("decoded frames have no pts")
            index = to_index(frame.pts)
            if prev_pulled is not None and index < prev_pulled:
                raise _SeekUnreliable("pts go backwards")
            prev_pulled = index
            if frame.key_frame:
                if last_key is not None and index > last_key:
                    gop = max(gop, index - last_key)
                last_key = index
            return index, frame

        def seek_to(index: int) -> None:
            nonlocal frames, last, pending, prev_pulled, last_key, eof
            try:
                container.seek(max(to_pts(index), start), stream=stream, backward=True, any_frame=False)
            except (av.FFmpegError, OSError) as exc:
                raise _SeekUnreliable(f"seek failed ({_reason(exc)})") from exc
            self.seeks += 1
            frames = iter(container.decode(stream))
            last = pending = None
            prev_pulled = last_key = None
            eof = False

        def restart() -> tuple[int, Any] | None:
            """Reopen the source and decode from its first frame (no seek)."""
            nonlocal container, stream, frames, last, pending, prev_pulled, last_key, eof
            if frames is not None:
                container.close()
                container, stream = self._open_stream()
            frames = iter(container.decode(stream))
            last = pending = None
            prev_pulled = last_key = None
            eof = False
            return pull()

        def seek_for(target: int) -> tuple[int, Any]:
            """Seek so that the first decoded frame is at or before ``target``; return that frame."""
            nonlocal gop
            back = 0
            first = None
            for attempt in range(4):
                seek_to(target - back)
                first = pull()
                if first is not None and first[0] <= target:
                    if back == 0:  # landed on the keyframe before the target: a lower bound on the GOP
                        gop = max(gop, target - first[0] + 1)
                    return first
                if target - back <= 0:
                    break
                # Landed after the target (or at the end of the data): retry further back.
                back = min(target, max(gop, window) * 2 ** (attempt + 1))
            if target <= 4 * max(gop, window):
                # Seeking near the start can miss the first keyframe (B-frame delays): start over.
                first = restart()
                if first is not None and first[0] <= target:
                    return first
            if first is None:
                raise _SeekUnreliable(f"no frame decodes after seeking to frame {target}")
            raise _SeekUnreliable(f"seeking to frame {target} lands after it (at frame {first[0]})")

        try:
            # Decode the first frame without seeking: it must map to frame 0, or pts -> index is off.
            pending = restart()
            if pending is None:
                raise _SeekUnreliable("no frame decodes from the start of the stream")
            if pending[0] != 0:
                raise _SeekUnreliable(f"the first frame's pts maps to frame {pending[0]}, not 0")
            for target in out.targets:
                position = pending[0] if pending else (last[0] if last else None)
                if frames is None or position is None or eof or target - position > max(gop, window):
                    pending = seek_for(target)
                while True:
                    item = pending if pending is not None else pull()
                    pending = None
                    if item is None:
                        break
                    if item[0] <= target:
                        last = item
                        if item[0] == target:
                            break
                    else:
                        pending = item
                        break
                if last is None or (eof and last[0] < target):
                    if last is not None and info.total - tolerance <= last[0] + 1 and target >= last[0]:
                        # The frame count overstated the stream's length slightly: use its last frame.
                        out.put(target, last[1], last[0], (last[1].pts - start) * tb)
                        continue
                    raise _SeekUnreliable(
                        f"frame {target} not found (stream ends at frame {last and last[0]})"
                    )
                out.put(target, last[1], last[0], (last[1].pts - start) * tb)
        finally:
            container.close()


def _load_encoded(
    source: Any,
    num_frames: int | None,
    fps: float | None,
    max_frames: int | None,
    decode_mode: str,
) -> tuple[np.ndarray, VideoMetadata]:
    src = _encoded_source(source)
    decoder = _Decoder(src)
    container, stream = decoder._open_stream()
    try:
        info = _stream_info(container, stream, src)
    except BaseException as exc:
        container.close()
        if isinstance(exc, av.FFmpegError | OSError):
            raise VideoLoadError(f"{src.desc}: not a readable video ({_reason(exc)})") from exc
        raise
    decoder.fresh = (container, stream)  # the first decoding pass reuses it
    try:
        return _decode_encoded(decoder, info, num_frames, fps, max_frames, decode_mode)
    finally:
        decoder.close()


def _decode_encoded(
    decoder: _Decoder,
    info: _StreamInfo,
    num_frames: int | None,
    fps: float | None,
    max_frames: int | None,
    decode_mode: str,
) -> tuple[np.ndarray, VideoMetadata]:
    src = decoder.source

    fallback_reason = None
    if decode_mode == "sequential":
        fallback_reason = "requested"
    elif not info.seekable:
        fallback_reason = "no reliable frame count, frame rate or timestamps"
    if info.total <= 0:
        info.total = decoder._count_packets()
        info.total_is_estimate = False
        if info.total == 0:
            raise VideoLoadError(f"{src.desc}: zero frames (the video stream holds no packets)")
        if info.duration is None and info.fps:
            info.duration = info.total / info.fps

    indices, sampling = _sample(info.total, num_frames, fps, info.fps, max_frames)
    out = _Output(indices, info.width, info.height, src.desc)

    mode: DecodeMode = "sequential"
    if fallback_reason is None:
        try:
            decoder.seek_decode(out, info)
            mode = "seek"
        except _SeekUnreliable as exc:
            fallback_reason = str(exc)
            out = _Output(indices, info.width, info.height, src.desc)
    if mode == "sequential":
        decoder.sequential(out, info.total)

    assert out.array is not None
    used = out.used_indices
    if mode == "seek":
        times = [float(t) if t is not None else i / info.fps for t, i in zip(out.times, used, strict=True)]
    else:
        times = [i / info.fps for i in used] if info.fps else []
    total = info.total
    if used and used[-1] + 1 < total and used[-1] != indices[-1]:
        total = used[-1] + 1  # the container overstated its frame count
    metadata = VideoMetadata(
        total_num_frames=total,
        fps=info.fps,
        duration=info.duration,
        width=out.width,
        height=out.height,
        frames_indices=list(used),
        timestamps=times,
        decode_mode=mode,
        source=src.desc,
        frames_decoded=decoder.frames_decoded,
        seeks=decoder.seeks,
        sampling=sampling,
        requested_num_frames=num_frames,
        total_is_estimate=info.total_is_estimate,
        codec=info.codec,
        container_format=info.container_format,
        fallback_reason=fallback_reason,
    )
    return out.array, metadata


def load_video(
    source: Any,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    source_fps: float | None = None,
    decode_mode: Literal["auto", "sequential"] = "auto",
) -> tuple[np.ndarray, VideoMetadata]:
    """Load a video's sampled frames as ``uint8`` RGB ``(T, H, W, 3)`` plus metadata.

    Same call shape as ``transformers.video_utils.load_video(video, num_frames=, fps=)``, with
    the original LLaVA-NeXT sampling rules (see :func:`sample_indices`).

    Args:
        source: a path (``str``/``PathLike``), an http(s) URL (downloaded into memory, at most
            :data:`MAX_SOURCE_BYTES`), ``bytes``/``bytearray``/``memoryview``, a binary file
            object, a ``(T, H, W, 3)`` uint8 numpy array or torch tensor, or a sequence of PIL
            images / ``(H, W, 3)`` uint8 arrays.
        num_frames: sample this many frames uniformly (``linspace``, first and last included).
            A clip with fewer frames gives all its frames, fewer than asked and never repeated;
            compare ``len(metadata.frames_indices)`` with ``metadata.requested_num_frames``.
        fps: sample this many frames per second of video (one every ``round(source_fps/fps)``
            frames), falling back to ``max_frames`` uniform frames when that is more.
        max_frames: frame budget; with neither ``num_frames`` nor ``fps``, all frames up to this
            many (uniformly sampled beyond it). Without any of the three every frame is decoded,
            and memory grows with the clip (up to :data:`MAX_OUTPUT_BYTES`).
        source_fps: frame rate of array/list inputs (needed for ``fps`` sampling and
            timestamps there); ignored for encoded videos, whose rate comes from the container.
        decode_mode: ``"auto"`` (seek, falling back to sequential decoding when the file's
            timestamps are unreliable) or ``"sequential"`` (always decode from the start).

    Returns:
        ``(frames, metadata)``: frames ``uint8`` of shape ``(len(metadata.frames_indices), H, W, 3)``.

    Raises:
        VideoLoadError: bad arguments (``num_frames`` and ``fps`` together, ``num_frames < 1``,
            ``fps <= 0``, ``max_frames < 1``, ``num_frames > max_frames``), a missing, empty,
            truncated or unreadable file, a file that is not a video, zero decodable frames, or
            a source over the byte/pixel/output limits.
    """
    _check_args(num_frames, fps, max_frames)
    if decode_mode not in ("auto", "sequential"):
        raise VideoLoadError(f"decode_mode must be 'auto' or 'sequential', got {decode_mode!r}")
    if source_fps is not None and (
        isinstance(source_fps, bool)
        or not isinstance(source_fps, Real)
        or not math.isfinite(source_fps)
        or source_fps <= 0
    ):
        raise VideoLoadError(f"source_fps must be a finite number > 0, got {source_fps!r}")
    if (
        isinstance(source, np.ndarray)
        or _is_torch_tensor(source)
        or (isinstance(source, Sequence) and not isinstance(source, str | bytes | bytearray | memoryview))
    ):
        return _load_frames(source, num_frames, fps, max_frames, source_fps)
    try:
        return _load_encoded(source, num_frames, fps, max_frames, decode_mode)
    except VideoLoadError:
        raise
    except (av.FFmpegError, OSError, EOFError) as exc:
        desc = getattr(source, "name", None) if not isinstance(source, str | os.PathLike) else str(source)
        raise VideoLoadError(f"{desc or '<video>'}: decoding failed ({_reason(exc)})") from exc
