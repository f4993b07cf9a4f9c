"""The transformers engine's checkpoint loading: one place for ``generate``, the app and ``batch``.

:func:`load_hf_engine` loads a checkpoint's processor and model for inference, optionally with a
new linear RoPE factor (``"auto"``: the paper's rule for a frame budget), and points the
processor's context check at the context the model then has.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import LlavaNextVideoError


def load_hf_engine(
    model: str | os.PathLike,
    *,
    dtype: str = "float32",
    rope_factor: float | str | None = None,
    max_frames: int | None = None,
) -> tuple[Any, Any]:
    """(processor, model in eval mode) of a checkpoint for the transformers engine.

    ``rope_factor``: load with this linear RoPE factor (``"auto"``: the paper's rule for
    ``max_frames``); the processor's context check then follows the new context.

    Raises:
        LlavaNextVideoError: the checkpoint cannot be loaded (the loader's first line quoted).
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .processing import register_auto_classes

    register_auto_classes()
    load_kwargs: dict = {"dtype": getattr(torch, dtype)}
    if rope_factor is not None:
        load_kwargs["rope_scaling_factor"] = rope_factor
        if max_frames:
            load_kwargs["max_frames"] = max_frames
    try:
        processor = AutoProcessor.from_pretrained(model)
        net = AutoModelForImageTextToText.from_pretrained(model, **load_kwargs).eval()
    except OSError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise LlavaNextVideoError(f"cannot load the checkpoint {model}: {first}") from err
    if rope_factor is not None and getattr(net.config, "context_length", None):
        processor.context_length = int(net.config.context_length)  # trained context x the new factor
    return processor, net


__all__ = ["load_hf_engine"]
