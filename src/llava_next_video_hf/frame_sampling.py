"""Which frames to keep: :func:`sample_indices`, the single implementation of the sampling rules
(described in ``video_io``), used by the decoder and by the video processor for frames given as arrays.

Part of the model core that Hub exports ship as remote code (docs/ARCHITECTURE.md): numpy, the
standard library and ``errors`` only.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from .errors import VideoLoadError


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
