"""Patches for stock transformers models: zero-shot video and length generalization, nothing converted.

The paper's first result: an *image* LLaVA-NeXT model, unchanged, understands video when frames are
fed like AnyRes tiles, pooled, and the LLM's RoPE is linearly scaled. For a model you already hold::

    from llava_next_video_hf.modeling_patches import enable_video, make_video_processor, undo

    model = LlavaNextForConditionalGeneration.from_pretrained(...)
    enable_video(model, tokenizer=tokenizer, max_frames=32)  # videos in forward/generate + RoPE factor
    processor = make_video_processor(model, tokenizer)       # <video> expands to the right count
    out = model.generate(**processor(text="USER: <video>\\nWhat happens? ASSISTANT:", videos=[clip]))
    undo(model)                                              # the original model again

* `enable_video(model, ...)` — stock ``LlavaNextForConditionalGeneration`` /
  ``LlavaNextVideoForConditionalGeneration`` instances take ``pixel_values_videos``.
* `scale_rope(model, factor | max_frames=...)` — linear RoPE scaling in place for Llama, Mistral
  and Qwen2/3 causal LMs and LLaVA models: config *and* rotary buffers; the model's own factor
  (1 when unscaled) restores it.
* `undo(model)` / ``with patched(model, ...)`` — restore the original model.

All are idempotent, patch instances (never classes), never change weights (except a reported
embedding resize when ``<video>`` is new to the tokenizer), and raise
[`UnsupportedModelError`] for classes they do not know.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from ._common import PatchState, VideoOptions, get_patch_state
from .rope_scaling import SUPPORTED_TEXT_MODEL_TYPES, rotary_modules, scale_rope, undo_rope
from .video import (
    VIDEO_TOKEN,
    add_video_token,
    enable_video,
    equivalent_config,
    make_video_processor,
    undo_video,
)


def undo(model: nn.Module) -> nn.Module:
    """Restore ``model`` as it was before `enable_video`/`scale_rope` (no-op when unpatched); return it."""
    undo_video(model)
    undo_rope(model)
    return model


@contextmanager
def patched(
    model: nn.Module, *, video: bool = True, factor: float | None = None, **video_options: Any
) -> Iterator[nn.Module]:
    """Patch ``model`` for the ``with`` block, then restore it exactly.

    ``video``: apply `enable_video(model, **video_options)`; ``factor``: then `scale_rope(model, factor)`.
    The model must be unpatched on entry (so the exit can restore what it was given).
    """
    if get_patch_state(model) is not None:
        raise ValueError(
            "patched() restores the model it is given, but this one is already patched: undo(model) first"
        )
    if video_options and not video:
        raise TypeError(f"video options {sorted(video_options)} given with video=False")
    try:
        if video:
            enable_video(model, **video_options)
        if factor is not None:
            scale_rope(model, factor)
        yield model
    finally:
        undo(model)


__all__ = [
    "SUPPORTED_TEXT_MODEL_TYPES",
    "VIDEO_TOKEN",
    "PatchState",
    "VideoOptions",
    "add_video_token",
    "equivalent_config",
    "enable_video",
    "get_patch_state",
    "make_video_processor",
    "patched",
    "rotary_modules",
    "scale_rope",
    "undo",
    "undo_rope",
    "undo_video",
]
