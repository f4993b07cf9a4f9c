# Copyright 2026 The llava-next-video-hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of LLaVA-NeXT-Video (AnyRes): vision tower + projector + pooling + LLM with scaled RoPE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto import CONFIG_MAPPING

from .rope import TEXT_TOKEN_BUDGET, rope_factor
from .visual_tokens import DEFAULT_GRID_PINPOINTS, max_frames_that_fit, num_image_tokens, num_video_tokens

#: ``model_type`` of another family's config.json -> ``reader(config_dict, path) -> our config dict``,
#: used by ``get_config_dict``. Filled by ``compat.register()`` (the layer above, run when the package
#: registers with transformers) for llava-hf's ``llava_next_video`` and ``llava_next``.
FOREIGN_CONFIG_READERS: dict[str, Callable[[dict, Any], dict]] = {}


@strict
class LlavaNextVideoAnyResConfig(PreTrainedConfig):
    r"""Configuration of [`LlavaNextVideoAnyResForConditionalGeneration`].

    Args:
        vision_config: config of the vision tower (CLIP or SigLIP vision model), dict or config.
        text_config: config of the language model (any causal LM: Llama, Mistral, Qwen2, ...).
        image_token_id / video_token_id: ids of the ``<image>`` / ``<video>`` placeholders.
        projector_hidden_act / multimodal_projector_bias: the Linear-act-Linear projector.
        vision_feature_select_strategy: ``"default"`` drops the CLS feature, ``"full"`` keeps all.
        vision_feature_layer: hidden-state index (or list of indices, concatenated) taken from the tower.
        image_grid_pinpoints: AnyRes canvases (height, width) for images.
        spatial_pool_stride / spatial_pool_mode: 2D pooling of each frame's feature grid
            (``average`` | ``max`` | ``bilinear``).
        spatial_pool_position: ``before_projector`` (2024 release, transformers) or ``after_projector``
            (OneVision-era code).
        video_newline_position: ``no_token`` | ``one_token`` | ``frame`` | ``grid`` (``image_newline``).
        num_frames: frames the processor samples from a video by default.
        max_frames: the frame budget (upper bound when sampling by fps; drives ``rope_scaling_factor="auto"``).
        rope_scaling_factor: ``None`` keeps the text config's RoPE, ``"auto"`` derives the linear factor
            from ``max_frames`` (or ``num_frames``) by [`rope.rope_factor`], a number sets it explicitly.
            The factor is written into ``text_config.rope_parameters`` at init (see
            ``linear_rope_factor``); ``text_config.max_position_embeddings`` stays the context the
            LLM was trained with, and ``context_length`` (positions usable) is the two multiplied —
            the convention of transformers' configs and of vLLM's ``max_model_len``.
    """

    model_type = "llava_next_video_anyres"
    attribute_map = {"image_token_index": "image_token_id", "video_token_index": "video_token_id"}
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32001
    video_token_id: int = 32000
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    vision_feature_select_strategy: Literal["default", "full"] = "default"
    vision_feature_layer: int | list[int] = -2
    image_grid_pinpoints: list | None = None
    tie_word_embeddings: bool = False
    spatial_pool_stride: int = 2
    spatial_pool_mode: Literal["average", "max", "bilinear"] = "average"
    spatial_pool_position: Literal["before_projector", "after_projector"] = "before_projector"
    video_newline_position: Literal["no_token", "one_token", "frame", "grid"] = "no_token"
    num_frames: int = 32
    max_frames: int | None = None
    rope_scaling_factor: float | int | str | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.vision_config, dict):
            self.vision_config = CONFIG_MAPPING[self.vision_config.get("model_type", "clip_vision_model")](
                **{k: v for k, v in self.vision_config.items() if k != "model_type"}
            )
        elif self.vision_config is None:
            self.vision_config = CONFIG_MAPPING["clip_vision_model"](
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=336, patch_size=14, projection_dim=768,
            )  # fmt: skip
        if isinstance(self.text_config, dict):
            self.text_config = CONFIG_MAPPING[self.text_config.get("model_type", "llama")](
                **{k: v for k, v in self.text_config.items() if k != "model_type"}
            )
        elif self.text_config is None:
            self.text_config = CONFIG_MAPPING["llama"]()
        if self.image_grid_pinpoints is None:
            self.image_grid_pinpoints = [list(p) for p in DEFAULT_GRID_PINPOINTS]
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        legacy = kwargs.pop("original_max_position_embeddings", None)
        if legacy:  # earlier builds stretched max_position_embeddings and kept the trained length here
            self.text_config.max_position_embeddings = int(legacy)
        self._resolve_rope()
        super().__post_init__(**kwargs)

    # ---- length generalization -------------------------------------------------------------
    def _resolve_rope(self) -> None:
        """Write the requested linear RoPE factor into ``text_config`` (idempotent).

        ``rope_scaling_factor`` keeps what was asked (``"auto"`` stays ``"auto"``, so a new frame
        budget at load time re-derives the factor); the factor in force is [`linear_rope_factor`].
        """
        requested = self.rope_scaling_factor
        if requested is None:
            return  # leave the LLM's RoPE as it is (a linear factor already there stays in force)
        if requested == "auto":
            frames = self.max_frames or self.num_frames
            factor = float(rope_factor(self.num_video_tokens(frames), self.trained_context_length))
        elif isinstance(requested, str):
            raise ValueError(f"rope_scaling_factor must be None, 'auto' or a number >= 1, got {requested!r}")
        else:
            factor = float(requested)
        if factor < 1:
            raise ValueError(f"rope_scaling_factor must be >= 1, got {factor}")
        apply_linear_rope(self.text_config, factor)

    @property
    def linear_rope_factor(self) -> float:
        """The linear RoPE factor in force in ``text_config`` (1.0 when positions are not scaled)."""
        return linear_factor_of(self.text_config)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """Read config.json; a llava-hf (``llava_next_video``/``llava_next``) config is translated to ours
        (with a warning that it was derived), so ``from_pretrained(<llava-hf folder>)`` just works."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        reader = FOREIGN_CONFIG_READERS.get(config_dict.get("model_type"))
        if reader is not None:
            config_dict = reader(config_dict, pretrained_model_name_or_path)
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """Like ``PreTrainedConfig.from_dict``, but top-level fields given as kwargs (``max_frames=``,
        ``rope_scaling_factor=``, ...) are applied *before* init, so the RoPE rule sees them."""
        config_dict = dict(config_dict)
        for key in list(kwargs):
            if key in LlavaNextVideoAnyResConfig.__annotations__ and key not in cls.sub_configs:
                config_dict[key] = kwargs.pop(key)
        return super().from_dict(config_dict, **kwargs)

    # ---- token math (delegates to rope.py) ------------------------------------------------
    @property
    def context_length(self) -> int:
        """Positions the language model can use at its current RoPE factor (see [`context_length_of`])."""
        return context_length_of(self.text_config)

    @property
    def trained_context_length(self) -> int:
        """Positions the language model was trained with (``text_config.max_position_embeddings``)."""
        return int(self.text_config.max_position_embeddings)

    @property
    def vision_has_cls(self) -> bool:
        """Whether the vision tower prepends a CLS feature (CLIP does, SigLIP does not)."""
        return "clip" in getattr(self.vision_config, "model_type", "")

    def video_token_kwargs(self) -> dict:
        """The arguments of [`visual_tokens.num_video_tokens`] this config implies."""
        return {
            "image_size": self.vision_config.image_size,
            "patch_size": self.vision_config.patch_size,
            "stride": self.spatial_pool_stride,
            "mode": self.spatial_pool_mode,
            "newline_position": self.video_newline_position,
        }

    def num_video_tokens(self, num_frames: int) -> int:
        """``<video>`` tokens of a clip of ``num_frames`` frames under this config."""
        return num_video_tokens(num_frames, **self.video_token_kwargs())

    @property
    def frames_that_fit(self) -> int:
        """Frames of one video that fit the context next to the text budget (``rope.TEXT_TOKEN_BUDGET``)."""
        return max_frames_that_fit(self.context_length, TEXT_TOKEN_BUDGET, **self.video_token_kwargs())

    def num_image_tokens(self, height: int, width: int) -> int:
        """``<image>`` tokens of an image of ``height`` x ``width`` pixels under this config."""
        return num_image_tokens(
            height,
            width,
            image_size=self.vision_config.image_size,
            patch_size=self.vision_config.patch_size,
            grid_pinpoints=self.image_grid_pinpoints,
            keeps_cls=self.vision_feature_select_strategy == "full" and self.vision_has_cls,
        )


def linear_factor_of(text_config: PreTrainedConfig) -> float:
    """The linear RoPE factor in force in a text config (1.0 when positions are not scaled)."""
    params = getattr(text_config, "rope_parameters", None) or {}
    return float(params.get("factor", 1.0)) if params.get("rope_type") == "linear" else 1.0


def context_length_of(text_config: PreTrainedConfig) -> int:
    """Positions a language model can use: ``max_position_embeddings`` (trained) x its linear RoPE factor.

    The one source of truth is the text config as transformers and vLLM read it: the trained context
    in ``max_position_embeddings``, the factor in ``rope_parameters``; vLLM's default ``max_model_len``
    is this product too.
    """
    return int(round(int(text_config.max_position_embeddings) * linear_factor_of(text_config)))


def apply_linear_rope(text_config: PreTrainedConfig, factor: float) -> None:
    """Set linear RoPE scaling ``factor`` on ``text_config`` (``max_position_embeddings`` keeps the
    trained context; see [`context_length_of`]).

    ``factor == 1`` restores plain RoPE. Only the ``rope_parameters`` keys this rule owns change.
    """
    params = dict(getattr(text_config, "rope_parameters", None) or {})
    if factor == 1.0:
        params.pop("factor", None)
        params["rope_type"] = "default"
    else:
        params.update(rope_type="linear", factor=float(factor))
    text_config.rope_parameters = params


__all__ = ["LlavaNextVideoAnyResConfig", "apply_linear_rope", "context_length_of", "linear_factor_of"]
