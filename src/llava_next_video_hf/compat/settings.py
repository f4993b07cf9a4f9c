"""What every foreign-config reader shares: the user's [`Settings`], the linear RoPE factor wherever a
text config dict keeps it, building our config, and loading the tokenizer."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..configuration import LlavaNextVideoAnyResConfig
from ..errors import ConversionError


def name_list(items: Any, limit: int = 20) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


ARCHITECTURE = "LlavaNextVideoAnyResForConditionalGeneration"


#: the paper's zero-shot video settings for image checkpoints (and lmms-lab configs that state none)
PAPER_VIDEO_SETTINGS = {
    "spatial_pool_stride": 2,
    "spatial_pool_mode": "average",
    "spatial_pool_position": "before_projector",
    "video_newline_position": "no_token",
}


def _rope_type(params: dict) -> str | None:
    return params.get("rope_type", params.get("type"))


def linear_rope_factor(*configs: dict | None) -> float | None:
    """The linear RoPE factor a (text) config dict carries, wherever it is: ``rope_parameters``,
    ``rope_scaling`` (original configs) or top-level ``type``/``factor`` keys (what transformers'
    LLaVA-NeXT-Video conversion script writes, and transformers then ignores). None if there is none."""
    for cfg in configs:
        if not cfg:
            continue
        for key in ("rope_parameters", "rope_scaling"):
            params = cfg.get(key)
            if isinstance(params, dict) and _rope_type(params) == "linear" and "factor" in params:
                return float(params["factor"])
        if _rope_type(cfg) == "linear" and "factor" in cfg:
            return float(cfg["factor"])
    return None


def _normalize_text_rope(text: dict) -> tuple[dict, float | None]:
    """Take a linear factor out of a text config dict (our config re-applies it by the rule).

    Returns (text config without the factor, factor or None). ``max_position_embeddings`` ends up
    the context the LLM was trained with (from ``rope_parameters["original_max_position_embeddings"]``
    when a config records it there). Other RoPE scalings (dynamic, yarn, llama3, ...) stay as they are.
    """
    text = dict(text)
    factor = linear_rope_factor(text)
    params = text.get("rope_parameters") or text.get("rope_scaling") or {}
    if _rope_type(text) == "linear":  # stray top-level keys
        for key in ("type", "rope_type", "factor"):
            text.pop(key, None)
    if factor is not None:
        if params.get("original_max_position_embeddings"):
            text["max_position_embeddings"] = int(params["original_max_position_embeddings"])
        theta = params.get("rope_theta", text.get("rope_theta"))
        for key in ("rope_scaling", "rope_theta"):
            text.pop(key, None)
        text["rope_parameters"] = {"rope_type": "default", **({"rope_theta": theta} if theta else {})}
        if factor == 1.0:
            factor = None
    return text, factor


@dataclass
class Settings:
    """What the user asked for on top of the checkpoint's own settings (None = keep)."""

    max_frames: int | None = None
    rope_factor: float | str | None = None
    num_frames: int | None = None
    spatial_pool_stride: int | None = None
    spatial_pool_mode: str | None = None
    spatial_pool_position: str | None = None
    video_newline_position: str | None = None
    chat_template: str | None = None
    vision_config: str | None = None
    dtype: str = "auto"

    def video(self) -> dict:
        keys = ("spatial_pool_stride", "spatial_pool_mode", "spatial_pool_position", "video_newline_position")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def rope(self, source_factor: float | None) -> dict:
        """Config fields for the RoPE request: flags win over the factor found in the checkpoint."""
        fields: dict[str, Any] = {}
        if self.num_frames is not None:
            fields["num_frames"] = self.num_frames
        if self.max_frames is not None:
            fields.update(max_frames=self.max_frames, rope_scaling_factor="auto")
        elif self.rope_factor is not None:
            fields["rope_scaling_factor"] = self.rope_factor
        elif source_factor is not None:
            fields["rope_scaling_factor"] = source_factor
        return fields


def build_config(text: dict | None, vision: dict | None, fields: dict) -> LlavaNextVideoAnyResConfig:
    try:
        config = LlavaNextVideoAnyResConfig(text_config=text, vision_config=vision, **fields)
    except (ValueError, TypeError, KeyError) as err:
        raise ConversionError(f"the derived configuration is invalid: {err}") from err
    config.architectures = [ARCHITECTURE]
    return config


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()  # e.g. "model of type llava_llama" when a tokenizer reads config.json
    try:
        yield
    finally:
        logging.set_verbosity(level)


def load_tokenizer(path: str | os.PathLike, **kwargs: Any) -> Any:
    """The checkpoint's tokenizer (tokenizer files only: no code is run)."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ConversionError(f"{path}: cannot load its tokenizer ({err})") from err
