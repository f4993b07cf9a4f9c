"""The length-generalization rule: which linear RoPE factor a frame budget needs, in one place.

LLaVA-NeXT-Video fits more frames than the language model's trained context by stretching its
rotary positions linearly: ``f = ceil((visual_tokens + 1000) / trained_context)``, applied when
``f >= 2``. The config, the converter, the modeling patches, the vLLM plugin and the processor's
"does not fit" advice all ask [`rope_factor`]; the token counts it is fed come from
[`visual_tokens`](visual_tokens.py) (re-exported here: ``rope.num_video_tokens`` is public API).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .visual_tokens import (
    NEWLINE_POSITIONS,
    POOL_MODES,
    max_frames_that_fit,
    num_image_tokens,
    num_video_tokens,
    pooled_grid,
    select_best_resolution,
    unpadded_features,
)

__all__ = [
    "NEWLINE_POSITIONS",
    "POOL_MODES",
    "TEXT_TOKEN_BUDGET",
    "context_overflow_message",
    "max_frames_that_fit",
    "num_image_tokens",
    "num_video_tokens",
    "parse_rope_factor",
    "pooled_grid",
    "rope_factor",
    "select_best_resolution",
    "unpadded_features",
]

#: Tokens the length rule reserves for the text of a prompt (the reference recipe's 1000).
TEXT_TOKEN_BUDGET = 1000


def rope_factor(visual_tokens: int, context_length: int, text_budget: int = TEXT_TOKEN_BUDGET) -> int:
    """Linear RoPE factor that makes ``visual_tokens`` plus a text budget fit ``context_length``.

    The reference recipe: ``f = ceil((visual_tokens + 1000) / context)``, applied only when
    ``f >= 2`` (a factor of 1 means no scaling).
    """
    if context_length < 1:
        raise ValueError(f"context_length must be positive, got {context_length}")
    factor = math.ceil((visual_tokens + text_budget) / context_length)
    return factor if factor >= 2 else 1


def parse_rope_factor(text: str | float) -> float | str:
    """A requested linear RoPE factor: ``"auto"`` (the rule of [`rope_factor`]) or a number >= 1.

    Raises:
        ValueError: anything else (NaN and infinity included), with the accepted values in the message.
    """
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"a number >= 1 or 'auto', got {text!r}") from None
    if not (value >= 1 and math.isfinite(value)):
        raise ValueError(f"a number >= 1 or 'auto', got {text!r}")
    return value


def context_overflow_message(
    index: int,
    length: int,
    *,
    video_tokens: int,
    image_tokens: int,
    frames: Sequence[int],
    context_length: int,
    trained_context_length: int,
    video_kwargs: dict,
) -> str:
    """Why prompt ``index`` (``length`` tokens) does not fit, and the two ways to make it fit.

    Names the token split (video / image / text), the context (trained positions x factor), the
    frames per video that would fit (``max_frames_that_fit`` with the prompt's other tokens) and the
    RoPE factor that would fit it as is (``rope_factor`` with no text budget: the text is counted).
    """
    factor = rope_factor(length, trained_context_length, text_budget=0)  # = ceil(length / trained)
    current = context_length / trained_context_length
    head = (
        f"prompt {index} is {length} tokens long ({video_tokens} video tokens for {sum(frames)} frames, "
        f"{image_tokens} image tokens, {length - video_tokens - image_tokens} text tokens) but the model's "
        f"context is {context_length} positions ({trained_context_length} trained positions x linear RoPE "
        f"factor {current:g}); nothing was truncated."
    )
    fixes = []
    if frames:
        fit = max_frames_that_fit(
            context_length, length - video_tokens, num_videos=len(frames), **video_kwargs
        )
        per = "" if len(frames) == 1 else f" per video ({len(frames)} videos)"
        if fit > 0:
            fixes.append(
                f"sample at most {fit} frames{per} (num_frames={fit} or max_frames={fit} in the processor call)"
            )
        else:
            fixes.append("even 1 frame does not fit: shorten the text or use fewer images/videos")
    fix_rope = (
        f"load the model with a linear RoPE factor of at least {factor} = ceil({length} / {trained_context_length}): "
        f"`from_pretrained(..., rope_scaling_factor={factor})`"
    )
    if frames:
        fix_rope += f" or `from_pretrained(..., max_frames={max(frames)}, rope_scaling_factor='auto')`"
    fix_rope += ", and build the processor from that config"
    fixes.append(fix_rope)
    return head + " To fit it: " + "; or ".join(fixes) + "."
