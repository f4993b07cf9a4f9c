"""LLaVA-NeXT-Video (AnyRes video + linear-scaled RoPE) for transformers and vLLM.

Importing the package registers its config, model and processors with transformers' Auto classes
(idempotent), so ``AutoModelForImageTextToText.from_pretrained(ckpt)`` and
``AutoProcessor.from_pretrained(ckpt)`` work without ``trust_remote_code``, whether transformers was
imported before or after this package.

The import itself is light: public names are loaded on first access (as transformers does), and the
registration runs when transformers is imported (at once if it already is; see ``_registration``), so
``import llava_next_video_hf.video_io`` needs neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._registration import register_when_transformers_loads as _register_when_transformers_loads
from .errors import (
    ContextLengthError,
    ConversionError,
    LlavaNextVideoError,
    PlaceholderMismatchError,
    UnsupportedModelError,
    VideoLoadError,
)
from .install_check import check_torch_extensions as _check_torch_extensions


def _distribution_version() -> str:
    """The installed distribution's version: pyproject.toml is its only source."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llava-next-video-hf")
    except PackageNotFoundError:  # a source tree put on sys.path without installing it
        return "0+unknown"


__version__ = _distribution_version()

#: public name -> the submodule that defines it (imported on first access)
_LAZY_NAMES = {
    "LlavaNextVideoAnyResConfig": "configuration",
    "LlavaNextVideoAnyResForConditionalGeneration": "modeling",
    "LlavaNextVideoAnyResModel": "modeling",
    "LlavaNextVideoAnyResImageProcessor": "processing",
    "LlavaNextVideoAnyResProcessor": "processing",
    "LlavaNextVideoAnyResVideoProcessor": "processing",
}

if TYPE_CHECKING:
    from .configuration import LlavaNextVideoAnyResConfig
    from .modeling import LlavaNextVideoAnyResForConditionalGeneration, LlavaNextVideoAnyResModel
    from .processing import (
        LlavaNextVideoAnyResImageProcessor,
        LlavaNextVideoAnyResProcessor,
        LlavaNextVideoAnyResVideoProcessor,
    )


def __getattr__(name: str) -> Any:
    """Load a public class from its submodule on first access (``llava_next_video_hf.LlavaNext...``)."""
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


# before transformers can be imported (it imports torchvision whenever that is installed): a
# CUDA-built torchvision next to the CPU torch gets one message with the fixing command
_check_torch_extensions(suspect_only=True)
_register_when_transformers_loads()

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
