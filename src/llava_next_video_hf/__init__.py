"""LLaVA-NeXT-Video (AnyRes video + linear-scaled RoPE) for transformers and vLLM.

Importing the package registers its config, model and processors with transformers' Auto
classes (idempotent), so ``AutoModelForImageTextToText.from_pretrained(ckpt)`` and
``AutoProcessor.from_pretrained(ckpt)`` work without ``trust_remote_code``.
"""

from transformers import AutoConfig

from .configuration import LlavaNextVideoAnyResConfig
from .convert import register_key_mapping as _register_key_mapping
from .errors import (
    ContextLengthError,
    ConversionError,
    LlavaNextVideoError,
    PlaceholderMismatchError,
    UnsupportedModelError,
    VideoLoadError,
)

__version__ = "0.1.0"

from .modeling import (
    LlavaNextVideoAnyResForConditionalGeneration,
    LlavaNextVideoAnyResModel,
)
from .modeling import (
    register_auto_classes as _register_models,
)
from .processing import (
    LlavaNextVideoAnyResImageProcessor,
    LlavaNextVideoAnyResProcessor,
    LlavaNextVideoAnyResVideoProcessor,
)
from .processing import register_auto_classes as _register_processors

AutoConfig.register(LlavaNextVideoAnyResConfig.model_type, LlavaNextVideoAnyResConfig, exist_ok=True)
_register_models()
_register_processors()
_register_key_mapping()  # from_pretrained reads llava-hf weight names (legacy and current layouts)

__all__ = [
    "ContextLengthError",
    "ConversionError",
    "LlavaNextVideoAnyResConfig",
    "LlavaNextVideoAnyResForConditionalGeneration",
    "LlavaNextVideoAnyResImageProcessor",
    "LlavaNextVideoAnyResModel",
    "LlavaNextVideoAnyResProcessor",
    "LlavaNextVideoAnyResVideoProcessor",
    "LlavaNextVideoError",
    "PlaceholderMismatchError",
    "UnsupportedModelError",
    "VideoLoadError",
]
