"""The class-name swap of the conformance run: transformers' LLaVA-NeXT-Video names -> ours.

transformers' model tests name ``LlavaNextVideoConfig``, ``LlavaNextVideoModel`` and
``LlavaNextVideoForConditionalGeneration``; [`swap_into`] rebinds those names in a test module to
our classes, and our config accepts the same constructor arguments through [`AnyResConfigShim`].
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from llava_next_video_hf import (
    LlavaNextVideoAnyResConfig,
    LlavaNextVideoAnyResForConditionalGeneration,
    LlavaNextVideoAnyResModel,
)

# transformers' LlavaNextVideoConfig arguments that have no counterpart in ours (they describe
# the same model: our token counts come from the vision config and the pooling settings)
_DROPPED = {"ignore_index", "image_seq_length", "video_seq_length"}
_RENAMED = {"image_token_index": "image_token_id", "video_token_index": "video_token_id"}


def anyres_config(**kwargs: Any) -> LlavaNextVideoAnyResConfig:
    """Our config from the keyword arguments of transformers' ``LlavaNextVideoConfig``."""
    kwargs = {_RENAMED.get(k, k): v for k, v in kwargs.items() if k not in _DROPPED}
    for key in ("vision_config", "text_config"):
        sub = kwargs.get(key)
        if isinstance(sub, dict):
            default = "clip_vision_model" if key == "vision_config" else "llama"
            kwargs[key] = {"model_type": default, **sub}
        elif sub is not None and not isinstance(sub, dict):
            kwargs[key] = sub.to_dict()
    kwargs.setdefault("vision_config", {"model_type": "clip_vision_model"})
    return LlavaNextVideoAnyResConfig(**kwargs)


def anyres_config_from(config: Any) -> LlavaNextVideoAnyResConfig:
    """Our config describing the same model as a transformers ``LlavaNextVideoConfig`` instance."""
    return anyres_config(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        projector_hidden_act=config.projector_hidden_act,
        multimodal_projector_bias=config.multimodal_projector_bias,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_feature_layer=config.vision_feature_layer,
        image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints],
        tie_word_embeddings=config.tie_word_embeddings,
        spatial_pool_stride=config.spatial_pool_stride,
        spatial_pool_mode=config.spatial_pool_mode,
    )


class AnyResConfigShim:
    """Stands in for ``LlavaNextVideoConfig`` in a test module: calling it builds our config."""

    def __new__(cls, *args: Any, **kwargs: Any) -> LlavaNextVideoAnyResConfig:  # type: ignore[misc]
        return anyres_config(*args, **kwargs)


SWAPS = {
    "LlavaNextVideoConfig": AnyResConfigShim,
    "LlavaNextVideoModel": LlavaNextVideoAnyResModel,
    "LlavaNextVideoForConditionalGeneration": LlavaNextVideoAnyResForConditionalGeneration,
}


def register_names() -> None:
    """List our classes wherever transformers lists its LLaVA-NeXT-Video classes by name.

    The common tests pick behaviour by class *name* from ``modeling_auto.*_MAPPING_NAMES`` (which
    classes get labels, which is the base model, which is an image-text-to-text head); those dicts
    only hold transformers' own models. Mirroring the ``llava_next_video`` entries under our
    ``model_type`` makes the mixins treat our classes exactly as transformers' (this process only).
    """
    from transformers.models.auto import modeling_auto

    ours = {
        "LlavaNextVideoModel": LlavaNextVideoAnyResModel.__name__,
        "LlavaNextVideoForConditionalGeneration": LlavaNextVideoAnyResForConditionalGeneration.__name__,
    }
    for name, mapping in vars(modeling_auto).items():
        if name.endswith("_MAPPING_NAMES") and isinstance(mapping, dict):
            theirs = mapping.get("llava_next_video")
            if theirs in ours:
                mapping[LlavaNextVideoAnyResConfig.model_type] = ours[theirs]


def swap_into(module: ModuleType) -> None:
    """Rebind transformers' class names in ``module`` (a loaded copy of a test module) to ours."""
    theirs = {getattr(module, name, None): ours for name, ours in SWAPS.items()}
    for name, ours in SWAPS.items():
        if hasattr(module, name):
            setattr(module, name, ours)
    # test classes captured the classes when they were defined: remap those tuples too
    for value in list(vars(module).values()):
        classes = getattr(value, "all_model_classes", None) if isinstance(value, type) else None
        if classes:
            value.all_model_classes = tuple(theirs.get(c, c) for c in classes)
