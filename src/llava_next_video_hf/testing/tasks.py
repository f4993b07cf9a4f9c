"""A synthetic video-QA task whose answers need the video *and* time, for training tiny models.

Four kinds of question, four one-word answers each (chance is 25%):

========== ========================================== ===================================
kind       question                                   answers
========== ========================================== ===================================
colour     What colour is the moving square?          red / green / blue / yellow
direction  Which direction does the object move?      left / right / up / down
order      Which colour appears first?                red / green / blue / yellow
count      How many times does the screen flash?      zero / one / two / three
========== ========================================== ===================================

A colour clip shows a moving square *and* a static square of another colour, so one frame is
not enough; direction needs two instants; order and count need the whole clip.

A clip is a function of continuous time ``t`` in [0, 1]: squares move linearly, and discrete
events (a square appearing, a flash) happen on a grid of :data:`DESIGN_FRAMES` instants
(``round(t * (DESIGN_FRAMES - 1))``). Rendering ``num_frames`` frames samples
``t = linspace(0, 1, num_frames)``, the rule ``video_io`` uses to sample a file, so the same
question has the same answer at 8, 16 or 32 frames (each flash is then seen in 1, 2 or 4 frames).
Clips are rendered directly as ``uint8`` arrays (``(T, H, W, 3)``); :func:`write_mp4` encodes
one to H.264 when a file is needed, with ``7k + 1`` frames so that sampling :data:`DESIGN_FRAMES`
frames from it lands exactly on the design grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ANSWERS",
    "DESIGN_FRAMES",
    "FRAME_SIZE",
    "HELDOUT_SEED",
    "KINDS",
    "QUESTIONS",
    "VideoQA",
    "evaluate",
    "heldout_set",
    "make_dataset",
    "make_demo_clip",
    "parse_answer",
    "predict",
    "sample_example",
    "write_mp4",
]

#: Events of a clip happen on this many evenly spaced instants (and models are trained on it).
DESIGN_FRAMES = 8
#: Side of the rendered (square) frames in pixels; the processor resizes them to 336.
FRAME_SIZE = 112
#: Seed of the fixed held-out set (never used for training).
HELDOUT_SEED = 1_000_003

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 235),
    "yellow": (240, 220, 40),
}
KINDS = ("colour", "direction", "order", "count")
QUESTIONS = {
    "colour": "What colour is the moving square?",
    "direction": "Which direction does the object move?",
    "order": "Which colour appears first?",
    "count": "How many times does the screen flash?",
}
ANSWERS = {
    "colour": tuple(COLOURS),
    "direction": ("left", "right", "up", "down"),
    "order": tuple(COLOURS),
    "count": ("zero", "one", "two", "three"),
}
_SIDE = 0.25  # square side, as a fraction of the frame (one pooled cell at stride 6)
_MARGIN = 0.04


@dataclass(frozen=True)
class Square:
    """A square of ``colour`` moving linearly from (x0, y0) to (x1, y1) (fractions of the frame, top-left
    corner), visible from design instant ``appear`` on."""

    colour: str
    x0: float
    y0: float
    x1: float
    y1: float
    appear: int = 0


@dataclass(frozen=True)
class VideoQA:
    """One question about one synthetic clip (render it with :meth:`frames`)."""

    kind: str
    answer: str
    squares: tuple[Square, ...]
    flashes: tuple[int, ...] = ()
    background: int = 110
    seed: int = 0

    @property
    def question(self) -> str:
        return QUESTIONS[self.kind]

    @property
    def wrong_answers(self) -> tuple[str, ...]:
        return tuple(a for a in ANSWERS[self.kind] if a != self.answer)

    def frames(self, num_frames: int = DESIGN_FRAMES, size: int = FRAME_SIZE) -> np.ndarray:
        """The clip sampled at ``num_frames`` evenly spaced instants: ``uint8`` (T, size, size, 3)."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        times = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
        rng = np.random.default_rng(self.seed)
        noise = rng.integers(-6, 7, size=(size // 8, size // 8, 1), dtype=np.int16)
        base = np.full((size, size, 3), self.background, dtype=np.int16)
        base += np.repeat(np.repeat(noise, 8, axis=0), 8, axis=1)[:size, :size]
        side = round(_SIDE * size)
        out = np.empty((num_frames, size, size, 3), dtype=np.uint8)
        for i, t in enumerate(times):
            frame = base.copy()
            instant = _instant(float(t))
            for sq in self.squares:
                if instant < sq.appear:
                    continue
                x = round((sq.x0 + (sq.x1 - sq.x0) * t) * size)
                y = round((sq.y0 + (sq.y1 - sq.y0) * t) * size)
                frame[y : y + side, x : x + side] = COLOURS[sq.colour]
            if instant in self.flashes:
                frame = (frame * 0.15 + 255 * 0.85).astype(np.int16)
            out[i] = np.clip(frame, 0, 255).astype(np.uint8)
        return out

    def prompt(self, video: Any = None) -> list[dict]:
        """The user turn (a video block, then the question); ``video`` goes in the block when given."""
        block: dict[str, Any] = {"type": "video"}
        if video is not None:
            block["video"] = video
        return [{"role": "user", "content": [block, {"type": "text", "text": self.question}]}]

    def messages(self, video: Any = None) -> list[dict]:
        """The full conversation: :meth:`prompt` plus the assistant's one-word answer."""
        return [
            *self.prompt(video),
            {"role": "assistant", "content": [{"type": "text", "text": self.answer}]},
        ]


def _instant(t: float) -> int:
    """The design instant closest to time ``t`` (ties round up)."""
    return int(np.floor(t * (DESIGN_FRAMES - 1) + 0.5))


# ---------------------------------------------------------------------------- sampling scenes
def _free_spot(
    rng: np.random.Generator, avoid: list[tuple[float, float, float, float]]
) -> tuple[float, float]:
    """A top-left corner whose square overlaps none of the ``avoid`` boxes (x, y, w, h)."""
    hi = 1 - _SIDE - _MARGIN
    for _ in range(200):
        x, y = rng.uniform(_MARGIN, hi, size=2)
        if all(
            x + _SIDE <= ax or ax + aw <= x or y + _SIDE <= ay or ay + ah <= y for ax, ay, aw, ah in avoid
        ):
            return float(x), float(y)
    raise RuntimeError("no free spot for a square")  # cannot happen with <= 2 boxes of this size


def _moving(rng: np.random.Generator, colour: str, direction: str) -> tuple[Square, tuple]:
    """A square crossing the frame in ``direction`` and the box (x, y, w, h) its path sweeps."""
    lo, hi = _MARGIN, 1 - _SIDE - _MARGIN
    across = float(rng.uniform(lo, hi))
    start, end = (lo, hi) if direction in ("right", "down") else (hi, lo)
    if direction in ("left", "right"):
        return Square(colour, start, across, end, across), (lo, across, 1 - 2 * lo, _SIDE)
    return Square(colour, across, start, across, end), (across, lo, _SIDE, 1 - 2 * lo)


def sample_example(rng: np.random.Generator, kind: str, answer: str | None = None) -> VideoQA:
    """A random clip of ``kind`` (with ``answer`` when given, else a uniform one)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    answer = answer or str(rng.choice(ANSWERS[kind]))
    colours = list(COLOURS)
    background = int(rng.integers(80, 150))
    seed = int(rng.integers(2**31))
    flashes: tuple[int, ...] = ()
    if kind == "colour":
        other = str(rng.choice([c for c in colours if c != answer]))
        moving, path = _moving(rng, answer, str(rng.choice(ANSWERS["direction"])))
        x, y = _free_spot(rng, [path])
        squares: tuple[Square, ...] = (moving, Square(other, x, y, x, y))
    elif kind == "direction":
        moving, path = _moving(rng, str(rng.choice(colours)), answer)
        squares = (moving,)
        if rng.random() < 0.5:
            x, y = _free_spot(rng, [path])
            squares += (Square(str(rng.choice([c for c in colours if c != moving.colour])), x, y, x, y),)
    elif kind == "order":
        other = str(rng.choice([c for c in colours if c != answer]))
        first = int(rng.integers(0, 3))
        second = int(rng.integers(first + 2, DESIGN_FRAMES - 1))
        x1, y1 = _free_spot(rng, [])
        x2, y2 = _free_spot(rng, [(x1, y1, _SIDE, _SIDE)])
        squares = (Square(answer, x1, y1, x1, y1, first), Square(other, x2, y2, x2, y2, second))
    else:  # count: flashes on non-adjacent design instants, over a static square
        n = ANSWERS["count"].index(answer)
        while True:
            picked = sorted(int(i) for i in rng.choice(DESIGN_FRAMES, size=n, replace=False))
            if all(b - a >= 2 for a, b in zip(picked, picked[1:], strict=False)):
                break
        flashes = tuple(picked)
        x, y = _free_spot(rng, [])
        squares = (Square(str(rng.choice(colours)), x, y, x, y),)
    return VideoQA(kind, answer, squares, flashes, background, seed)


def make_dataset(n: int, seed: int, kinds: tuple[str, ...] = KINDS) -> list[VideoQA]:
    """``n`` examples, balanced over ``kinds`` and over each kind's answers, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        answers = ANSWERS[kind]
        out.append(sample_example(rng, kind, answers[(i // len(kinds)) % len(answers)]))
    order = rng.permutation(n)
    return [out[i] for i in order]


def heldout_set(n: int = 96) -> list[VideoQA]:
    """The fixed held-out set (seed :data:`HELDOUT_SEED`, never trained on)."""
    return make_dataset(n, HELDOUT_SEED)


# ---------------------------------------------------------------------------- files
def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float = 8.0, crf: int = 12) -> Path:
    """Encode ``uint8`` frames (T, H, W, 3) (H, W even) to an H.264 ``yuv420p`` mp4 with PyAV."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": str(crf), "x264-params": "bframes=0"}
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def file_frames(per_instant: int = 3) -> int:
    """Frames of a clip file whose ``linspace`` sample of :data:`DESIGN_FRAMES` frames is the design grid."""
    return (DESIGN_FRAMES - 1) * per_instant + 1


def make_demo_clip(path: str | os.PathLike) -> tuple[str, str]:
    """Write the demo clip (a yellow square moving right past a static blue one) to ``path`` (mp4).

    Returns ``(question, expected_answer)``: ``("What colour is the moving square?", "yellow")``.
    The shipped tiny model answers it correctly through transformers and vLLM.
    """
    example = VideoQA(
        "colour",
        "yellow",
        (Square("yellow", 0.04, 0.08, 0.71, 0.08), Square("blue", 0.55, 0.62, 0.55, 0.62)),
        background=110,
        seed=7,
    )
    write_mp4(example.frames(file_frames()), path, fps=8.0)
    return example.question, example.answer


# ---------------------------------------------------------------------------- evaluation
def parse_answer(text: str) -> str:
    """The first word of a generated answer, lower-cased, without punctuation."""
    words = text.strip().lower().replace(".", " ").replace(",", " ").split()
    return words[0] if words else ""


def predict(
    model: Any,
    processor: Any,
    examples: list[VideoQA],
    *,
    num_frames: int = DESIGN_FRAMES,
    videos: list[Any] | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 3,
) -> list[str]:
    """Greedy answers of ``model`` (``generate`` through ``processor``'s chat template) to ``examples``.

    ``videos`` (paths or arrays, one per example) replaces the rendered clips, e.g. mp4 files.
    """
    import torch

    if videos is None:
        videos = [ex.frames(num_frames) for ex in examples]
    answers: list[str] = []
    model.eval()
    for start in range(0, len(examples), batch_size):
        chunk = range(start, min(start + batch_size, len(examples)))
        conversations = [examples[i].prompt(videos[i]) for i in chunk]
        inputs = processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            padding_side="left",
            num_frames=num_frames,
        )
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        answers += [parse_answer(t) for t in processor.batch_decode(new, skip_special_tokens=True)]
    return answers


def evaluate(model: Any, processor: Any, examples: list[VideoQA], **kwargs: Any) -> float:
    """Fraction of ``examples`` whose greedy answer is right (``kwargs`` go to :func:`predict`)."""
    predictions = predict(model, processor, examples, **kwargs)
    return float(np.mean([p == ex.answer for p, ex in zip(predictions, examples, strict=True)]))
