"""How many visual tokens a frame, a video or an image costs, in one place.

Every component (config, processor, model, modeling patches, vLLM plugin, model card) asks these
functions how many tokens a frame, a video or an AnyRes image expands to, which canvas LLaVA-NeXT
picks for an image, and how many frames fit a context. Nothing else in the package repeats this
arithmetic. The linear RoPE rule that turns a token count into a factor is in [`rope`](rope.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NEWLINE_POSITIONS = ("no_token", "one_token", "frame", "grid")
POOL_MODES = ("average", "max", "bilinear")

#: LLaVA-NeXT's AnyRes canvases (height, width) for 336-pixel tiles: 1x2, 2x1, 2x2, 3x1, 1x3.
DEFAULT_GRID_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


def pooled_grid(image_size: int, patch_size: int, stride: int, mode: str = "average") -> int:
    """Side of the frame's token grid after ``stride`` x ``stride`` spatial pooling.

    With ``grid = image_size // patch_size`` (24 for 336/14), as the original LLaVA-NeXT
    ``get_2dPool``/``SpatialPool`` and transformers compute it: ``average``/``max`` pooling with
    window and step ``stride`` keep ``floor(grid / stride)`` (a partial last window is dropped),
    ``bilinear`` resizes to ``ceil(grid / stride)``. Stride 5 on 24: 4 (average/max), 5 (bilinear).
    """
    if stride < 1:
        raise ValueError(f"spatial_pool_stride must be >= 1, got {stride}")
    grid = image_size // patch_size
    if stride > grid:
        raise ValueError(f"spatial_pool_stride must be at most the patch grid ({grid}), got {stride}")
    if mode in ("average", "max"):
        return grid // stride
    if mode == "bilinear":
        return math.ceil(grid / stride)
    raise ValueError(f"spatial_pool_mode must be one of {POOL_MODES}, got {mode!r}")


def num_video_tokens(
    num_frames: int,
    *,
    image_size: int = 336,
    patch_size: int = 14,
    stride: int = 2,
    mode: str = "average",
    newline_position: str = "no_token",
) -> int:
    """Number of ``<video>`` tokens a clip of ``num_frames`` frames expands to.

    ``side = pooled_grid(image_size, patch_size, stride, mode)``, ``per_frame = side**2``:
    no_token ``T*per_frame``; one_token ``T*per_frame + 1``; frame ``T*(per_frame + 1)``;
    grid ``T*side*(side + 1)`` (a newline after every row of every frame).
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least 1 frame, got {num_frames}")
    side = pooled_grid(image_size, patch_size, stride, mode)
    per_frame = side * side
    if newline_position == "no_token":
        return num_frames * per_frame
    if newline_position == "one_token":
        return num_frames * per_frame + 1
    if newline_position == "frame":
        return num_frames * (per_frame + 1)
    if newline_position == "grid":
        return num_frames * side * (side + 1)
    raise ValueError(f"video_newline_position must be one of {NEWLINE_POSITIONS}, got {newline_position!r}")


def select_best_resolution(
    original_size: tuple[int, int], possible: Sequence[Sequence[int]]
) -> tuple[int, int]:
    """LLaVA-NeXT's choice of canvas (height, width) for an image of ``original_size`` (height, width).

    Maximises the effective resolution kept after a fit-inside resize, then minimises wasted area.
    """
    orig_h, orig_w = original_size
    best, best_eff, best_waste = None, -1, math.inf
    for h, w in possible:
        scale = min(w / orig_w, h / orig_h)
        down_w, down_h = int(orig_w * scale), int(orig_h * scale)
        effective = min(down_w * down_h, orig_w * orig_h)
        waste = h * w - effective
        if effective > best_eff or (effective == best_eff and waste < best_waste):
            best, best_eff, best_waste = (h, w), effective, waste
    assert best is not None, "image_grid_pinpoints is empty"
    return best


def unpadded_features(height: int, width: int, patches_h: int, patches_w: int) -> tuple[int, int]:
    """(rows, cols) of the patch-feature grid left after removing the AnyRes padding.

    ``height, width`` are the original image size; ``patches_h, patches_w`` the feature grid of
    the padded canvas (tiles x grid). Mirrors LLaVA-NeXT's ``unpad_image`` rounding exactly.
    """
    if width / height > patches_w / patches_h:  # the image is wider than the canvas: rows were padded
        new_h = int(round(height * (patches_w / width), 7))
        pad = (patches_h - new_h) // 2
        return patches_h - 2 * pad, patches_w
    new_w = int(round(width * (patches_h / height), 7))
    pad = (patches_w - new_w) // 2
    return patches_h, patches_w - 2 * pad


def num_image_tokens(
    height: int,
    width: int,
    *,
    image_size: int = 336,
    patch_size: int = 14,
    grid_pinpoints: Sequence[Sequence[int]] = DEFAULT_GRID_PINPOINTS,
    keeps_cls: bool = False,
) -> int:
    """Number of ``<image>`` tokens of an AnyRes image of ``height`` x ``width`` pixels.

    Base view (``grid**2`` features, +1 when the CLS feature is kept) plus the unpadded tile
    features with one ``image_newline`` per row — LLaVA-NeXT's ``spatial_unpad`` layout.
    """
    grid = image_size // patch_size
    best_h, best_w = select_best_resolution((height, width), grid_pinpoints)
    rows, cols = unpadded_features(
        height, width, grid * (best_h // image_size), grid * (best_w // image_size)
    )
    base = grid * grid + int(keeps_cls)
    return base + rows * (cols + 1)


def max_frames_that_fit(
    context_length: int,
    text_tokens: int,
    *,
    num_videos: int = 1,
    **video_kwargs: int | str,
) -> int:
    """Largest frame count per video whose tokens plus ``text_tokens`` fit ``context_length`` (0 if none).

    ``num_videos`` clips of that many frames each, as a prompt with several videos sampled alike.
    """
    frames = 0
    while text_tokens + num_videos * num_video_tokens(frames + 1, **video_kwargs) <= context_length:  # type: ignore[arg-type]
        frames += 1
    return frames
