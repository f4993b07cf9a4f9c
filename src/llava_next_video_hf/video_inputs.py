"""What counts as a video input, and how one becomes a clip.

Videos reach the processors as paths, URLs, bytes or file objects (decoded by ``video_io``), as
arrays/tensors of frames, or as lists of PIL images, nested per prompt or per conversation;
[`flatten_videos`] flattens them and [`to_clip`] turns decoded frames into a uint8 (T, 3, H, W) tensor.
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import Any

import numpy as np
import PIL.Image
import torch

from .errors import VideoLoadError

_ENCODED_TYPES = (str, bytes, bytearray, memoryview, os.PathLike)


def is_encoded(video: Any) -> bool:
    """Whether ``video`` is something to decode (path, URL, bytes, file object) rather than frames."""
    return isinstance(video, _ENCODED_TYPES) or hasattr(video, "read")


def is_frame(x: Any) -> bool:
    return isinstance(x, PIL.Image.Image) or (isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim in (2, 3))


def flatten_videos(videos: Any) -> list[Any]:
    """Flatten any nesting of videos (per prompt, per conversation, ...) into a flat list of videos.

    A video is an encoded source (path/URL/bytes/file object), a 4D array/tensor, a 3D array/tensor
    or PIL image (a one-frame video), or a list of frames (PIL images or 3D arrays). A 5D
    array/tensor is a batch of equally long videos. Empty lists contribute nothing.
    """
    if videos is None:
        return []
    if is_encoded(videos):
        return [videos]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 5:
            return list(videos)
        if videos.ndim in (3, 4):
            return [videos]
        raise ValueError(f"a video array must have 3, 4 or 5 dimensions, got shape {tuple(videos.shape)}")
    if isinstance(videos, PIL.Image.Image):
        return [[videos]]
    if isinstance(videos, (list, tuple)):
        if len(videos) > 0 and all(is_frame(v) for v in videos):
            return [list(videos)]  # one video given as its frames
        out: list[Any] = []
        for item in videos:
            out.extend(flatten_videos(item))
        return out
    raise TypeError(
        f"unsupported video of type {type(videos).__name__}: expected a path, URL, bytes, file object, "
        "a (T, H, W, 3) array/tensor or a list of frames"
    )


def to_clip(video: Any, index: int) -> torch.Tensor:
    """Frames of an already decoded video as a (T, C=3, H, W) tensor (dtype kept: uint8 or float)."""
    if isinstance(video, (list, tuple)):
        frames = []
        for f in video:
            if isinstance(f, PIL.Image.Image):
                frames.append(torch.from_numpy(np.array(f if f.mode == "RGB" else f.convert("RGB"))))
            else:
                f = torch.as_tensor(f)
                frames.append(f[..., None] if f.ndim == 2 else f)
        if len({tuple(f.shape) for f in frames}) > 1:
            raise VideoLoadError(f"video {index}: its frames have different shapes")
        clip = torch.stack(frames)
    elif isinstance(video, np.ndarray):
        clip = torch.from_numpy(np.ascontiguousarray(video))
    else:
        clip = video
    if clip.ndim == 3:  # a single frame
        clip = clip[None]
    if clip.ndim != 4:
        raise VideoLoadError(f"video {index}: expected (T, H, W, C) frames, got shape {tuple(clip.shape)}")
    if clip.shape[0] == 0:
        raise VideoLoadError(f"video {index}: has no frames")
    # (T, H, W, C) -> (T, C, H, W); channels-last is what decoders give, so it wins ties.
    if clip.shape[-1] in (1, 3, 4):
        clip = clip.permute(0, 3, 1, 2)
    elif clip.shape[1] not in (1, 3, 4):
        raise VideoLoadError(f"video {index}: cannot find the channel axis in shape {tuple(clip.shape)}")
    if clip.shape[1] == 1:
        clip = clip.expand(-1, 3, -1, -1)
    elif clip.shape[1] == 4:  # RGBA: drop alpha
        clip = clip[:, :3]
    return clip  # may be a view of channels-last memory: the PIL path reads frames from it without a copy


def check_frame_args(what: str, num_frames: Any, fps: Any, max_frames: Any) -> None:
    """Refuse a frame setting out of range, naming the argument that was given."""
    for name, value in (("num_frames", num_frames), ("max_frames", max_frames)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value < 1):
            raise VideoLoadError(f"{what}{name} must be an integer >= 1, got {value!r}")
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, Real) or not np.isfinite(fps) or fps <= 0
    ):
        raise VideoLoadError(f"{what}fps must be a finite number > 0, got {fps!r}")


def metadata_field(metadata: Any, key: str) -> Any:
    """``metadata[key]`` for a dict, a dataclass or transformers' ``VideoMetadata`` (``None`` if absent)."""
    if metadata is None:
        return None
    if isinstance(metadata, dict):
        return metadata.get(key)
    return getattr(metadata, key, None)


def per_video_metadata(video_metadata: Any, num_videos: int) -> list[Any]:
    """One metadata entry per video (``None`` where none was given)."""
    if video_metadata is None:
        return [None] * num_videos
    metas = list(video_metadata) if isinstance(video_metadata, (list, tuple)) else [video_metadata]
    if len(metas) == 1 and isinstance(metas[0], (list, tuple)):
        metas = list(metas[0])  # one list per prompt, as apply_chat_template nests them
    if len(metas) != num_videos:
        raise ValueError(
            f"video_metadata has {len(metas)} entries for {num_videos} video(s): give one per video"
        )
    return metas


def decode_video(source: Any, **kwargs: Any) -> Any:
    """Decode an encoded video (path, URL, bytes, file object) with ``video_io.load_video`` (PyAV):
    ``(frames (T, H, W, 3) uint8, VideoMetadata)``.

    ``video_io`` is not part of the model core that Hub exports ship as remote code: there, without
    this package installed, a clear [`VideoLoadError`] says how to pass decoded frames instead.
    """
    try:
        from llava_next_video_hf.video_io import load_video
    except ImportError as error:
        raise VideoLoadError(
            f"cannot decode a video given as {type(source).__name__}: this model's remote code takes decoded "
            "frames. Pass a (T, H, W, 3) uint8 array (decode with PyAV/OpenCV/decord and keep frames "
            "numpy.linspace(0, total_frames - 1, num_frames, dtype=int)), or install the plugin "
            "(`pip install llava-next-video-hf`) to decode paths, URLs and bytes"
        ) from error
    return load_video(source, **kwargs)


__all__ = [
    "check_frame_args",
    "decode_video",
    "metadata_field",
    "flatten_videos",
    "is_encoded",
    "is_frame",
    "per_video_metadata",
    "to_clip",
]
