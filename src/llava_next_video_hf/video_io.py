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

Encoded videos are decoded with PyAV. Frame ``i`` is the i-th frame a player shows (presentation
order), whatever the timestamps look like (variable frame rates, duplicate timestamps, gaps, a
late first timestamp, concatenated MPEG-TS files whose timestamps restart). The frames are
indexed before anything is decoded:

* mp4/mov streams without frame reordering: the container's sample table (read with the header,
  no pass over the file);
* everything else: one demuxing pass over the packets (no decoding), sorted by presentation time
  within each timestamp segment.

``total_num_frames`` is then an exact count, the samples are spread over the frames that are
really there, and every decoded frame's timestamp is checked against the index. For each sampled
frame the decoder seeks to the keyframe before it and decodes forward only up to it (or decodes
forward from the previous sample when that is cheaper). The samples are split into contiguous
groups, each decoded by its own container on its own thread (PyAV releases the GIL), as many as
the cores allow (``threads=``); tiny requests stay on one thread. Only the sampled frames are
converted to RGB, so memory grows with the number of samples, not with the clip's length.

Frames are rotated as the stream's display matrix says (as FFmpeg-based players and OpenCV show
them; multiples of 90 degrees), and frames after a mid-stream resolution change are scaled to the
stream's first size. Files that cannot be indexed (packets without timestamps) or whose decoded
frames disagree with the index are decoded sequentially instead (frame ``i`` = the i-th frame the
decoder gives), still keeping only the sampled frames; ``metadata.decode_mode``, ``index``,
``fallback_reason``, ``rotation``, ``resized_frames``, ``segments`` and ``threads`` say what was
done. ``decode_mode="sequential"`` gives the same frames as the seek path.

URLs are downloaded into memory within :data:`URL_DEADLINE_S` seconds in total (each read within
:data:`URL_TIMEOUT_S`) and at most :data:`MAX_URL_BYTES` bytes.

Every failure is a :class:`~llava_next_video_hf.errors.VideoLoadError` naming the source and
the problem; PyAV/FFmpeg exceptions never escape.
"""

from __future__ import annotations

import io
import math
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from pathlib import Path
from time import monotonic
from typing import Any, Literal

import av
import numpy as np

from .errors import VideoLoadError

__all__ = [
    "MAX_OUTPUT_BYTES",
    "MAX_PIXELS",
    "MAX_SOURCE_BYTES",
    "MAX_URL_BYTES",
    "URL_DEADLINE_S",
    "URL_TIMEOUT_S",
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
#: Timeout (s) for connecting to an http(s) URL and for each read from it.
URL_TIMEOUT_S = 30.0
#: Total time (s) a download may take, however steadily the server trickles data.
URL_DEADLINE_S = 120.0
#: Largest download accepted from an http(s) URL (the whole file is held in memory).
MAX_URL_BYTES = 512 * 1024**2

# Demuxers that FFmpeg accepts but that are not videos (text shown as ANSI art, still images).
_NOT_VIDEO_FORMATS = {"tty", "image2", "image2pipe", "lavfi"}
_NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf"}

DecodeMode = Literal["seek", "sequential", "array"]


@dataclass(frozen=True)
class VideoMetadata:
    """What was loaded and how.

    Attributes:
        total_num_frames: frames in the source, counted (the container's sample table or its
            packets); frame ``i`` is the i-th frame shown.
        fps: the source's frame rate (``None`` when unknown, e.g. arrays without ``source_fps``);
            for variable-rate clips the nominal rate FFmpeg estimates, not frames / duration.
        duration: the source's duration in seconds (``None`` when unknown); for concatenated
            MPEG-TS files the sum of the parts.
        width, height: frame size of the returned frames (after rotation).
        frames_indices: index in the source of each returned frame.
        timestamps: time (s) of each returned frame from the first frame shown (its
            presentation timestamp, continuous across concatenated parts); empty when unknown.
        decode_mode: ``"seek"``, ``"sequential"`` or ``"array"`` (no decoding).
        source: short description of the source (a path, a URL without query, ``"<bytes>"``,
            ``"<file-like>"``, ``"<array>"``, ``"<tensor>"`` or ``"<frames list>"``).
        frames_decoded: frames the decoder produced (all passes); shows seeking at work.
        seeks: number of seeks performed.
        sampling: the rule applied: ``"num_frames"``, ``"fps"``, ``"fps->uniform"`` (fell
            back to ``max_frames`` uniform), ``"all"`` or ``"all->uniform"``.
        requested_num_frames: ``num_frames`` as asked (may exceed ``len(frames_indices)``
            for short clips).
        total_is_estimate: always ``False``: frames are counted, never estimated from
            duration * fps (kept for callers that read it).
        codec: the video codec's name (``None`` for arrays).
        container_format: the demuxer's name (``None`` for arrays).
        fallback_reason: why the sequential path was taken, if it was.
        video_backend: ``"pyav"`` or ``"array"``.
        index: how frames were put in presentation order: ``"container"`` (the mp4/mov sample
            table), ``"packets"`` (a demuxing pass), ``"decode"`` (the decoder's output order,
            when the packets carry no timestamps) or ``None`` for arrays.
        rotation: counterclockwise rotation (degrees: 0, 90, 180, 270) applied from the
            stream's display matrix.
        resized_frames: returned frames scaled to the stream's size after a mid-stream
            resolution change.
        segments: timestamp segments (``> 1`` for concatenated MPEG-TS files).
        threads: decoding threads used (groups of samples decoded in parallel).
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
    index: str | None = None
    rotation: int = 0
    resized_frames: int = 0
    segments: int = 1
    threads: int = 1

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
    """Fetch ``url`` into memory within :data:`URL_DEADLINE_S` seconds and :data:`MAX_URL_BYTES`."""
    desc = _describe_url(url)
    limit, limit_name = MAX_URL_BYTES, "MAX_URL_BYTES"
    if MAX_SOURCE_BYTES < limit:
        limit, limit_name = MAX_SOURCE_BYTES, "MAX_SOURCE_BYTES"
    deadline = monotonic() + URL_DEADLINE_S
    received = 0

    def too_slow() -> VideoLoadError:
        return VideoLoadError(
            f"{desc}: the download took longer than the limit of {URL_DEADLINE_S:g} s (URL_DEADLINE_S); "
            f"{received} bytes received"
        )

    request = urllib.request.Request(url, headers={"User-Agent": "llava-next-video-hf"})
    try:
        with urllib.request.urlopen(  # http(s) only, checked by the caller
            request, timeout=max(0.001, min(URL_TIMEOUT_S, URL_DEADLINE_S))
        ) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise VideoLoadError(
                    f"{desc}: {length} bytes is larger than the limit of {limit} bytes ({limit_name})"
                )
            sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
            chunks = []
            while True:
                remaining = deadline - monotonic()
                if remaining <= 0:
                    raise too_slow()
                if sock is not None:  # no single read may outlive the deadline either
                    sock.settimeout(max(0.001, min(URL_TIMEOUT_S, remaining)))
                chunk = response.read1(1 << 20)
                if not chunk:
                    break
                received += len(chunk)
                if received > limit:
                    raise VideoLoadError(
                        f"{desc}: larger than the limit of {limit} bytes ({limit_name}); the download was stopped"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise VideoLoadError(f"{desc}: download failed with HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        if monotonic() >= deadline:
            raise too_slow() from exc
        reason = getattr(exc, "reason", exc)
        if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError):
            reason = f"no data for {URL_TIMEOUT_S:g} s (URL_TIMEOUT_S)"
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


#: Frames that one seek is worth: decoding forward is preferred while it costs fewer frames.
_SEEK_COST_FRAMES = 8
#: Below this many frames to decode, one thread does the work (a thread and a container cost more).
_MIN_FRAMES_PER_THREAD = 48


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


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


class _Output:
    """Preallocated result; frames are converted to RGB (and rotated) only when kept.

    Frames whose size differs from the stream's (a mid-stream resolution change) are scaled to
    it; frames carrying a display matrix are rotated as FFmpeg's players show them. Several
    decoding threads may ``put`` at once (each into its own rows).
    """

    def __init__(self, indices: list[int], width: int, height: int, desc: str):
        self.desc = desc
        self.indices = indices
        self.positions: dict[int, list[int]] = {}
        for pos, index in enumerate(indices):
            self.positions.setdefault(index, []).append(pos)
        self.targets = sorted(self.positions)
        self.width = width  # decoded (coded) size frames are scaled to
        self.height = height
        self.array: np.ndarray | None = None
        self.rotation: int | None = None
        self.resized = 0
        self.used_indices: list[int] = list(indices)
        self.times: list[float | None] = [None] * len(indices)
        self._lock = threading.Lock()
        if width and height:
            _check_output(len(indices), height, width, desc)

    def _allocate(self, frame: Any) -> None:
        with self._lock:
            if self.array is not None:
                return
            if not (self.width and self.height):
                self.width, self.height = frame.width, frame.height
                _check_output(len(self.indices), self.height, self.width, self.desc)
            rotation = _frame_rotation(frame)
            shape = (self.width, self.height) if rotation in (90, 270) else (self.height, self.width)
            self.array = np.empty((len(self.indices), *shape, 3), dtype=np.uint8)
            self.rotation = rotation

    def put(self, target: int, frame: Any, actual_index: int, time: float | None) -> None:
        _check_pixels(frame.width, frame.height, self.desc)
        if self.array is None:
            self._allocate(frame)
        assert self.array is not None
        if (frame.width, frame.height) != (self.width, self.height):
            rgb = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
            with self._lock:
                self.resized += len(self.positions[target])
        else:
            rgb = frame.to_ndarray(format="rgb24")
        rotation = _frame_rotation(frame)
        if rotation != self.rotation:
            raise VideoLoadError(
                f"{self.desc}: the display rotation changes mid-stream ({self.rotation} -> {rotation} "
                f"degrees at frame {actual_index}); not supported"
            )
        if rotation:
            rgb = np.rot90(rgb, k=rotation // 90)
        for pos in self.positions[target]:
            self.array[pos] = rgb
            self.used_indices[pos] = actual_index
            self.times[pos] = time


def _frame_rotation(frame: Any) -> int:
    """Counterclockwise display rotation of ``frame`` (0, 90, 180 or 270), from its display matrix.

    Angles that are not a multiple of 90 degrees are not applied (0 is returned).
    """
    try:
        angle = frame.rotation
    except (AttributeError, ValueError):  # pragma: no cover - PyAV without display matrices
        return 0
    if not angle or not math.isfinite(angle):
        return 0
    angle = int(round(angle)) % 360
    return angle if angle in (90, 180, 270) else 0


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


def _tail_tolerance(total: int) -> int:
    """Frames a container's frame count may overstate before we call the file truncated."""
    return max(3, total // 100)


def _truncated(desc: str, readable: int, total: int, target: int, error: str | None) -> VideoLoadError:
    detail = f" ({error})" if error else ""
    return VideoLoadError(
        f"{desc}: truncated or corrupt: only {readable} of {total} frames could be decoded, "
        f"frame {target} is missing{detail}"
    )


# ----------------------------------------------------------------- presentation-order indexes
#
# Frame ``i`` is the i-th frame shown (presentation order). An index maps ``i`` to the
# timestamp the decoder gives that frame and to the keyframe decoding must start from, so that
# every decoded frame can be checked against it; any disagreement makes the seek path give up.


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
        # Seconds from the start, continuous across segments.
        times = np.empty(n, dtype=np.float64)
        offset = 0.0
        for s in range(self.segments):
            sel = np.flatnonzero(self.segment == s)
            seg_pts = self.pts[sel]
            steps = np.diff(seg_pts)
            steps = steps[steps > 0]
            step = float(np.median(steps)) if steps.size else 0.0
            times[sel] = offset + (seg_pts - seg_pts[0]) * time_base
            offset += float(seg_pts[-1] - seg_pts[0] + step) * time_base
        self.times = times
        self.duration = offset

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


def _scan_packets(container: Any, stream: Any, info: _StreamInfo) -> _PacketIndex:
    """One demuxing pass (no decoding) over the video packets."""
    pts: list[int] = []
    dts: list[int | None] = []
    keys: list[bool] = []
    pos: list[int] = []
    missing = 0
    for packet in container.demux(stream):
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


def _set_codec_threads(stream: Any, codec_threads: int) -> None:
    """1: decode on the calling thread only; 0: FFmpeg's frame/slice threads on every core."""
    if codec_threads == 1:
        stream.thread_type = "NONE"
        stream.thread_count = 1
    else:
        stream.thread_type = "AUTO"


class _Decoder:
    """Decodes the sampled frames of one encoded source."""

    def __init__(self, source: _Source):
        self.source = source
        self.frames_decoded = 0
        self.seeks = 0
        self.fresh: tuple[Any, Any] | None = None
        self.index_container: Any = None
        self.index_container_unread = False  # nothing decoded from it yet: a group may use it
        self._lock = threading.Lock()

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
        _set_codec_threads(stream, codec_threads)
        return container, stream

    def _count(self, decoded: int, seeks: int) -> None:
        with self._lock:
            self.frames_decoded += decoded
            self.seeks += seeks

    # -- sequential ---------------------------------------------------------------------------

    def sequential(self, out: _Output, total: int, index: _Index | None) -> None:
        """Decode from the start, keeping only the sampled frames: frame i = the i-th one out."""
        container, stream = self._open_stream()
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
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except (av.FFmpegError, OSError) as exc:
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
            try:
                frame = next(frames)
            except StopIteration:
                raise _SeekUnreliable(
                    f"the stream ends after frame {cursor}, the index lists {index.total} frames"
                ) from None
            except (av.FFmpegError, OSError) as exc:
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
                    except (av.FFmpegError, OSError) as exc:
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


def _load_encoded(
    source: Any,
    num_frames: int | None,
    fps: float | None,
    max_frames: int | None,
    decode_mode: str,
    threads: int | None,
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
    decoder.fresh = (container, stream)  # the first pass reuses it
    try:
        return _decode_encoded(decoder, info, num_frames, fps, max_frames, decode_mode, threads)
    finally:
        decoder.close_all()


def _container_index(decoder: _Decoder, info: _StreamInfo) -> _ContainerIndex | None:
    """The container's sample table when it can stand for presentation order, else ``None``."""
    if decoder.fresh is None or info.reorders or not info.time_base or info.header_frames <= 0:
        return None
    entries = decoder.fresh[1].index_entries
    if len(entries) != info.header_frames:
        return None
    if any(entries[i].is_discard for i in range(min(len(entries), 16))):
        return None  # an edit list hides frames: let the packets tell
    container, stream = decoder.fresh
    decoder.fresh = None
    decoder.index_container = container
    decoder.index_container_unread = True
    return _ContainerIndex(container, stream, info.time_base)


def _packet_index(decoder: _Decoder, info: _StreamInfo) -> tuple[_PacketIndex | None, int, str | None]:
    """(index, packet count, why there is no index)."""
    container, stream = decoder._open_stream()
    try:
        index = _scan_packets(container, stream, info)
        return index, index.total, None
    except _NoIndex as exc:
        return None, exc.args[1], exc.args[0]
    except VideoLoadError as exc:
        raise VideoLoadError(f"{decoder.source.desc}: {exc}") from None
    except (av.FFmpegError, OSError) as exc:
        raise VideoLoadError(f"{decoder.source.desc}: not a readable video ({_reason(exc)})") from exc
    finally:
        container.close()


def _decode_encoded(
    decoder: _Decoder,
    info: _StreamInfo,
    num_frames: int | None,
    fps: float | None,
    max_frames: int | None,
    decode_mode: str,
    threads: int | None,
) -> tuple[np.ndarray, VideoMetadata]:
    src = decoder.source
    index: _Index | None = _container_index(decoder, info)
    no_index_reason = None
    if index is None:
        index, total, no_index_reason = _packet_index(decoder, info)
    else:
        total = index.total
    fallback_reason = "requested" if decode_mode == "sequential" else None

    def attempt(idx: _Index) -> tuple[list[int], str, _Output, int]:
        ind, samp = _sample(idx.total, num_frames, fps, info.fps, max_frames)
        output = _Output(ind, info.width, info.height, src.desc)
        used = decoder.seek_decode(output, idx, threads)
        return ind, samp, output, used

    mode: DecodeMode = "sequential"
    used_threads = 1
    out: _Output | None = None
    if fallback_reason is None and index is not None:
        try:
            indices, sampling, out, used_threads = attempt(index)
            mode = "seek"
        except _SeekUnreliable as exc:
            fallback_reason = str(exc)
            if index.kind == "container":
                # The sample table and the decoded frames disagree: ask the packets.
                container_total = index.total
                index, total, no_index_reason = _packet_index(decoder, info)
                if index is not None and index.total < container_total:
                    # The data ends before the table does: decode what is there and say so.
                    index, total = None, container_total
                elif index is not None:
                    try:
                        indices, sampling, out, used_threads = attempt(index)
                        mode, fallback_reason = "seek", None
                    except _SeekUnreliable as exc2:
                        fallback_reason = str(exc2)
    if fallback_reason is None and no_index_reason is not None:
        fallback_reason = no_index_reason
    if mode == "sequential":
        used_threads = 1
        indices, sampling = _sample(total, num_frames, fps, info.fps, max_frames)
        out = _Output(indices, info.width, info.height, src.desc)
        decoder.sequential(out, total, index)

    assert out is not None and out.array is not None
    used = out.used_indices
    if index is not None:
        times = [
            float(t) if t is not None else index.time_of(min(i, index.total - 1))
            for t, i in zip(out.times, used, strict=True)
        ]
    else:
        times = [i / info.fps for i in used] if info.fps else []
    if used and used[-1] + 1 < total and used[-1] != indices[-1]:
        total = used[-1] + 1  # the container overstated its frame count
    duration = info.duration
    if isinstance(index, _PacketIndex):
        duration = index.duration
    elif duration is None and info.fps:
        duration = total / info.fps
    metadata = VideoMetadata(
        total_num_frames=total,
        fps=info.fps,
        duration=duration,
        width=int(out.array.shape[2]),
        height=int(out.array.shape[1]),
        frames_indices=list(used),
        timestamps=times,
        decode_mode=mode,
        source=src.desc,
        frames_decoded=decoder.frames_decoded,
        seeks=decoder.seeks,
        sampling=sampling,
        requested_num_frames=num_frames,
        total_is_estimate=False,
        codec=info.codec,
        container_format=info.container_format,
        fallback_reason=fallback_reason,
        index=index.kind if index is not None else "decode",
        rotation=out.rotation or 0,
        resized_frames=out.resized,
        segments=index.segments if index is not None else 1,
        threads=used_threads,
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
    threads: int | None = None,
) -> tuple[np.ndarray, VideoMetadata]:
    """Load a video's sampled frames as ``uint8`` RGB ``(T, H, W, 3)`` plus metadata.

    Same call shape as ``transformers.video_utils.load_video(video, num_frames=, fps=)``, with
    the original LLaVA-NeXT sampling rules (see :func:`sample_indices`).

    Args:
        source: a path (``str``/``PathLike``), an http(s) URL (downloaded into memory, at most
            :data:`MAX_URL_BYTES` within :data:`URL_DEADLINE_S` seconds),
            ``bytes``/``bytearray``/``memoryview`` (at most :data:`MAX_SOURCE_BYTES`), a binary file
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
            timestamps are unreliable) or ``"sequential"`` (always decode from the start; the
            same frames).
        threads: decoding threads for encoded videos: ``None`` (default) sizes them to the
            cores and the work (one for tiny requests), ``1`` keeps everything on one core.

    Returns:
        ``(frames, metadata)``: frames ``uint8`` of shape ``(len(metadata.frames_indices), H, W, 3)``.

    Raises:
        VideoLoadError: bad arguments (``num_frames`` and ``fps`` together, ``num_frames < 1``,
            ``fps <= 0``, ``max_frames < 1``, ``num_frames > max_frames``, ``threads < 1``), a
            missing, empty, truncated or unreadable file, a file that is not a video, zero
            decodable frames, a source over the byte/pixel/output limits, or a download over its
            size or time limit.
    """
    _check_args(num_frames, fps, max_frames)
    if decode_mode not in ("auto", "sequential"):
        raise VideoLoadError(f"decode_mode must be 'auto' or 'sequential', got {decode_mode!r}")
    if threads is not None and (not _is_int(threads) or threads < 1):
        raise VideoLoadError(f"threads must be an integer >= 1 or None (automatic), got {threads!r}")
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
        return _load_encoded(source, num_frames, fps, max_frames, decode_mode, threads)
    except VideoLoadError:
        raise
    except (av.FFmpegError, OSError, EOFError) as exc:
        desc = getattr(source, "name", None) if not isinstance(source, str | os.PathLike) else str(source)
        raise VideoLoadError(f"{desc or '<video>'}: decoding failed ({_reason(exc)})") from exc
