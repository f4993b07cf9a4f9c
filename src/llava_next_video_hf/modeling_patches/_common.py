"""Bookkeeping shared by the video and RoPE patches: what a patch changed, so `undo` can restore it.

Everything a patch touches is recorded in one [`PatchState`] stored on the patched model instance
(attribute ``_llava_next_video_patch``); nothing is stored on classes. Weights are never modified,
except an explicitly reported embedding resize when the tokenizer had no ``<video>`` token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import (
    LlavaNextForConditionalGeneration,
    LlavaNextVideoForConditionalGeneration,
    PreTrainedConfig,
)

from ..configuration import LlavaNextVideoAnyResConfig

STATE_ATTR = "_llava_next_video_patch"

#: Stock transformers classes `enable_video` patches (instances only; the classes stay untouched).
VIDEO_CLASSES: tuple[type, ...] = (LlavaNextForConditionalGeneration, LlavaNextVideoForConditionalGeneration)

#: Marks "the attribute did not exist" in saved values.
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()


@dataclass(frozen=True)
class VideoOptions:
    """How `enable_video` turns frames into tokens (the fields of [`LlavaNextVideoAnyResConfig`])."""

    spatial_pool_stride: int = 2
    spatial_pool_mode: str = "average"
    spatial_pool_position: str = "before_projector"
    newline_position: str = "no_token"
    max_frames: int | None = None


@dataclass
class VideoPatch:
    """What `enable_video` changed on one model."""

    options: VideoOptions
    video_token_id: int
    path: Any  # video._VideoPath: our model's video code bound to the stock modules
    saved_attrs: list[tuple[Any, str, Any]] = field(default_factory=list)  # (object, name, previous value)
    previous_video_token_id: Any = MISSING  # the config's value before the patch
    resized_embeddings: tuple[int, int] | None = None  # (rows before, rows after), reported when done
    previous_vocab_attr: Any = MISSING  # transformers' resize sets ``model.vocab_size``


@dataclass
class RopePatch:
    """What `scale_rope` changed on one model (everything needed to restore it exactly)."""

    original_context: int  # positions the LLM was trained with (factor 1)
    original_factor: float  # the linear factor the model had before any patch
    factor: float  # the factor now in place
    configs: list[tuple[PreTrainedConfig, dict, int]]  # (config, rope_parameters, max_position_embeddings)
    rotaries: list[tuple[nn.Module, dict]]  # (rotary module, its saved buffers and attributes)
    top_config: tuple[PreTrainedConfig, Any] | None = None  # our config's ``rope_scaling_factor``


@dataclass
class PatchState:
    """All patches applied to one model instance."""

    video: VideoPatch | None = None
    rope: RopePatch | None = None


def get_patch_state(model: nn.Module) -> PatchState | None:
    """The record of the patches applied to ``model`` (``None`` when it is unpatched)."""
    return model.__dict__.get(STATE_ATTR)


def ensure_state(model: nn.Module) -> PatchState:
    """The model's patch record, created empty when missing."""
    state = get_patch_state(model)
    if state is None:
        state = PatchState()
        model.__dict__[STATE_ATTR] = state
    return state


def drop_state_if_empty(model: nn.Module) -> None:
    """Forget the record once no patch is left."""
    state = get_patch_state(model)
    if state is not None and state.video is None and state.rope is None:
        del model.__dict__[STATE_ATTR]


def stock_options(model: nn.Module) -> VideoOptions:
    """The video options an unpatched model implies: its config's pooling (LLaVA-NeXT-Video), else 2x2 average."""
    cfg = model.config
    return VideoOptions(
        spatial_pool_stride=int(getattr(cfg, "spatial_pool_stride", 2)),
        spatial_pool_mode=str(getattr(cfg, "spatial_pool_mode", "average")),
    )


def default_options(model: nn.Module) -> VideoOptions:
    """The video options in force: the patch's when patched, else [`stock_options`]."""
    state = get_patch_state(model)
    if state is not None and state.video is not None:
        return state.video.options
    return stock_options(model)


def video_token_kwargs(model: nn.Module) -> dict:
    """The arguments of [`visual_tokens.num_video_tokens`] for ``model``'s videos (its frame size and options)."""
    cfg = model.config
    if isinstance(cfg, LlavaNextVideoAnyResConfig):
        return cfg.video_token_kwargs()
    if isinstance(model, VIDEO_CLASSES):
        options = default_options(model)
        return {
            "image_size": int(cfg.vision_config.image_size),
            "patch_size": int(cfg.vision_config.patch_size),
            "stride": options.spatial_pool_stride,
            # a stock learned ``conv`` pooler (kernel = step = stride) keeps floor(grid / stride) as average
            "mode": "average" if options.spatial_pool_mode == "conv" else options.spatial_pool_mode,
            "newline_position": options.newline_position,
        }
    raise ValueError(
        f"max_frames needs a video-capable LLaVA model to count frame tokens; {type(model).__name__} has no "
        "vision tower. Pass factor= instead (see llava_next_video_hf.rope.rope_factor)."
    )
