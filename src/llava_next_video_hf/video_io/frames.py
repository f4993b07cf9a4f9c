"""Frames in memory: the pixel and output-size limits every path checks, and videos given as frames
(a ``(T, H, W, 3)`` uint8 numpy array or torch tensor, or a list of PIL images / ``(H, W, 3)`` arrays),
sampled without decoding anything.

The limits are read from this module when a video is loaded: patch them here (``frames.MAX_PIXELS``),
not on the package, which only re-exports their values. torch is imported only for tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import VideoLoadError
from ..frame_sampling import _sample
from ..limits import MAX_PIXELS  # looked up here: patch frames.MAX_PIXELS
from .metadata import VideoMetadata

#: Largest decoded result (T * H * W * 3 bytes) that will be allocated.
MAX_OUTPUT_BYTES = 8 * 1024**3


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
