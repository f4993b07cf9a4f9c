"""AnyRes images: the image processor and checked image loading.

[`LlavaNextVideoAnyResImageProcessor`] is transformers' ``LlavaNextImageProcessorPil`` (bit for bit,
the backend transformers itself falls back to without torchvision) with 336 px defaults;
[`load_image_checked`] loads paths, URLs and base64 strings within ``limits.MAX_PIXELS``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_utils import (
    load_image,
)
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from .errors import ImageLoadError
from .limits import MAX_PIXELS
from .visual_tokens import DEFAULT_GRID_PINPOINTS

DEFAULT_IMAGE_SIZE = 336
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class LlavaNextVideoAnyResImageProcessor(LlavaNextImageProcessorPil):
    r"""AnyRes image processor: transformers' ``LlavaNextImageProcessorPil`` with 336 px defaults.

    Each image becomes ``1 + tiles`` crops of 336x336 (the resized base view first, then the tiles
    of the best ``image_grid_pinpoints`` canvas), CLIP-normalised.

    Output: ``pixel_values`` (num_images, max_patches, 3, 336, 336), zero-padded over patches,
    and ``image_sizes`` (num_images, 2) as (height, width) of the original images.
    """

    size = {"shortest_edge": DEFAULT_IMAGE_SIZE}
    crop_size = {"height": DEFAULT_IMAGE_SIZE, "width": DEFAULT_IMAGE_SIZE}
    image_grid_pinpoints = [list(p) for p in DEFAULT_GRID_PINPOINTS]


def load_image_checked(source: str | os.PathLike) -> PIL.Image.Image:
    """Load an image path, URL or base64 string as RGB, within ``limits.MAX_PIXELS`` pixels.

    The same pixel limit as for video frames: a local file's size is read from its header and
    refused before it is decoded (a decompression bomb never allocates its pixels).

    Raises:
        ImageLoadError: a missing, corrupt or non-image file, a failed download, or an image over
            the pixel limit.
    """
    import warnings

    name = str(source)
    desc = name if len(name) < 200 else name[:60] + "..."
    is_local = not name.startswith(("http://", "https://", "data:")) and len(name) < 4096
    if is_local and not os.path.isfile(name):
        raise ImageLoadError(f"image {desc}: no such file")

    def check(width: int, height: int) -> None:
        if width * height > MAX_PIXELS:
            raise ImageLoadError(
                f"image {desc}: {width}x{height} = {width * height} pixels exceeds the limit of "
                f"{MAX_PIXELS} pixels (limits.MAX_PIXELS)"
            )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            if is_local:
                with PIL.Image.open(name) as probe:
                    check(*probe.size)
            image = load_image(name)
            check(*image.size)
            image.load()
    except ImageLoadError:
        raise
    except PIL.Image.DecompressionBombError as err:
        raise ImageLoadError(
            f"image {desc}: over the limit of {MAX_PIXELS} pixels (limits.MAX_PIXELS); {err}"
        ) from None
    except (OSError, ValueError, SyntaxError, PIL.UnidentifiedImageError) as err:
        raise ImageLoadError(f"image {desc}: not a readable image ({err})") from None
    return image if image.mode == "RGB" else image.convert("RGB")


def flatten_images(images: Any) -> list[Any]:
    """Flatten any nesting of images into a flat list (paths, URLs and base64 strings are loaded)."""
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)):
        return [load_image_checked(images)]
    if isinstance(images, PIL.Image.Image):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            return list(images)
        raise ValueError(f"an image array must have 2, 3 or 4 dimensions, got shape {tuple(images.shape)}")
    if isinstance(images, (list, tuple)):
        out: list[Any] = []
        for item in images:
            out.extend(flatten_images(item))
        return out
    raise TypeError(f"unsupported image of type {type(images).__name__}")


__all__ = ["LlavaNextVideoAnyResImageProcessor", "flatten_images", "load_image_checked"]
