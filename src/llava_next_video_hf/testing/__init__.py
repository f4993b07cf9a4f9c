"""Helpers for tests, demos and benchmarks: tiny checkpoints, real tokenizers, synthetic videos and a task.

- [`checkpoints`]: tiny random checkpoints of our format, of transformers' own LLaVA-NeXT classes and
  of the original (lmms-lab) layout (``make_tiny_checkpoint``, ``tiny_config``, ...).
- [`tokenizers`]: real tokenizers built offline (byte-level BPE, SentencePiece-style, Qwen-style).
- [`synthetic`]: synthetic videos encoded with PyAV whose frames carry their index.
- [`tasks`]: the synthetic video-QA task the tiny models are trained and evaluated on.
- [`benchmarks`]: local stand-ins of the paper's lmms-eval benchmarks (their task YAMLs, our data).

The checkpoint and tokenizer helpers are importable from here; so are [`synthetic`]'s
``make_video``, ``make_video_bytes``, ``make_frames`` and ``read_frame_index``, loaded on first
use (PyAV is imported then). Nothing here imports torch or transformers until a helper needs them.
"""

from __future__ import annotations

from typing import Any

from .checkpoints import (
    LMMS_LAB_VISION_TOWER,
    lmms_lab_config,
    lmms_lab_name,
    make_llava_hf_checkpoint,
    make_llava_hf_image_model,
    make_llava_hf_video_model,
    make_lmms_lab_checkpoint,
    make_lmms_lab_model,
    make_processor,
    make_tiny_checkpoint,
    make_tiny_model,
    tiny_config,
    tiny_text_config,
    tiny_vision_config,
)
from .tokenizers import (
    SENTENCEPIECE_SYMBOLS,
    SENTENCEPIECE_WORDS,
    SPECIAL_TOKENS,
    make_plain_tokenizer,
    make_qwen_tokenizer,
    make_sentencepiece_tokenizer,
    make_tokenizer,
)

#: names of [`synthetic`] re-exported here on first use
_SYNTHETIC_NAMES = ("make_video", "make_video_bytes", "make_frames", "read_frame_index")

__all__ = [
    "LMMS_LAB_VISION_TOWER",
    "SENTENCEPIECE_SYMBOLS",
    "SENTENCEPIECE_WORDS",
    "SPECIAL_TOKENS",
    "lmms_lab_config",
    "lmms_lab_name",
    "make_llava_hf_checkpoint",
    "make_llava_hf_image_model",
    "make_llava_hf_video_model",
    "make_lmms_lab_checkpoint",
    "make_lmms_lab_model",
    "make_plain_tokenizer",
    "make_processor",
    "make_qwen_tokenizer",
    "make_sentencepiece_tokenizer",
    "make_tiny_checkpoint",
    "make_tiny_model",
    "make_tokenizer",
    "tiny_config",
    "tiny_text_config",
    "tiny_vision_config",
    *_SYNTHETIC_NAMES,
]


def __getattr__(name: str) -> Any:
    """[`synthetic`]'s video helpers, imported on first use (PyAV comes with them)."""
    if name in _SYNTHETIC_NAMES:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
