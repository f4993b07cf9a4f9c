"""What loading a video will do, and what it costs a checkpoint: ``llava-next-video inspect``.

:func:`inspect_video` loads a video exactly as the processors do (``video_io.load_video`` with the
same sampling options) and reports the frames kept, their indices and timestamps, how they were
decoded (seek or sequential, rotation, resolution). With a checkpoint, :func:`token_budget` adds
the token count of a prompt about that video and whether it fits the model's context; when it
does not, the frames that would fit and the linear RoPE factor that would fit it as is. Every
number comes from the one place that defines it: ``visual_tokens`` (tokens, frames that fit),
``rope`` (the factor) and the config (context length, factor in force). :func:`contact_sheet`
draws the sampled frames, each labelled with its index and timestamp, with PIL.

The web app (``llava_next_video_hf.app``) shows the same budget line and thumbnails.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LlavaNextVideoError
from .rope import rope_factor
from .video_io import VideoMetadata, load_video
from .visual_tokens import max_frames_that_fit

#: The question a budget is counted for when none is given (its tokens are the prompt's text part).
DEFAULT_PROMPT = "Describe the video."


@dataclass(frozen=True)
class TokenBudget:
    """Tokens of one prompt about one video (plus images) against a checkpoint's context.

    Attributes:
        num_frames: frames of the video.
        video_tokens: ``<video>`` tokens of those frames (``config.num_video_tokens``).
        image_tokens: ``<image>`` tokens of the prompt's images.
        prompt_tokens: the whole prompt as the processor tokenizes it (template, text, media).
        context_length: positions the model can use (trained length x the linear RoPE factor).
        trained_context_length: positions the language model was trained with.
        rope_factor: the linear RoPE factor in force (1.0: none).
        fits: ``prompt_tokens <= context_length``.
        frames_that_fit: most frames of this video whose prompt fits the context as it is.
        rope_factor_needed: the smallest whole linear factor that fits the prompt as it is
            (``rope.rope_factor`` with the text counted, as the processor's advice).
    """

    num_frames: int
    video_tokens: int
    image_tokens: int
    prompt_tokens: int
    context_length: int
    trained_context_length: int
    rope_factor: float
    fits: bool
    frames_that_fit: int
    rope_factor_needed: int

    def summary(self) -> str:
        """One line: video tokens, prompt tokens, context, factor; how to fit it when it does not."""
        line = (
            f"{self.num_frames} frames = {self.video_tokens} video tokens; prompt {self.prompt_tokens} "
            f"tokens of a {self.context_length}-token context ({self.trained_context_length} trained x "
            f"RoPE factor {self.rope_factor:g})"
        )
        if self.fits:
            return line + f": fits ({self.context_length - self.prompt_tokens} tokens left for the answer)"
        if self.frames_that_fit > 0:
            frames = f"sample at most {self.frames_that_fit} frames"
        else:
            frames = "even 1 frame does not fit: shorten the text"
        return (
            line + f": does NOT fit. To fit it: {frames}, or use a checkpoint with a linear RoPE "
            f"factor of at least {self.rope_factor_needed} (llava-next-video convert CKPT OUT "
            f"--rope-factor {self.rope_factor_needed})"
        )


def token_budget(config: Any, prompt_tokens: int, num_frames: int, image_tokens: int = 0) -> TokenBudget:
    """The :class:`TokenBudget` of a prompt of ``prompt_tokens`` tokens holding one ``num_frames`` video.

    ``config`` is a ``LlavaNextVideoAnyResConfig``; ``prompt_tokens`` counts everything (as the
    processor's ``input_ids``), ``image_tokens`` the part of it that images take.
    """
    video_tokens = config.num_video_tokens(num_frames) if num_frames else 0
    context = int(config.context_length)
    trained = int(config.trained_context_length)
    others = prompt_tokens - video_tokens
    fit = (
        max_frames_that_fit(context, others, **config.video_token_kwargs())
        if num_frames
        else 0  # no video: only the text could shrink
    )
    return TokenBudget(
        num_frames=num_frames,
        video_tokens=video_tokens,
        image_tokens=image_tokens,
        prompt_tokens=prompt_tokens,
        context_length=context,
        trained_context_length=trained,
        rope_factor=context / trained,
        fits=prompt_tokens <= context,
        frames_that_fit=fit,
        rope_factor_needed=rope_factor(prompt_tokens, trained, text_budget=0),
    )


def load_checkpoint_config(checkpoint: str | os.PathLike) -> Any:
    """The checkpoint's ``LlavaNextVideoAnyResConfig`` (a clear error for other formats)."""
    from transformers import AutoConfig

    from ._registration import register
    from .configuration import LlavaNextVideoAnyResConfig

    register()
    try:
        config = AutoConfig.from_pretrained(checkpoint)
    except (OSError, ValueError) as err:
        raise LlavaNextVideoError(f"cannot read the checkpoint config of {checkpoint}: {err}") from err
    if not isinstance(config, LlavaNextVideoAnyResConfig):
        raise LlavaNextVideoError(
            f"{checkpoint} is a {type(config).__name__} checkpoint, not this package's format; "
            "convert it first: llava-next-video convert CKPT OUT"
        )
    return config


def count_prompt_tokens(
    processor: Any, frames: np.ndarray | None, prompt: str, images: Sequence[Any] = ()
) -> tuple[int, int]:
    """(prompt tokens, image tokens) of a one-turn chat about ``frames`` and ``images``, as the
    processor tokenizes it (its chat template, its placeholder expansion; no length check)."""
    content: list[dict] = [{"type": "image"} for _ in images]
    if frames is not None:
        content.append({"type": "video"})
    content.append({"type": "text", "text": prompt})
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return count_text_tokens(processor, text, frames, images)


def count_text_tokens(
    processor: Any, text: str, frames: np.ndarray | None, images: Sequence[Any] = ()
) -> tuple[int, int]:
    """(tokens, image tokens) of a rendered prompt ``text`` with its media, without a length check."""
    saved = processor.context_length
    processor.context_length = None  # count, don't refuse (the budget says whether it fits)
    try:
        out = processor(
            text=text,
            videos=[frames] if frames is not None else None,
            images=list(images) or None,
            return_tensors="np",
        )
    finally:
        processor.context_length = saved
    image_tokens = int((out["input_ids"][0] == processor.image_token_id).sum()) if images else 0
    return int(out["input_ids"].shape[1]), image_tokens


@dataclass(frozen=True)
class Inspection:
    """What loading ``source`` did (:func:`inspect_video`)."""

    source: str
    metadata: VideoMetadata
    budget: TokenBudget | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the metadata and the budget."""
        return {
            "source": self.source,
            "metadata": self.metadata.to_dict(),
            "budget": asdict(self.budget) if self.budget else None,
        }

    def report(self) -> str:
        """The human-readable report ``llava-next-video inspect`` prints."""
        m = self.metadata
        fps = f"{m.fps:g} fps" if m.fps else "unknown fps"
        duration = f"{m.duration:.2f} s" if m.duration is not None else "unknown duration"
        lines = [
            f"video:       {self.source}",
            f"source:      {m.total_num_frames} frames, {fps}, {duration}, codec {m.codec}, "
            f"container {m.container_format}",
            f"sampling:    {m.sampling}: {len(m.frames_indices)} frames"
            + (
                f" (asked {m.requested_num_frames})"
                if m.requested_num_frames not in (None, len(m.frames_indices))
                else ""
            ),
            f"indices:     {', '.join(str(i) for i in m.frames_indices)}",
            f"timestamps:  {', '.join(f'{t:.3f}' for t in m.timestamps)} (s)",
            f"decode:      {m.decode_mode}"
            + (f" ({m.fallback_reason})" if m.fallback_reason else "")
            + f", index {m.index}, {m.frames_decoded} frames decoded, {m.seeks} seeks, "
            f"{m.threads} thread(s)",
            f"rotation:    {m.rotation} degrees",
            f"resolution:  {m.width}x{m.height} (width x height, after rotation)"
            + (f", {m.resized_frames} frames rescaled" if m.resized_frames else ""),
        ]
        if self.budget is not None:
            lines.append(f"tokens:      {self.budget.summary()}")
        return "\n".join(lines)


def inspect_video(
    source: Any,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    prompt: str = DEFAULT_PROMPT,
) -> tuple[np.ndarray, Inspection]:
    """Load ``source`` as the processors would and say what happened (and, with ``checkpoint``, the cost).

    Without ``num_frames``/``fps`` and with a checkpoint, the checkpoint's ``num_frames`` is used
    (what ``generate`` samples); without both, every frame up to ``max_frames``.

    Returns:
        ``(frames, inspection)``: the ``uint8`` frames ``(T, H, W, 3)`` and the :class:`Inspection`.
    """
    config = processor = None
    if checkpoint is not None:
        config = load_checkpoint_config(checkpoint)
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(checkpoint)
        if num_frames is None and fps is None:
            num_frames = int(config.num_frames)
            if max_frames is not None:
                num_frames = min(num_frames, max_frames)
    frames, metadata = load_video(source, num_frames=num_frames, fps=fps, max_frames=max_frames)
    budget = None
    if config is not None:
        tokens, _ = count_prompt_tokens(processor, frames, prompt)
        budget = token_budget(config, tokens, len(frames))
    return frames, Inspection(str(metadata.source), metadata, budget)


def frame_label(index: int, timestamp: float | None) -> str:
    """``"#12  0.400 s"``: a frame's index in the source and its timestamp."""
    return f"#{index}  {timestamp:.3f} s" if timestamp is not None else f"#{index}"


def thumbnail(frame: np.ndarray, width: int) -> Any:
    """``frame`` as a PIL image at most ``width`` pixels wide (aspect kept; never enlarged)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame))
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.BILINEAR)
    return image


@dataclass(frozen=True)
class ContactSheet:
    """A contact sheet: the image, each frame's box ``(left, top, right, bottom)`` and its label."""

    image: Any
    boxes: list[tuple[int, int, int, int]]
    labels: list[str]


def contact_sheet(
    frames: np.ndarray, metadata: VideoMetadata, *, columns: int = 4, width: int = 320
) -> ContactSheet:
    """The sampled frames in a grid, each with its index and timestamp written under it (PIL)."""
    from PIL import Image, ImageDraw, ImageFont

    if len(frames) == 0:
        raise LlavaNextVideoError("no frames to draw")
    thumbs = [thumbnail(f, width) for f in frames]
    cell_w = max(t.width for t in thumbs)
    cell_h = max(t.height for t in thumbs)
    label_h, pad = 22, 6
    columns = max(1, min(columns, len(thumbs)))
    rows = -(-len(thumbs) // columns)
    sheet = Image.new(
        "RGB", (pad + columns * (cell_w + pad), pad + rows * (cell_h + label_h + pad)), (24, 24, 24)
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    times = list(metadata.timestamps) or [None] * len(thumbs)
    boxes, labels = [], []
    for i, (thumb, index, time) in enumerate(zip(thumbs, metadata.frames_indices, times, strict=True)):
        left = pad + (i % columns) * (cell_w + pad)
        top = pad + (i // columns) * (cell_h + label_h + pad)
        sheet.paste(thumb, (left, top))
        label = frame_label(index, time)
        draw.text((left + 2, top + cell_h + 4), label, fill=(240, 240, 240), font=font)
        boxes.append((left, top, left + thumb.width, top + thumb.height))
        labels.append(label)
    return ContactSheet(sheet, boxes, labels)


# ------------------------------------------------------------------------------- command line
def add_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``inspect`` to the ``llava-next-video`` parser."""
    from .arg_types import positive_float, positive_int
    from .cli import COMMANDS

    p = sub.add_parser("inspect", help=COMMANDS["inspect"][1])
    p.add_argument("video", help="video path or URL")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--frames", type=positive_int, help="sample N frames uniformly")
    group.add_argument(
        "--fps", type=positive_float, help="sample F frames per second (bounded by --max-frames)"
    )
    p.add_argument("--max-frames", type=positive_int, help="upper bound on sampled frames")
    p.add_argument(
        "--checkpoint", help="count the tokens for this checkpoint (its num_frames when no --frames/--fps)"
    )
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question the token count is for")
    p.add_argument("-o", "--output", help="write a contact sheet PNG of the sampled frames here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> int:
    if args.output and Path(args.output).suffix.lower() != ".png":
        raise LlavaNextVideoError(f"-o {args.output}: the contact sheet is a PNG; name it *.png")
    frames, found = inspect_video(
        args.video,
        num_frames=args.frames,
        fps=args.fps,
        max_frames=args.max_frames,
        checkpoint=args.checkpoint,
        prompt=args.prompt,
    )
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(frames, found.metadata).image.save(out)
    print(json.dumps(found.to_dict(), indent=2) if args.json else found.report())
    if args.output and not args.json:
        print(f"sheet:       {args.output}")
    return 0
