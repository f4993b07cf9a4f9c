"""What runs in a decoding worker process: one row's video decoded and its prompt prepared.

:func:`prepare` is a top-level function (picklable) so any process pool can run it: it loads the
checkpoint's processor once per process, decodes the sampled frames with ``video_io.load_video``
(seeking; the checkpoint's frame defaults, as ``generate`` samples them), renders the chat template,
tokenizes like the original, and checks the context. Only what the engine needs crosses back to the
job's process: for vLLM the sampled ``uint8`` frames and the prompt ids, for transformers the
processor's tensors as numpy arrays. A failure is returned as an ``error`` (kind + message), never
raised, so one bad row never stops the job.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from ..errors import ContextLengthError, VideoLoadError

#: one processor per (checkpoint, context) per worker process
_PROCESSORS: dict[tuple[str, int | None], Any] = {}


@dataclass(frozen=True)
class Settings:
    """How every row of a job is prepared (sent to the workers once per row; small)."""

    model: str
    engine: str  # "vllm" or "hf"
    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    context_length: int | None = None  # the context at the job's RoPE factor (None: the checkpoint's)


def processor_for(model: str, context_length: int | None = None) -> Any:
    """The checkpoint's processor (cached in this process); ``context_length`` overrides its context."""
    key = (model, context_length)
    if key not in _PROCESSORS:
        from ..processing import LlavaNextVideoAnyResProcessor, register_auto_classes

        register_auto_classes()
        processor = LlavaNextVideoAnyResProcessor.from_pretrained(model)
        if context_length is not None:
            processor.context_length = int(context_length)
        _PROCESSORS[key] = processor
    return _PROCESSORS[key]


def warm_up(settings: Settings) -> None:
    """Load the job's processor in this worker (so the first row does not pay for the imports)."""
    processor_for(settings.model, settings.context_length)


def error_of(exc: BaseException) -> dict[str, str]:
    """A row's ``error`` field: ``kind`` (video / context / prompt / internal) and a one-line message."""
    if isinstance(exc, VideoLoadError):
        kind = "video"
    elif isinstance(exc, ContextLengthError):
        kind = "context"
    elif isinstance(exc, ValueError):
        kind = "prompt"
    else:
        kind = "internal"
    message = " ".join(str(exc).split()) or type(exc).__name__
    if kind == "internal":
        message = f"{type(exc).__name__}: {message}"
    return {"kind": kind, "message": message}


def prepare(video: str, prompt: str, settings: Settings) -> dict[str, Any]:
    """Decode ``video`` and prepare ``prompt`` for ``settings.engine``; never raises for a bad row.

    Returns a dict with ``decode_s`` and either ``error`` ({kind, message}) or ``frames``
    (``{"indices", "timestamps"}``), ``prompt_tokens`` (the expanded prompt's length) and the
    engine's inputs: ``prompt_ids`` + ``video`` (``(T, H, W, 3)`` uint8) for vLLM; ``input_ids`` +
    ``pixel_values_videos`` (``(T, 3, h, w)`` float) for transformers.
    """
    start = time.perf_counter()
    try:
        out = _prepare(video, prompt, settings)
    except Exception as exc:  # a bad row is a record, not a crash
        out = {"error": error_of(exc)}
        if out["error"]["kind"] == "internal":
            out["traceback"] = traceback.format_exc(limit=-3)
    out["decode_s"] = time.perf_counter() - start
    return out


def _prepare(video: str, prompt: str, settings: Settings) -> dict[str, Any]:
    from ..video_io import load_video
    from ..vllm_plugin.offline import build_messages, prompt_token_ids

    processor = processor_for(settings.model, settings.context_length)
    sampling = processor.video_processor._sampling_args(
        settings.num_frames, settings.fps, settings.max_frames
    )
    # one thread: the job runs one worker per core
    frames, meta = load_video(video, threads=1, **sampling)
    text = processor.apply_chat_template(
        build_messages(prompt, video=True, num_images=0), add_generation_prompt=True, tokenize=False
    )
    ids, special = prompt_token_ids(processor, text)
    # the processor expands the placeholder and refuses what the context cannot hold (ContextLengthError)
    inputs = processor(
        text=text, videos=[frames], do_sample_frames=False, add_special_tokens=special, return_tensors="np"
    )
    out: dict[str, Any] = {
        "frames": {
            "indices": [int(i) for i in meta.frames_indices],
            "timestamps": [round(float(t), 6) for t in meta.timestamps],
        },
        "prompt_tokens": int(inputs["attention_mask"][0].sum()),
    }
    if settings.engine == "vllm":
        out["prompt_ids"] = ids
        out["video"] = frames
    else:
        out["input_ids"] = inputs["input_ids"][0]
        out["pixel_values_videos"] = inputs["pixel_values_videos"][0]
    return out


__all__ = ["Settings", "error_of", "prepare", "processor_for", "warm_up"]
