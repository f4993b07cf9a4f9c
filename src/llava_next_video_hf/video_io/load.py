""":func:`load_video`: checks the arguments, samples frames given in memory, or indexes an encoded
source and decodes its sampled frames (seeking, falling back to sequential decoding).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from numbers import Real
from typing import Any, Literal

import av
import numpy as np

from ..errors import TruncatedVideoWarning, VideoLoadError
from ..frame_sampling import _check_args, _is_int, _sample
from .decoder import _Decoder, _SeekUnreliable, _tail_tolerance, _TruncatedDecode
from .frames import _is_torch_tensor, _load_frames
from .index import _ContainerIndex, _Index, _NoIndex, _PacketIndex, _scan_packets
from .metadata import DecodeMode, VideoMetadata
from .output import _Output
from .sources import _READ_ERRORS, _encoded_source, _reason
from .stream import _stream_info, _StreamInfo


def _load_encoded(
    source: Any,
    num_frames: int | None,
    fps: float | None,
    max_frames: int | None,
    decode_mode: str,
    threads: int | None,
    deadline_s: float | None = None,
    allow_truncated: bool = False,
) -> tuple[np.ndarray, VideoMetadata]:
    src = _encoded_source(source)
    decoder = _Decoder(src, deadline_s)
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
        return _decode_encoded(
            decoder, info, num_frames, fps, max_frames, decode_mode, threads, allow_truncated
        )
    finally:
        decoder.close_all()


def _container_index(decoder: _Decoder, info: _StreamInfo) -> _ContainerIndex | None:
    """The container's sample table when it can stand for presentation order, else ``None``."""
    if decoder.fresh is None or info.reorders or not info.time_base or info.header_frames <= 0:
        return None
    entries = decoder.fresh[1].index_entries
    if len(entries) != info.header_frames:
        return None
    size = decoder.source.size
    last = entries[len(entries) - 1]
    if size is not None and last.pos is not None and last.pos >= 0 and last.pos + last.size > size:
        return None  # the table points past the end of the data: let the packets tell what is there
    if any(entries[i].is_discard for i in range(min(len(entries), 16))):
        return None  # an edit list hides frames: let the packets tell
    container, stream = decoder.fresh
    decoder.fresh = None
    decoder.index_container = container
    decoder.index_container_unread = True
    return _ContainerIndex(container, stream, info.time_base)


def _packet_index(
    decoder: _Decoder, info: _StreamInfo, drop_last: bool = False
) -> tuple[_PacketIndex | None, int, str | None]:
    """(index, packet count, why there is no index)."""
    container, stream = decoder._open_stream()
    try:
        index = _scan_packets(container, stream, info, decoder.check_deadline, drop_last)
        return index, index.total, None
    except _NoIndex as exc:
        return None, exc.args[1], exc.args[0]
    except VideoLoadError as exc:
        raise VideoLoadError(f"{decoder.source.desc}: {exc}") from None
    except (av.FFmpegError, OSError) as exc:
        raise VideoLoadError(f"{decoder.source.desc}: not a readable video ({_reason(exc)})") from exc
    finally:
        container.close()


#: Bytes per MPEG-TS packet (188; 192 for Blu-ray M2TS; 204 with Reed-Solomon bytes).
_TS_PACKET_SIZES = (188, 192, 204)


def _data_end(decoder: _Decoder, from_time: float, until: float) -> float | None:
    """The latest time (s) any stream's packets reach, reading from ``from_time`` on and stopping
    once ``until`` is reached (``None`` when nothing could be read)."""
    container = decoder.source.open()
    end: float | None = None
    try:
        try:
            container.seek(max(0, int(from_time * av.time_base)), backward=True)
        except (av.FFmpegError, OSError, ValueError):
            pass  # read from the start
        for n, packet in enumerate(container.demux()):
            decoder.check_deadline()
            tb = packet.time_base
            if packet.pts is None or not tb:
                continue
            t = float((packet.pts + (packet.duration or 0)) * tb)
            end = t if end is None or t > end else end
            if end >= until or n > 20_000:
                break
    except _READ_ERRORS:
        pass  # a damaged tail ends the data
    finally:
        container.close()
    return end


def _truncation(decoder: _Decoder, info: _StreamInfo, index: _Index | None, total: int) -> str | None:
    """How the frames found fall clearly short of what the container declares, or ``None``.

    * the header's frame count (mp4/mov/avi), beyond a few frames' tolerance;
    * without a frame count, the header's duration (matroska/webm, mp4/mov, avi, flv, asf), beyond
      ``max(0.5 s, 3 frames, 3 %)``, unless another stream (audio running longer) reaches it;
    * MPEG-TS, which declares neither: data that ends mid-packet.
    """
    header = info.header_frames
    if header > 0 and total < header - _tail_tolerance(header):
        return f"found {total} of the {header} frames the header declares"
    if header > 0:
        pass  # every frame the header counts is there: damaged timestamps are not a cut file
    elif isinstance(index, _PacketIndex) and index.end_time is not None and info.declared_end is not None:
        declared = info.declared_end
        tolerance = max(0.5, 3 / info.fps if info.fps else 0.0, 0.03 * (info.duration or 0.0))
        if declared - index.end_time > tolerance:
            reached = index.end_time
            if info.other_streams:
                other = _data_end(decoder, index.end_time - 1.0, declared - tolerance)
                reached = max(reached, other) if other is not None else reached
            if declared - reached > tolerance:
                return (
                    f"found {total} frames ({index.duration:.2f} s) of the "
                    f"{info.duration or declared:.2f} s the header declares"
                )
    size = decoder.source.size
    if (
        info.container_format == "mpegts"
        and size
        and all(size % n for n in _TS_PACKET_SIZES)
        and _ts_tail_cut(decoder)
    ):
        found = (
            f"{total} frames ({index.duration:.2f} s)"
            if isinstance(index, _PacketIndex)
            else f"{total} frames"
        )
        return (
            f"found {found}, and the data ends mid-packet ({size} bytes is not a whole number of "
            "188-byte MPEG-TS packets)"
        )
    return None


def _ts_tail_cut(decoder: _Decoder) -> bool:
    """Whether an MPEG-TS file ends inside a packet: its last bytes are not whole packets, each
    starting with the sync byte 0x47 (bytes inserted or lost mid-file leave the tail whole)."""
    tail = decoder.source.tail(3 * 204)
    for n in _TS_PACKET_SIZES:
        if len(tail) >= 2 * n and all(tail[-k * n] == 0x47 for k in (1, 2)):
            return False
        if n == 192 and len(tail) >= 2 * n and all(tail[-k * n + 4] == 0x47 for k in (1, 2)):
            return False  # M2TS: a 4-byte time code before each sync byte
    return True


def _refuse_or_warn(desc: str, detail: str, allow_truncated: bool) -> None:
    if not allow_truncated:
        raise VideoLoadError(
            f"{desc}: truncated: {detail}; the file looks cut short or damaged (a partial download?). "
            "Pass allow_truncated=True to decode the frames that are there."
        )
    warnings.warn(
        f"{desc}: truncated: {detail}; decoding the frames that are there (allow_truncated=True)",
        TruncatedVideoWarning,
        stacklevel=4,
    )


def _decode_encoded(
    decoder: _Decoder,
    info: _StreamInfo,
    num_frames: int | None,
    fps: float | None,
    max_frames: int | None,
    decode_mode: str,
    threads: int | None,
    allow_truncated: bool = False,
) -> tuple[np.ndarray, VideoMetadata]:
    src = decoder.source
    index: _Index | None = _container_index(decoder, info)
    no_index_reason = None
    if index is None:
        index, total, no_index_reason = _packet_index(decoder, info)
    else:
        total = index.total
    truncation = _truncation(decoder, info, index, total)
    if truncation is not None:
        _refuse_or_warn(src.desc, truncation, allow_truncated)
        if isinstance(index, _PacketIndex):  # the data stops inside the last packet: leave it out
            index, total, no_index_reason = _packet_index(decoder, info, drop_last=True)
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
                if index is not None and container_total - index.total > _tail_tolerance(container_total):
                    # The data ends before the table does.
                    truncation = f"found {index.total} of the {container_total} frames the sample table lists"
                    _refuse_or_warn(src.desc, truncation, allow_truncated)
                    index, total, no_index_reason = _packet_index(decoder, info, drop_last=True)
                if index is not None and index.total < container_total and truncation is None:
                    # A few frames short: decode what is there sequentially and say so.
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
        try:
            decoder.sequential(out, total, index, codec_threads=1 if threads == 1 else 0)
        except _TruncatedDecode as exc:
            if not allow_truncated or exc.readable < 1:
                raise
            detail = str(exc).split(": truncated or corrupt: ", 1)[-1]
            _refuse_or_warn(src.desc, detail, True)
            truncation = detail
            total = exc.readable
            indices, sampling = _sample(total, num_frames, fps, info.fps, max_frames)
            out = _Output(indices, info.width, info.height, src.desc)
            decoder.sequential(out, total, index, codec_threads=1 if threads == 1 else 0)

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
        truncated=truncation is not None,
        truncation=truncation,
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
    deadline_s: float | None = None,
    allow_truncated: bool = False,
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
        deadline_s: wall time (s) indexing and decoding may take (``None``: no limit), checked on
            every packet and frame; past it, a ``VideoLoadError`` naming the deadline. Code that
            must survive a decoder that crashes or hangs inside FFmpeg uses
            :class:`~llava_next_video_hf.video_io.DecodePool` instead (worker processes).
        allow_truncated: a container whose frames fall clearly short of what it declares (its
            frame count or duration; for MPEG-TS, data that ends mid-packet) is refused by default
            ("found X of the Y frames the header declares"). ``True`` decodes the frames that are
            there, samples among them, sets ``metadata.truncated``/``metadata.truncation`` and
            warns (:class:`~llava_next_video_hf.errors.TruncatedVideoWarning`).

    Returns:
        ``(frames, metadata)``: frames ``uint8`` of shape ``(len(metadata.frames_indices), H, W, 3)``.

    Raises:
        VideoLoadError: bad arguments (``num_frames`` and ``fps`` together, ``num_frames < 1``,
            ``fps <= 0``, ``max_frames < 1``, ``num_frames > max_frames``, ``threads < 1``), a
            missing, empty, truncated or unreadable file, a file that is not a video, zero
            decodable frames, a source over the byte/pixel/output limits, a download over its
            size or time limit, a truncated container (unless ``allow_truncated``), or the decode
            deadline. No other exception leaves this function, whatever the bytes.
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
    if deadline_s is not None and (
        isinstance(deadline_s, bool)
        or not isinstance(deadline_s, Real)
        or not math.isfinite(deadline_s)
        or deadline_s <= 0
    ):
        raise VideoLoadError(f"deadline_s must be a finite number > 0 or None, got {deadline_s!r}")
    if (
        isinstance(source, np.ndarray)
        or _is_torch_tensor(source)
        or (isinstance(source, Sequence) and not isinstance(source, str | bytes | bytearray | memoryview))
    ):
        return _load_frames(source, num_frames, fps, max_frames, source_fps)
    try:
        return _load_encoded(
            source, num_frames, fps, max_frames, decode_mode, threads, deadline_s, bool(allow_truncated)
        )
    except VideoLoadError:
        raise
    except (av.FFmpegError, OSError, EOFError) as exc:
        raise VideoLoadError(f"{_describe(source)}: decoding failed ({_reason(exc)})") from exc
    except MemoryError as exc:
        raise VideoLoadError(f"{_describe(source)}: ran out of memory while decoding") from exc
    except Exception as exc:
        # Backstop: a damaged file reached a path the checks above do not cover (a bug in video_io).
        # The caller still gets a VideoLoadError; ``unexpected`` lets the fuzz harness count it.
        err = VideoLoadError(
            f"{_describe(source)}: decoding failed ({type(exc).__name__}: {exc}); the file may be damaged "
            "(this error is unexpected: please report it)"
        )
        err.unexpected = True  # type: ignore[attr-defined]
        raise err from exc


def _describe(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    return getattr(source, "name", None) or "<video>"
