""":func:`load_video`: checks the arguments, samples frames given in memory, or indexes an encoded
source and decodes its sampled frames (seeking, falling back to sequential decoding).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from numbers import Real
from typing import Any, Literal

import av
import numpy as np

from ..errors import VideoLoadError
from ..frame_sampling import _check_args, _is_int, _sample
from .decoder import _Decoder, _SeekUnreliable
from .frames import _is_torch_tensor, _load_frames
from .index import _ContainerIndex, _Index, _NoIndex, _PacketIndex, _scan_packets
from .metadata import DecodeMode, VideoMetadata
from .output import _Output
from .sources import _encoded_source, _reason
from .stream import _stream_info, _StreamInfo


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
    # PyAV < 16 (lmms-eval 0.7 pins av<16) has no index_entries: the packets give the order instead
    entries = getattr(decoder.fresh[1], "index_entries", None)
    if entries is None or len(entries) != info.header_frames:
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
