"""The preallocated result the decoder fills (:class:`_Output`): only the sampled frames are
converted to RGB, rotated as the stream's display matrix says and scaled to the stream's size.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import av
import numpy as np

from ..errors import VideoLoadError
from .frames import _check_output, _check_pixels


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
        if not (frame.width > 0 and frame.height > 0):
            raise VideoLoadError(
                f"{self.desc}: frame {actual_index} decodes to an empty picture "
                f"({frame.width}x{frame.height}); the stream may be damaged"
            )
        _check_pixels(frame.width, frame.height, self.desc)
        if self.array is None:
            self._allocate(frame)
        assert self.array is not None
        try:
            if (frame.width, frame.height) != (self.width, self.height):
                rgb = frame.to_ndarray(format="rgb24", width=self.width, height=self.height)
                with self._lock:
                    self.resized += len(self.positions[target])
            else:
                rgb = frame.to_ndarray(format="rgb24")
        except (ValueError, av.FFmpegError) as exc:  # a pixel format FFmpeg cannot convert
            raise VideoLoadError(
                f"{self.desc}: frame {actual_index} ({frame.format.name if frame.format else None}, "
                f"{frame.width}x{frame.height}) cannot be converted to RGB ({exc}); the stream may be damaged"
            ) from exc
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
