"""transformers' ``LlavaNextVideo``/``LlavaNext`` (llava-hf) checkpoints: their config in our terms,
their weight names at load time, and [`register`] (what the package runs when it registers with
transformers)."""

from __future__ import annotations

import os
import warnings

from ..configuration import FOREIGN_CONFIG_READERS, LlavaNextVideoAnyResConfig
from ..errors import ConversionError
from .settings import (
    PAPER_VIDEO_SETTINGS,
    Settings,
    _normalize_text_rope,
    build_config,
    load_tokenizer,
)

Rule = tuple[str, str]  # (regex on the source name, replacement)


LLAVA_HF_RULES: list[Rule] = [
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^vision_tower\.(?:vision_model\.)?", "model.vision_tower."),
    (r"^model\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^multi_modal_projector\.", "model.multi_modal_projector."),
    (r"^image_newline$", "model.image_newline"),
    (
        r"^(model\.(?:language_model|vision_tower|multi_modal_projector)\.|model\.image_newline$|lm_head\.)",
        r"\1",
    ),
]


def config_from_llava_hf(
    config_dict: dict, *, video_token_id: int | None = None, settings: Settings | None = None
) -> LlavaNextVideoAnyResConfig:
    """Our config for a llava-hf ``LlavaNextVideo`` or ``LlavaNext`` (image) ``config.json`` dict.

    Video checkpoints keep their pooling (before the projector, as transformers computes it); image
    checkpoints get the paper's zero-shot video settings and need ``video_token_id`` (their tokenizer
    has no ``<video>``). A linear RoPE factor is carried wherever the text config holds it.
    """
    settings = settings or Settings()
    kind = config_dict.get("model_type")
    if kind == "llava_next_video":
        video = {
            "spatial_pool_stride": config_dict.get("spatial_pool_stride", 2),
            "spatial_pool_mode": config_dict.get("spatial_pool_mode", "average"),
            "spatial_pool_position": "before_projector",
            "video_newline_position": "no_token",
        }
        video_token_id = config_dict.get("video_token_index", config_dict.get("video_token_id"))
    elif kind == "llava_next":
        video = dict(PAPER_VIDEO_SETTINGS)
        if video_token_id is None:
            raise ConversionError(
                "this LLaVA-NeXT image checkpoint has no <video> token: convert it with "
                "`llava-next-video convert --from llava-hf-image SRC DST`, which adds one"
            )
    else:
        raise ConversionError(
            f"not a llava-hf config: model_type {kind!r} (expected llava_next_video or llava_next)"
        )
    text, factor = _normalize_text_rope(config_dict.get("text_config") or {})
    fields = {
        "image_token_id": config_dict.get("image_token_index", config_dict.get("image_token_id", 32000)),
        "video_token_id": video_token_id,
        "tie_word_embeddings": config_dict.get("tie_word_embeddings", False),
        **{k: config_dict[k] for k in _SHARED_FIELDS if k in config_dict},
        **video,
        **settings.video(),
        **settings.rope(factor),
    }
    return build_config(text or None, config_dict.get("vision_config"), fields)


_SHARED_FIELDS = (  # fields of LlavaNextVideoConfig/LlavaNextConfig that mean the same in ours
    "projector_hidden_act",
    "multimodal_projector_bias",
    "vision_feature_select_strategy",
    "vision_feature_layer",
    "image_grid_pinpoints",
)


def config_from_llava_hf_folder(config_dict: dict, path: str | os.PathLike) -> LlavaNextVideoAnyResConfig:
    """Our config for the llava-hf folder ``path`` whose config.json is ``config_dict``, with a warning
    that says it was derived. ``path`` gives the tokenizer (an image checkpoint's ``<video>`` id)."""
    video_id = None
    if config_dict.get("model_type") == "llava_next":
        video_id = load_tokenizer(path).get_vocab().get("<video>")
    config = config_from_llava_hf(config_dict, video_token_id=video_id)
    warnings.warn(
        f"config was derived from a llava-hf {config_dict.get('model_type')} checkpoint ({path}): "
        f"pooling {config.spatial_pool_mode}/{config.spatial_pool_stride} before the projector, no video "
        f"newline, RoPE factor {_factor_of(config)}. Convert it once with `llava-next-video convert` "
        "to save this config and the processor files next to the weights.",
        UserWarning,
        stacklevel=3,
    )
    return config


def config_dict_from_llava_hf(config_dict: dict, path: str | os.PathLike) -> dict:
    """Hook for ``LlavaNextVideoAnyResConfig.get_config_dict``: our config dict for a llava-hf folder
    (see [`config_from_llava_hf_folder`])."""
    return config_from_llava_hf_folder(config_dict, path).to_dict()


def _factor_of(config: LlavaNextVideoAnyResConfig) -> float:
    params = getattr(config.text_config, "rope_parameters", None) or {}
    return float(params.get("factor", 1.0)) if params.get("rope_type") == "linear" else 1.0


def register_key_mapping() -> None:
    """Let ``from_pretrained`` of our model read llava-hf weight names (legacy and transformers-5 layouts).

    Registers with transformers' conversion mapping (``register_checkpoint_conversion_mapping``) the
    renamings transformers uses for its own ``llava_next`` models, for our ``model_type``. They apply on
    load only: saving writes our names (the reverse of each renaming is a no-op). Idempotent.
    """
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    class LoadOnlyRenaming(WeightRenaming):
        """A renaming applied when loading and never when saving."""

        def reverse_transform(self) -> WeightRenaming:
            noop = WeightRenaming(source_patterns=r"^(?!)never$", target_patterns="never")
            noop.scope_prefix, noop.base_model_prefix = self.scope_prefix, self.base_model_prefix
            return noop

    renamings = [LoadOnlyRenaming(source, target) for source, target in LLAVA_HF_RULES[:-1]]
    register_checkpoint_conversion_mapping(LlavaNextVideoAnyResConfig.model_type, renamings, overwrite=True)


def register() -> None:
    """Make transformers read llava-hf checkpoints as ours at load time (idempotent): the config
    (``LlavaNextVideoAnyResConfig.from_pretrained`` of a llava-hf folder, with a warning that it was
    derived) and the weight names (``from_pretrained`` of our model)."""
    for model_type in ("llava_next_video", "llava_next"):
        FOREIGN_CONFIG_READERS[model_type] = config_dict_from_llava_hf
    register_key_mapping()
