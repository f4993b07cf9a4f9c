"""Synthetic video clips whose frames carry their own index, for tests, demos and benchmarks.

Every frame shows a seeded, static background and, in its top-left corner, a grid of
``NUM_BITS`` black/white cells that spell the frame's index in binary (white = 1, most
significant bit first, row by row). The cells are large and saturated, so the index survives
lossy H.264 compression and can be read back with :func:`read_frame_index`.

The cell size is a pure function of the frame size, so a reader needs nothing but the frame.
Encoding is cheap: the background is converted to YUV once, and per frame only the bit cells
of the luma plane are rewritten before ``av.VideoFrame.from_ndarray`` copies the buffer.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "GRID_COLS",
    "GRID_ROWS",
    "NUM_BITS",
    "cell_size",
    "make_frames",
    "make_video",
    "make_video_bytes",
    "read_frame_index",
]

GRID_COLS = 8
GRID_ROWS = 3
NUM_BITS = GRID_COLS * GRID_ROWS  # 24 bits: up to 16.7M frames (155 h at 30 fps)
_MAX_CELL = 32
_MIN_CELL = 8

_ENCODERS = {"h264": "libx264", "libx264": "libx264"}


def cell_size(height: int, width: int) -> int:
    """Side (px, even) of one bit cell for a ``height x width`` frame.

    The bit grid (``GRID_ROWS x GRID_COLS`` cells) fits the frame's width and at most half its
    height; cells are at most 32 px and at least 8 px.

    Raises:
        ValueError: the frame is too small for 8 px cells (below 64 px wide or 48 px high).
    """
    cell = min(width // GRID_COLS, (height // 2) // GRID_ROWS, _MAX_CELL)
    cell -= cell % 2
    if cell < _MIN_CELL:
        raise ValueError(
            f"frame {width}x{height} is too small for the synthetic index pattern: need at least "
            f"{_MIN_CELL * GRID_COLS}x{2 * _MIN_CELL * GRID_ROWS} (width x height)"
        )
    return cell


def _bits_grid(index: int) -> np.ndarray:
    """(GRID_ROWS, GRID_COLS) array of 0/1, most significant bit first."""
    if not 0 <= index < 2**NUM_BITS:
        raise ValueError(f"frame index {index} does not fit in {NUM_BITS} bits")
    shifts = np.arange(NUM_BITS - 1, -1, -1, dtype=np.int64)
    return ((index >> shifts) & 1).astype(np.uint8).reshape(GRID_ROWS, GRID_COLS)


def _background(height: int, width: int, seed: int) -> np.ndarray:
    """Seeded RGB background: a colour gradient plus coarse static noise (compresses well)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 196, size=3).astype(np.float32)
    tilt = rng.uniform(-40, 40, size=3).astype(np.float32)
    ramp = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    img = base[None, None, :] + ramp[None, :, None] * tilt[None, None, :]
    coarse = rng.uniform(-25, 25, size=((height + 15) // 16, (width + 15) // 16, 3)).astype(np.float32)
    noise = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)[:height, :width]
    img = img + noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _check_size(height: int, width: int) -> int:
    if height % 2 or width % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    return cell_size(height, width)


def make_frames(num_frames: int, height: int = 360, width: int = 640, seed: int = 0) -> np.ndarray:
    """The synthetic clip as raw RGB frames, without encoding.

    Args:
        num_frames: number of frames ``T``.
        height, width: frame size (even, at least 48x64).
        seed: selects the background.

    Returns:
        ``uint8`` array of shape ``(T, height, width, 3)``; frame ``i`` carries index ``i``.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    cell = _check_size(height, width)
    bg = _background(height, width, seed)
    out = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    out[:] = bg
    gh, gw = GRID_ROWS * cell, GRID_COLS * cell
    for i in range(num_frames):
        block = np.repeat(np.repeat(_bits_grid(i) * 255, cell, axis=0), cell, axis=1)
        out[i, :gh, :gw, :] = block[:, :, None]
    return out


def read_frame_index(frame: np.ndarray) -> int:
    """Read the index a synthetic frame carries.

    Args:
        frame: RGB ``uint8`` array ``(H, W, 3)`` of a frame made by this module, possibly after
            lossy compression (the centre of each bit cell is averaged and thresholded).

    Returns:
        The frame index.
    """
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {arr.shape}")
    height, width = arr.shape[:2]
    cell = cell_size(height, width)
    lo, hi = cell // 4, cell - cell // 4
    luma = arr[: GRID_ROWS * cell, : GRID_COLS * cell].astype(np.float32).mean(axis=2)
    cells = luma.reshape(GRID_ROWS, cell, GRID_COLS, cell)[:, lo:hi, :, lo:hi].mean(axis=(1, 3))
    index = 0
    for bit in (cells.reshape(-1) >= 128).tolist():
        index = (index << 1) | int(bit)
    return index


def _encode(
    target: str | io.BytesIO,
    container_format: str | None,
    *,
    num_frames: int,
    fps: float | Fraction,
    width: int,
    height: int,
    seed: int,
    codec: str,
    gop: int | None,
    bframes: int,
    crf: int,
    faststart: bool,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    first_index: int = 0,
    rotation: int = 0,
    encoder_options: dict[str, str] | None = None,
) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    cell = _check_size(height, width)
    rate = Fraction(fps).limit_denominator(1001)
    if gop is None:
        gop = max(1, round(2 * float(rate)))
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    if first_index < 0:
        raise ValueError(f"first_index must be >= 0, got {first_index}")
    if pts is not None:
        pts = [int(p) for p in pts]
        if len(pts) != num_frames:
            raise ValueError(f"pts has {len(pts)} entries for {num_frames} frames")
        if any(b < a for a, b in zip(pts, pts[1:], strict=False)):
            raise ValueError("pts must be non-decreasing (frame i is the i-th frame shown)")
        if bframes:
            raise ValueError("explicit pts need bframes=0 (packets are then in presentation order)")
        if time_base is None:
            raise ValueError("explicit pts need a time_base")

    # Background converted to yuv420p once, with the same converter the encoder path would use.
    bg_rgb = _background(height, width, seed)
    buf = av.VideoFrame.from_ndarray(bg_rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
    bw = np.zeros((2, 2, 3), dtype=np.uint8)
    bw[1] = 255
    y_bw = av.VideoFrame.from_ndarray(bw, format="rgb24").reformat(format="yuv420p").to_ndarray()
    y_black, y_white = int(y_bw[0, 0]), int(y_bw[1, 0])
    lut = np.array([y_black, y_white], dtype=np.uint8)
    gh, gw = GRID_ROWS * cell, GRID_COLS * cell
    # Neutral chroma under the bit grid (U and V planes follow the Y plane, each H/2 x W/2).
    chroma = buf[height:].reshape(2, height // 2, width // 2)
    chroma[:, : gh // 2, : gw // 2] = 128
    buf[height:] = chroma.reshape(-1, width)
    y_grid = buf[:gh, :gw]

    options = {"container_options": {"movflags": "+faststart"}} if faststart else {}
    container = av.open(target, mode="w", format=container_format, **options)
    try:
        encoder = _ENCODERS.get(codec, codec)
        stream = container.add_stream(encoder, rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"  # MJPEG takes full-range YUV
        stream.codec_context.gop_size = gop
        if rotation:
            # Display matrix side data (mp4/mov write it to the track header, as phones do).
            stream.set_display_rotation(rotation)
        extra = dict(encoder_options or {})
        if encoder == "libx264":
            params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"
            if "x264-params" in extra:
                params += ":" + extra.pop("x264-params")
            stream.options = {"preset": "ultrafast", "crf": str(crf), "x264-params": params, **extra}
        else:
            stream.codec_context.max_b_frames = bframes
            if extra:
                stream.options = extra
        if pts is not None:
            stream.time_base = time_base

        def mux(packets: list[av.Packet]) -> None:
            for packet in packets:
                if pts is not None:
                    # No B-frames: packets come in presentation order with pts == dts == i.
                    packet.pts = packet.dts = pts[packet.pts]
                    packet.time_base = time_base
                container.mux(packet)

        encoder_tb = Fraction(1, 1) / rate
        for i in range(num_frames):
            y_grid[:] = np.repeat(np.repeat(lut[_bits_grid(first_index + i)], cell, axis=0), cell, axis=1)
            frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            frame.pts = i
            frame.time_base = encoder_tb
            mux(stream.encode(frame))
        mux(stream.encode(None))
    finally:
        container.close()


def make_video(
    path: str | Path,
    *,
    num_frames: int,
    fps: float = 30,
    width: int = 640,
    height: int = 360,
    seed: int = 0,
    codec: str = "h264",
    gop: int | None = None,
    bframes: int = 0,
    crf: int = 23,
    faststart: bool = False,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    first_index: int = 0,
    rotation: int = 0,
    encoder_options: dict[str, str] | None = None,
) -> Path:
    """Write a synthetic clip (H.264 ``yuv420p`` by default) whose frames carry their index.

    The container is chosen from the file suffix (``.mp4``, ``.mkv``, ``.h264`` for a raw
    elementary stream without timestamps or index, ...). libx264 runs with the ``ultrafast``
    preset; a 5-minute 640x360 30 fps clip takes a few seconds.

    Args:
        path: destination file.
        num_frames: number of frames.
        fps: frame rate.
        width, height: frame size (even, at least 64x48).
        seed: selects the background; same arguments give the same pixels.
        codec: ``"h264"`` (libx264) or any PyAV encoder name (e.g. ``"mpeg4"``).
        gop: keyframe interval in frames (default: 2 seconds).
        bframes: number of consecutive B-frames (0 = none, the ``ultrafast`` default).
        crf: libx264 constant rate factor (quality).
        faststart: put the mp4 index (``moov``) at the start of the file.
        pts: explicit presentation timestamps (in ``time_base`` units), one per frame and
            non-decreasing, for variable frame rates, duplicate timestamps, gaps or a late
            start; needs ``bframes=0``. The container may round them to its own time base.
        time_base: unit of ``pts``.
        first_index: index carried by the first frame (frame ``i`` carries
            ``first_index + i``), to build parts that are concatenated later.
        rotation: display rotation in degrees, stored as display-matrix side data (mp4/mov
            write it to the track header), counterclockwise as FFmpeg defines it.
        encoder_options: more encoder options (e.g. ``{"x264-params": "open-gop=1"}``, appended to
            libx264's own ``x264-params``; ``{"x265-params": ...}`` for ``codec="libx265"``).

    Returns:
        The path written.
    """
    path = Path(path)
    _encode(
        str(path),
        None,
        num_frames=num_frames,
        fps=fps,
        width=width,
        height=height,
        seed=seed,
        codec=codec,
        gop=gop,
        bframes=bframes,
        crf=crf,
        faststart=faststart,
        pts=pts,
        time_base=time_base,
        first_index=first_index,
        rotation=rotation,
        encoder_options=encoder_options,
    )
    return path


def make_video_bytes(
    *,
    num_frames: int,
    fps: float = 30,
    width: int = 640,
    height: int = 360,
    seed: int = 0,
    codec: str = "h264",
    gop: int | None = None,
    bframes: int = 0,
    crf: int = 23,
    container_format: str = "mp4",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    first_index: int = 0,
    rotation: int = 0,
) -> bytes:
    """Same as :func:`make_video`, but returns the encoded file's bytes (mp4 by default)."""
    buf = io.BytesIO()
    _encode(
        buf,
        container_format,
        num_frames=num_frames,
        fps=fps,
        width=width,
        height=height,
        seed=seed,
        codec=codec,
        gop=gop,
        bframes=bframes,
        crf=crf,
        faststart=False,
        pts=pts,
        time_base=time_base,
        first_index=first_index,
        rotation=rotation,
    )
    return buf.getvalue()
