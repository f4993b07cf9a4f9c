"""LLaVA-NeXT-Video (AnyRes video + linear-scaled RoPE) for transformers and vLLM.

Importing the package registers its config, model and processors with transformers' Auto
classes (idempotent), so ``AutoModelForImageTextToText.from_pretrained(ckpt)`` and
``AutoProcessor.from_pretrained(ckpt)`` work without ``trust_remote_code``.
"""

from transformers import AutoConfig

from .configuration import LlavaNextVideoAnyResConfig
from .errors import (
    ContextLengthError,
    ConversionError,
    LlavaNextVideoError,
    PlaceholderMismatchError,
    UnsupportedModelError,
    VideoLoadError,
)

__version__ = "0.1.0"

AutoConfig.register(LlavaNextVideoAnyResConfig.model_type, LlavaNextVideoAnyResConfig, exist_ok=True)

__all__ = [
    "ContextLengthError",
    "ConversionError",
    "LlavaNextVideoAnyResConfig",
    "LlavaNextVideoError",
    "PlaceholderMismatchError",
    "UnsupportedModelError",
    "VideoLoadError",
]
