"""The visual token layout: how vision-tower features become the tokens scattered into the prompt.

One implementation shared by the transformers model (``modeling``), the modeling patches for
transformers' own LLaVA classes, the vLLM model and the training feature cache; it imports torch
and the token math, not transformers' model code, so vLLM workers never load ``modeling``.

A video, frame by frame (docs/ARCHITECTURE.md):
tower features (N, L, Dv) -> [`VisualTokenLayout.frame_features`] (drop CLS, pool when before the
projector; the frozen part) -> [`VisualTokenLayout.project_frames`] (projector, pool when after it,
per-frame newlines; the trainable part) -> (N, tokens_per_frame, D) -> [`VisualTokenLayout.split_videos`]
-> one (num_video_tokens(T_i), D) per video -> [`VisualTokenLayout.scatter_features`] at the
placeholder positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .configuration import LlavaNextVideoAnyResConfig
from .errors import PlaceholderMismatchError
from .visual_tokens import pooled_grid, select_best_resolution, unpadded_features


def spatial_pool(features: torch.Tensor, grid: int, stride: int, mode: str) -> torch.Tensor:
    """Pool each frame's ``grid`` x ``grid`` feature map by ``stride``: (N, grid*grid, D) -> (N, side*side, D).

    ``side = pooled_grid(...)``: ``average``/``max`` use windows and steps of ``stride`` and drop
    a partial last window (``floor(grid / stride)``, as the original ``avg_pool2d``/``max_pool2d`` and
    transformers), ``bilinear`` resizes to ``ceil(grid / stride)`` (the original ``get_2dPool``).
    """
    n, _, dim = features.shape
    side = pooled_grid(grid, 1, stride, mode)
    x = features.view(n, grid, grid, dim).permute(0, 3, 1, 2)  # (N, D, grid, grid)
    if stride == 1:
        pooled = x
    elif mode == "average":
        pooled = F.avg_pool2d(x, stride)
    elif mode == "max":
        pooled = F.max_pool2d(x, stride)
    else:  # bilinear (pooled_grid refused any other mode)
        pooled = F.interpolate(x, size=(side, side), mode="bilinear")
    return pooled.flatten(2).transpose(1, 2)  # (N, side*side, D)


def add_frame_newlines(frames: torch.Tensor, newline: torch.Tensor, position: str) -> torch.Tensor:
    """Per-frame newline layout: (N, side*side, D) -> (N, tokens_per_frame, D).

    ``frame`` appends one newline after each frame, ``grid`` one after each row of each frame;
    ``no_token``/``one_token`` leave frames as they are (``one_token`` adds its newline per video).
    """
    n, tokens, dim = frames.shape
    if position == "frame":
        return torch.cat([frames, newline.view(1, 1, dim).expand(n, 1, dim)], dim=1)
    if position == "grid":
        side = math.isqrt(tokens)
        rows = frames.view(n, side, side, dim)
        rows = torch.cat([rows, newline.view(1, 1, 1, dim).expand(n, side, 1, dim)], dim=2)
        return rows.reshape(n, side * (side + 1), dim)
    return frames


def num_image_crops(height: int, width: int, config: LlavaNextVideoAnyResConfig) -> int:
    """Crops an AnyRes image is cut into: the base view plus the tiles of its best canvas."""
    size = config.vision_config.image_size
    canvas_h, canvas_w = select_best_resolution((height, width), config.image_grid_pinpoints)
    return 1 + (canvas_h // size) * (canvas_w // size)


def drop_padding(padded: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """(B, N_max, ...) zero-padded per item, and each item's real count -> (sum counts, ...): the one
    place frame/crop padding is removed (processors pad clips and AnyRes crops to a batch)."""
    return torch.cat([item[:n] for item, n in zip(padded, counts, strict=True)], dim=0)


def video_frames(
    pixel_values_videos: torch.Tensor | list[torch.Tensor], video_num_frames: torch.Tensor | None
) -> tuple[torch.Tensor, list[int]]:
    """Videos as the processor batches them -> one frames buffer (sum T_i, 3, H, W) and T_i per video.

    ``pixel_values_videos``: (B, T_max, 3, H, W) zero-padded, with ``video_num_frames`` (B,) (None:
    every video has T_max frames), or a list of (T_i, 3, H, W).
    """
    if isinstance(pixel_values_videos, (list, tuple)):
        lengths = [int(v.shape[0]) for v in pixel_values_videos]
        return torch.cat(list(pixel_values_videos), dim=0), lengths
    b, t = pixel_values_videos.shape[:2]
    lengths = [t] * b if video_num_frames is None else [int(n) for n in video_num_frames.tolist()]
    return drop_padding(pixel_values_videos, lengths), lengths


class VisualTokenLayout:
    """How vision features become the tokens scattered into the prompt — one implementation.

    Shared by the transformers model, the vLLM model and the modeling patches. The host provides
    ``config``, ``vision_features(pixels) -> (N, L, Dv)`` (all tokens of the selected layers, CLS
    first when the tower has one), ``multi_modal_projector`` and ``image_newline`` (D,).
    """

    config: LlavaNextVideoAnyResConfig

    @property
    def grid(self) -> int:
        """Patches per side of one crop (24 for 336 / 14)."""
        return self.config.vision_config.image_size // self.config.vision_config.patch_size

    def encode_frames(self, frames: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Video frames (N, 3, H, W) -> per-frame tokens (N, tokens_per_frame, D).

        Each frame is encoded independently and yields a fixed token count (pooled grid plus the
        per-frame newlines of the ``frame``/``grid`` policies), so zero-padded frames are harmless
        and the shape depends only on N: the property vLLM's encoder CUDA graphs need.
        ``features``: ``vision_features(frames)`` when the caller already ran the tower.
        """
        if features is None:
            features = self.vision_features(frames)
        return self.project_frames(self.frame_features(features))

    def frame_features(self, features: torch.Tensor) -> torch.Tensor:
        """The frozen step after the tower: (N, L, Dv) -> (N, grid*grid, Dv) without CLS, pooled to
        (N, side*side, Dv) when the config pools before the projector."""
        cfg, grid = self.config, self.grid
        feats = features[:, -(grid**2) :]  # (N, grid*grid, Dv): no CLS
        if cfg.spatial_pool_position == "before_projector":
            feats = spatial_pool(feats, grid, cfg.spatial_pool_stride, cfg.spatial_pool_mode)
        return feats

    def project_frames(self, feats: torch.Tensor) -> torch.Tensor:
        """The trainable step: [`frame_features`]' output -> (N, tokens_per_frame, D) (projector,
        pooling when after it, the per-frame newlines)."""
        cfg = self.config
        feats = self.multi_modal_projector(feats)
        if cfg.spatial_pool_position == "after_projector":
            feats = spatial_pool(feats, self.grid, cfg.spatial_pool_stride, cfg.spatial_pool_mode)
        return add_frame_newlines(feats, self.image_newline.to(feats.dtype), cfg.video_newline_position)

    def split_videos(self, per_frame: torch.Tensor, num_frames: list[int]) -> list[torch.Tensor]:
        """(sum T_i, tokens_per_frame, D) -> one (num_video_tokens(T_i), D) tensor per video."""
        videos = []
        for video in torch.split(per_frame, list(num_frames), dim=0):
            tokens = video.flatten(0, 1)  # (T_i * tokens_per_frame, D)
            if self.config.video_newline_position == "one_token":
                tokens = torch.cat([tokens, self.image_newline.to(tokens.dtype)[None]], dim=0)
            videos.append(tokens)
        return videos

    def embed_images(
        self, crops: torch.Tensor, image_sizes: list[tuple[int, int]], features: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """AnyRes crops (sum P_i, 3, H, W), base view first per image -> one (num_image_tokens, D) each.

        LLaVA-NeXT's ``spatial_unpad``: base view features, then the tile grid with the padding
        removed and an ``image_newline`` after every row (sizes are host ints: no device sync).
        ``features``: ``vision_features(crops)`` when the caller already ran the tower.
        """
        cfg, grid = self.config, self.grid
        size = cfg.vision_config.image_size
        if features is None:
            features = self.vision_features(crops)
        feats = self.multi_modal_projector(features)  # (sum P_i, L, D)
        keep_cls = cfg.vision_feature_select_strategy == "full"
        counts = [num_image_crops(h, w, cfg) for h, w in image_sizes]
        images = []
        for crops_i, (h, w) in zip(torch.split(feats, counts, dim=0), image_sizes, strict=True):
            canvas_h, canvas_w = select_best_resolution((h, w), cfg.image_grid_pinpoints)
            th, tw = canvas_h // size, canvas_w // size
            # the base view keeps CLS only under "full"; tiles never do (they form a grid)
            base = crops_i[0] if keep_cls else crops_i[0, -(grid**2) :]
            tiles = crops_i[1:, -(grid**2) :]  # (th * tw, grid * grid, D)
            dim = tiles.shape[-1]
            canvas = (
                tiles.view(th, tw, grid, grid, dim).permute(0, 2, 1, 3, 4).reshape(th * grid, tw * grid, dim)
            )
            rows, cols = unpadded_features(h, w, th * grid, tw * grid)
            top, left = (th * grid - rows) // 2, (tw * grid - cols) // 2
            canvas = canvas[top : top + rows, left : left + cols]  # (rows, cols, D)
            newline = self.image_newline.to(canvas.dtype).view(1, 1, dim).expand(rows, 1, dim)
            canvas = torch.cat([canvas, newline], dim=1).flatten(0, 1)  # (rows * (cols + 1), D)
            images.append(torch.cat([base, canvas], dim=0))
        return images

    def placeholder_mask(
        self, input_ids: torch.Tensor | None, embeds: torch.Tensor, token_id: int
    ) -> torch.Tensor:
        """(B, L) True at the ``token_id`` placeholders; from ``embeds`` (B, L, D) when there are no ids
        (positions whose embedding equals the placeholder's). The host provides ``get_input_embeddings``."""
        if input_ids is not None:
            return input_ids == token_id
        ref = self.get_input_embeddings()(torch.tensor(token_id, device=embeds.device))
        return (embeds == ref).all(-1)

    @staticmethod
    def scatter_features(
        embeds: torch.Tensor, mask: torch.Tensor, features: list[torch.Tensor], kind: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``features`` (one (tokens, D) per item, in prompt order) into ``embeds`` (B, L, D) at
        ``mask``; returns the new embeddings and the features as one (sum tokens, D) tensor.

        Raises [`PlaceholderMismatchError`] when the placeholder count differs from the features'.
        """
        flat = torch.cat(features, dim=0).to(embeds.device, embeds.dtype)
        n_tokens = mask.sum()
        if torch.compiler.is_compiling():
            # a hint for the tracer instead of a graph break (as transformers' torch_compilable_check)
            torch._check_tensor_all(n_tokens == flat.shape[0])
        elif int(n_tokens) != flat.shape[0]:
            raise PlaceholderMismatchError(
                f"The prompt has {int(n_tokens)} <{kind}> tokens but the {len(features)} {kind}(s) given produce "
                f"{flat.shape[0]} features; expand each <{kind}> placeholder with the processor "
                f"(one placeholder per {kind}, in order)."
            )
        return embeds.masked_scatter(mask.unsqueeze(-1).to(embeds.device), flat), flat


__all__ = [
    "VisualTokenLayout",
    "add_frame_newlines",
    "drop_padding",
    "num_image_crops",
    "spatial_pool",
    "video_frames",
]
