"""Zero-shot video for stock transformers LLaVA-NeXT models (the paper's first result).

An *image* LLaVA-NeXT model understands video, unchanged, when each frame is fed like an AnyRes
tile, pooled, and its tokens placed where the prompt has ``<video>`` placeholders. `enable_video`
gives a loaded ``LlavaNextForConditionalGeneration`` that ability without converting anything:

frames (B, T, 3, H, W) -> vision tower -> drop CLS -> spatial pool (before/after the projector)
-> projector -> newline policy -> scattered at ``config.video_token_id`` -> the stock forward
(which then handles images and the language model as before).

The frame code is our model's own ([`LlavaNextVideoAnyResModel`]'s methods, bound to the stock
modules by `_VideoPath`), so a patched stock model and a converted checkpoint compute the same
thing. Only the instance is patched (``forward``/``get_video_features`` instance attributes,
``config.video_token_id``); the class and the weights are untouched.

A stock ``LlavaNextVideoForConditionalGeneration`` already takes videos (2x2 average pooling before
the projector, no newline). `enable_video` routes its videos through the same path, so the pooling,
newline and ``video_num_frames`` options apply to it too; with its own settings (the defaults) the
output equals the stock video path. Its learned ``conv`` pooler has no counterpart and is refused.
"""

from __future__ import annotations

import functools
import inspect
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..configuration import LlavaNextVideoAnyResConfig, linear_factor_of
from ..errors import UnsupportedModelError
from ..modeling import TowerVideoFeatures
from ._common import (
    MISSING,
    VIDEO_CLASSES,
    VideoOptions,
    VideoPatch,
    default_options,
    drop_state_if_empty,
    ensure_state,
    get_patch_state,
    stock_options,
)
from .rope_scaling import scale_rope, text_config

VIDEO_TOKEN = "<video>"


class _VideoPath(TowerVideoFeatures):
    """Our model's video code running on a stock model's modules.

    The methods are [`TowerVideoFeatures`]'s (our model's own, not copies): frames go through the
    vision tower, ``spatial_pool``, the projector and ``add_frame_newlines`` exactly as in our model,
    with the options read from ``config`` (a [`LlavaNextVideoAnyResConfig`] describing the patched
    model). Not an ``nn.Module``: it holds references, so the model's state dict does not change.
    """

    def __init__(self, base: nn.Module, config: LlavaNextVideoAnyResConfig):
        self.base = base  # the stock LlavaNextModel / LlavaNextVideoModel
        self.config = config

    @property
    def vision_tower(self) -> nn.Module:
        return self.base.vision_tower

    @property
    def multi_modal_projector(self) -> nn.Module:
        return self.base.multi_modal_projector

    @property
    def image_newline(self) -> nn.Parameter:
        return self.base.image_newline

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def encoder_output(
        self,
        pixel_values_videos: torch.Tensor | list[torch.Tensor],
        video_num_frames: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPooling:
        """transformers' ``get_video_features`` contract: ``pooler_output`` holds one
        (num_video_tokens(T_i), D) tensor per video. ``pixel_values_videos``: (B, T_max, 3, H, W)
        zero-padded with ``video_num_frames`` (B,), or a list of (T_i, 3, H, W)."""
        return self.get_video_features(pixel_values_videos, video_num_frames, **kwargs)


# ---- the patched forward ----------------------------------------------------------------------
def _video_forward(model: nn.Module, stock: Callable, kwargs: dict[str, Any]) -> Any:
    """Encode videos (or take them pre-encoded by ``generate``), scatter them, call the stock forward."""
    state = get_patch_state(model)
    videos = kwargs.pop("pixel_values_videos", None)
    lengths = kwargs.pop("video_num_frames", None)
    encoded = kwargs.get("mm_encoder_outputs") or {}
    features = None
    if encoded.get("video") is not None:  # generate() ran get_video_features before the prefill
        if videos is not None:
            raise ValueError("Pass either pixel_values_videos or mm_encoder_outputs['video'], not both")
        encoded = dict(encoded)
        features = list(encoded.pop("video").pooler_output)
        kwargs["mm_encoder_outputs"] = encoded or None
    elif videos is not None and len(videos) > 0:
        features = list(state.video.path.get_video_features(videos, lengths, return_dict=True).pooler_output)
    if features is None:
        return stock(model, **kwargs)

    path = state.video.path
    input_ids, embeds = kwargs.pop("input_ids", None), kwargs.pop("inputs_embeds", None)
    if (input_ids is None) == (embeds is None):
        raise ValueError("Pass exactly one of input_ids or inputs_embeds")
    if embeds is None:
        embeds = model.get_input_embeddings()(input_ids)  # (B, L, D)
    mask = path.placeholder_mask(input_ids, embeds, path.config.video_token_id)  # (B, L)
    embeds, _ = path.scatter_features(embeds, mask, features, "video")
    return stock(model, inputs_embeds=embeds, **kwargs)


@functools.cache
def _forward_for(cls: type) -> Callable:
    """A ``forward`` for instances of ``cls``: the stock one plus ``pixel_values_videos``/``video_num_frames``.

    Its signature is the stock one with those two added, so ``generate`` accepts them (it checks
    model kwargs against ``forward``'s signature) and pre-encodes videos for the prefill only.
    """
    stock = cls.forward
    signature = inspect.signature(stock)
    params = list(signature.parameters.values())
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD][1:]  # without self

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(positional):
            raise TypeError(f"forward() takes {len(positional)} positional arguments, got {len(args)}")
        for name, value in zip(positional, args, strict=False):
            if name in kwargs:
                raise TypeError(f"forward() got multiple values for argument {name!r}")
            kwargs[name] = value
        return _video_forward(self, stock, kwargs)

    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
        for name in ("pixel_values_videos", "video_num_frames")
        if name not in signature.parameters
    ]
    var_kw = [p for p in params if p.kind is p.VAR_KEYWORD]
    forward.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in params if p.kind is not p.VAR_KEYWORD] + extra + var_kw
    )
    forward.__doc__ = (
        f"{cls.__name__}.forward patched by enable_video: also takes pixel_values_videos (B, T, 3, H, W) "
        "and video_num_frames (B,), scattered at config.video_token_id."
    )
    return forward


# ---- tokens and configs -----------------------------------------------------------------------
def _tokenizer_of(tokenizer_or_processor: Any) -> Any:
    return getattr(tokenizer_or_processor, "tokenizer", None) or tokenizer_or_processor


def _token_id(tokenizer: Any, token: str = VIDEO_TOKEN) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and tokenizer.unk_token != token):
        return None
    return int(token_id)


def add_video_token(tokenizer_or_processor: Any) -> int:
    """Make sure the tokenizer (or a processor's) knows ``<video>`` as a special token; return its id.

    Adds it only when missing (the tokenizer grows by one; the model's embeddings are resized by
    `enable_video` only if the id is beyond them).
    """
    tokenizer = _tokenizer_of(tokenizer_or_processor)
    token_id = _token_id(tokenizer)
    if token_id is None:
        tokenizer.add_tokens([VIDEO_TOKEN], special_tokens=True)
        token_id = _token_id(tokenizer)
    return int(token_id)


def _require_video_class(model: nn.Module, what: str) -> None:
    if isinstance(getattr(model, "config", None), LlavaNextVideoAnyResConfig):
        raise UnsupportedModelError(
            f"{what}: {type(model).__name__} takes videos natively; set its config "
            "(spatial_pool_*, video_newline_position, max_frames) instead of patching it"
        )
    if not isinstance(model, VIDEO_CLASSES):
        names = ", ".join(c.__name__ for c in VIDEO_CLASSES)
        raise UnsupportedModelError(f"{what} does not support {type(model).__name__}; supported: {names}")
    if getattr(model.config, "spatial_pool_mode", "average") == "conv":
        raise UnsupportedModelError(
            f"{what}: this {type(model).__name__} pools frames with a learned conv layer, which the "
            "frame-as-tile path has no counterpart for; use it as it is"
        )


def _config_for_options(
    model: nn.Module, options: VideoOptions, video_token_id: int
) -> LlavaNextVideoAnyResConfig:
    """A [`LlavaNextVideoAnyResConfig`] describing the (patched) stock model; validates ``options``."""
    cfg, text = model.config, text_config(model)
    factor = linear_factor_of(text)
    config = LlavaNextVideoAnyResConfig(
        vision_config=cfg.vision_config.to_dict(),
        text_config=text.to_dict(),
        image_token_id=int(cfg.image_token_id),
        video_token_id=int(video_token_id),
        projector_hidden_act=cfg.projector_hidden_act,
        multimodal_projector_bias=bool(cfg.multimodal_projector_bias),
        vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        vision_feature_layer=cfg.vision_feature_layer,
        image_grid_pinpoints=[list(p) for p in cfg.image_grid_pinpoints],
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        spatial_pool_stride=options.spatial_pool_stride,
        spatial_pool_mode=options.spatial_pool_mode,
        spatial_pool_position=options.spatial_pool_position,
        video_newline_position=options.newline_position,
        max_frames=options.max_frames,
        rope_scaling_factor=factor if factor != 1 else None,
    )
    # frames the processor samples by default: the budget, capped by what fits the context with text
    fits = config.frames_that_fit
    config.num_frames = max(1, min(config.num_frames, options.max_frames or config.num_frames, fits))
    return config


def equivalent_config(model: nn.Module) -> LlavaNextVideoAnyResConfig:
    """The [`LlavaNextVideoAnyResConfig`] a patched (or LLaVA-NeXT-Video) stock model behaves like.

    Token math, context length and RoPE factor as the model is now: feed it to
    ``LlavaNextVideoAnyResProcessor.from_model_config`` (see `make_video_processor`) or to
    ``LlavaNextVideoAnyResForConditionalGeneration`` to get the same model in our class.
    Our own model returns its config.
    """
    if isinstance(getattr(model, "config", None), LlavaNextVideoAnyResConfig):
        return model.config
    _require_video_class(model, "equivalent_config")
    state = get_patch_state(model)
    token_id = (
        state.video.video_token_id if state and state.video else getattr(model.config, "video_token_id", None)
    )
    if token_id is None:
        raise ValueError(
            f"{type(model).__name__} has no video token yet: call enable_video(model, tokenizer=...) first"
        )
    return _config_for_options(model, default_options(model), token_id)


def make_video_processor(model: nn.Module, tokenizer_or_processor: Any, **kwargs: Any) -> Any:
    """Our ``LlavaNextVideoAnyResProcessor`` for a patched model: ``<video>`` expands to its token count.

    ``kwargs`` go to ``from_model_config`` (e.g. ``num_frames``, ``chat_template``).
    """
    from ..processing import LlavaNextVideoAnyResProcessor

    tokenizer = _tokenizer_of(tokenizer_or_processor)
    return LlavaNextVideoAnyResProcessor.from_model_config(equivalent_config(model), tokenizer, **kwargs)


# ---- install / uninstall ----------------------------------------------------------------------
def _find_video_token(model: nn.Module, tokenizer: Any, video_token_id: int | None) -> int | None:
    """The ``<video>`` id: explicit, else the config's, else the tokenizer's (``None``: to be added)."""
    if video_token_id is not None:
        return int(video_token_id)
    if getattr(model.config, "video_token_id", None) is not None:
        return int(model.config.video_token_id)
    if tokenizer is None:
        raise ValueError(
            f"{type(model).__name__} has no video token: pass tokenizer= (its {VIDEO_TOKEN} token is used, "
            "and added when missing) or video_token_id="
        )
    return _token_id(_tokenizer_of(tokenizer))


def _set_attr(patch: VideoPatch, obj: Any, name: str, value: Any) -> None:
    patch.saved_attrs.append((obj, name, obj.__dict__.get(name, MISSING)))
    setattr(obj, name, value)


def _grow_embeddings(model: nn.Module, rows: int, new_rows: int) -> None:
    """Resize input/output embeddings to ``new_rows``; new rows = mean of the old ones (deterministic)."""
    model.resize_token_embeddings(new_rows, mean_resizing=False)
    with torch.no_grad():
        for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
            if emb is not None:
                emb.weight[rows:] = emb.weight[:rows].mean(0)


def _install(
    model: nn.Module, options: VideoOptions, config: LlavaNextVideoAnyResConfig, tokenizer: Any
) -> VideoPatch:
    token_id = int(config.video_token_id)
    patch = VideoPatch(options, token_id, _VideoPath(model.model, config))
    patch.previous_video_token_id = getattr(model.config, "video_token_id", MISSING)
    rows = model.get_input_embeddings().num_embeddings
    if token_id >= rows:
        tokenizer_rows = len(_tokenizer_of(tokenizer)) if tokenizer is not None else 0
        new_rows = max(token_id + 1, tokenizer_rows)
        patch.previous_vocab_attr = model.__dict__.get("vocab_size", MISSING)
        _grow_embeddings(model, rows, new_rows)
        patch.resized_embeddings = (rows, new_rows)
        warnings.warn(
            f"enable_video: {VIDEO_TOKEN} (id {token_id}) is beyond the model's {rows} token embeddings; "
            f"resized input and output embeddings to {new_rows} rows (new rows = mean of the old). "
            "undo(model) shrinks them back.",
            stacklevel=3,
        )
    model.config.video_token_id = token_id
    _set_attr(patch, model, "forward", types.MethodType(_forward_for(type(model)), model))
    _set_attr(patch, model, "get_video_features", patch.path.encoder_output)
    _set_attr(patch, model.model, "get_video_features", patch.path.encoder_output)
    if "video" not in model.input_modalities:  # lets generate() pre-encode videos for the prefill
        _set_attr(patch, model, "input_modalities", (*model.input_modalities, "video"))
    return patch


def enable_video(
    model: nn.Module,
    *,
    spatial_pool_stride: int | None = None,
    spatial_pool_mode: str | None = None,
    newline_position: str = "no_token",
    max_frames: int | None = None,
    spatial_pool_position: str = "before_projector",
    tokenizer: Any = None,
    video_token_id: int | None = None,
) -> nn.Module:
    """Make a stock LLaVA-NeXT model take videos (``pixel_values_videos``) in ``forward`` and ``generate``.

    Args:
        model: a ``LlavaNextForConditionalGeneration`` (zero-shot video) or a
            ``LlavaNextVideoForConditionalGeneration`` (its videos then follow these options). Patched
            in place and returned.
        spatial_pool_stride / spatial_pool_mode: per-frame pooling (``average`` | ``max`` | ``bilinear``);
            default: the model config's (LLaVA-NeXT-Video), else 2 and ``average``.
        newline_position: ``no_token`` (transformers' LLaVA-NeXT-Video layout) | ``one_token`` |
            ``frame`` | ``grid`` (with ``image_newline``).
        max_frames: frame budget; when given, `scale_rope` applies the linear factor
            ``rope.rope_factor`` picks for that many frames (the usable context grows by that factor);
            ``None`` leaves the RoPE as it is.
        spatial_pool_position: ``before_projector`` (2024 release) or ``after_projector``.
        tokenizer: tokenizer or processor; needed when the model config has no ``video_token_id``:
            its ``<video>`` token is used, added when missing. Embeddings are resized only if that
            id is beyond them (a warning says so; `undo` shrinks them back).
        video_token_id: use this id for ``<video>`` instead.

    Calling it again with the same arguments changes nothing; other options replace the previous
    ones. Only the instance is patched: ``save_pretrained`` writes the stock weights and config (with
    ``video_token_id`` and any RoPE factor); a reloaded model needs `enable_video` again. Pair the model with `make_video_processor(model, tokenizer)` so ``<video>`` expands to the
    right number of tokens.

    Raises:
        UnsupportedModelError: ``model`` is not one of the supported classes.
    """
    _require_video_class(model, "enable_video")
    stock = stock_options(model)
    stride = stock.spatial_pool_stride if spatial_pool_stride is None else int(spatial_pool_stride)
    options = VideoOptions(
        spatial_pool_stride=stride,
        spatial_pool_mode=stock.spatial_pool_mode if spatial_pool_mode is None else spatial_pool_mode,
        spatial_pool_position=spatial_pool_position,
        newline_position=newline_position,
        max_frames=None if max_frames is None else int(max_frames),
    )
    state = get_patch_state(model)
    patch = state.video if state is not None else None
    if patch is not None and video_token_id is not None and int(video_token_id) != patch.video_token_id:
        raise ValueError(
            f"the model is already patched with video token id {patch.video_token_id}; undo(model) first"
        )
    token_id = (
        patch.video_token_id if patch is not None else _find_video_token(model, tokenizer, video_token_id)
    )
    # validates the options
    config = _config_for_options(model, options, -1 if token_id is None else token_id)
    if patch is None:
        config.video_token_id = add_video_token(tokenizer) if token_id is None else token_id
        ensure_state(model).video = _install(model, options, config, tokenizer)
    else:
        patch.options, patch.path.config = options, config
    if max_frames is not None:
        scale_rope(model, max_frames=max_frames)
    return model


def undo_video(model: nn.Module) -> nn.Module:
    """Remove `enable_video`'s patch: instance attributes, ``config.video_token_id``, any embedding resize.

    A ``<video>`` token added to a tokenizer stays there (harmless: the model no longer treats it specially).
    """
    state = get_patch_state(model)
    patch = state.video if state is not None else None
    if patch is None:
        return model
    for obj, name, previous in reversed(patch.saved_attrs):
        if previous is MISSING:
            obj.__dict__.pop(name, None)
        else:
            obj.__dict__[name] = previous
    if patch.previous_video_token_id is MISSING:
        if hasattr(model.config, "video_token_id"):
            del model.config.video_token_id
    else:
        model.config.video_token_id = patch.previous_video_token_id
    if patch.resized_embeddings is not None:
        model.resize_token_embeddings(patch.resized_embeddings[0])
        if patch.previous_vocab_attr is MISSING:
            model.__dict__.pop("vocab_size", None)
        else:
            model.__dict__["vocab_size"] = patch.previous_vocab_attr
    state.video = None
    drop_state_if_empty(model)
    return model
