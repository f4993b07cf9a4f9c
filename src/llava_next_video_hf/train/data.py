"""Training data: JSONL video conversations -> records -> collated, labelled batches.

JSONL format (one JSON object per line; relative paths are resolved against the JSONL file's folder):

* the video: ``"video": "clips/0001.mp4"`` (a file decoded by ``video_io``, ``--frames`` frames
  sampled uniformly; default: the checkpoint's ``num_frames``) or ``"frames": ["f0.png", "f1.png",
  ...]`` (the frames of one clip, in order). A line without either is a text-only conversation.
* SFT: ``"messages"``: a conversation of ``{"role": "system" | "user" | "assistant", "content": ...}``
  turns; ``content`` is a string or a list of ``{"type": "text", "text": ...}`` blocks. The video is
  shown at the start of the first user turn. Every assistant turn is learned.
* DPO: ``"prompt"``: the question as a string, or the conversation so far (a list of turns ending
  with a user turn); ``"chosen"`` / ``"rejected"``: the preferred / dispreferred answer, each a
  string or a one-turn list ``[{"role": "assistant", "content": ...}]``. The video is shared by both.

Example lines::

    {"video": "clips/0001.mp4", "messages": [{"role": "user", "content": "What colour is the moving square?"}, {"role": "assistant", "content": "red"}]}
    {"frames": ["c2/0.png", "c2/1.png", "c2/2.png", "c2/3.png"], "messages": [{"role": "user", "content": "Which direction does the object move?"}, {"role": "assistant", "content": "left"}]}
    {"video": "clips/0001.mp4", "prompt": "What colour is the moving square?", "chosen": "red", "rejected": "blue"}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LlavaNextVideoError

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


# ============================================================================ data files
class TrainingDataError(LlavaNextVideoError):
    """A training JSONL line is malformed (the message names the file, the line and the problem)."""


def _text(content: Any, where: str) -> str:
    """The text of a message ``content`` (a string or a list of text blocks; media blocks are dropped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        return " ".join(texts)
    raise TrainingDataError(
        f"{where}: content must be a string or a list of blocks, got {type(content).__name__}"
    )


def _turns(value: Any, where: str) -> list[dict[str, str]]:
    """Normalise a list of chat turns to ``[{"role", "content": str}]``."""
    if not isinstance(value, list) or not value:
        raise TrainingDataError(f"{where}: expected a non-empty list of {{role, content}} turns")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or "content" not in turn:
            raise TrainingDataError(f"{where}[{i}]: each turn needs a role in {ROLES} and a content")
        turns.append({"role": turn["role"], "content": _text(turn["content"], f"{where}[{i}]")})
    return turns


def _answer(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    turns = _turns(value, where)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise TrainingDataError(f"{where}: expected a string or one assistant turn")
    return turns[0]["content"]


def _normalise(row: Any, kind: str, base: Path, where: str) -> dict[str, Any]:
    """One JSONL object -> a record with ``video`` (absolute path or None), ``frames`` (list of paths)
    and ``messages`` (SFT) or ``prompt``/``chosen``/``rejected`` (DPO)."""
    if not isinstance(row, dict):
        raise TrainingDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "video" in row and "frames" in row:
        raise TrainingDataError(f"{where}: give either 'video' or 'frames', not both")
    video = row.get("video")
    frames = row.get("frames") or []
    if video is not None and not isinstance(video, str):
        raise TrainingDataError(f"{where}: 'video' must be a path string")
    if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
        raise TrainingDataError(f"{where}: 'frames' must be a list of image paths")
    resolve = lambda p: str(p if "://" in p or os.path.isabs(p) else (base / p).resolve())  # noqa: E731
    record: dict[str, Any] = {
        "video": resolve(video) if video else None,
        "frames": [resolve(f) for f in frames],
    }
    if kind == "sft":
        if "messages" not in row:
            raise TrainingDataError(f"{where}: an SFT line needs 'messages'")
        messages = _turns(row["messages"], f"{where}: messages")
        if not any(m["role"] == "assistant" for m in messages):
            raise TrainingDataError(f"{where}: messages have no assistant turn to learn")
        record["messages"] = messages
    else:
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise TrainingDataError(
                f"{where}: a DPO line needs 'prompt', 'chosen' and 'rejected' (missing {missing})"
            )
        prompt = row["prompt"]
        prompt = (
            [{"role": "user", "content": prompt}]
            if isinstance(prompt, str)
            else _turns(prompt, f"{where}: prompt")
        )
        if prompt[-1]["role"] != "user":
            raise TrainingDataError(f"{where}: the prompt must end with a user turn")
        record["prompt"] = prompt
        record["chosen"] = _answer(row["chosen"], f"{where}: chosen")
        record["rejected"] = _answer(row["rejected"], f"{where}: rejected")
    return record


def load_jsonl(path: str | os.PathLike, kind: str) -> list[dict[str, Any]]:
    """Read and validate a training file of ``kind`` ``"sft"`` or ``"dpo"`` (format: module docstring).

    Raises:
        TrainingDataError: a line is not JSON or misses a field (the message names file and line).
    """
    if kind not in ("sft", "dpo"):
        raise ValueError(f"kind must be 'sft' or 'dpo', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"training data {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TrainingDataError(f"{where}: not valid JSON ({err.msg})") from None
            records.append(_normalise(row, kind, path.parent, where))
    if not records:
        raise TrainingDataError(f"{path} holds no examples")
    return records


def records_to_dataset(records: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` of normalised records (what TRL's trainers take)."""
    from datasets import Dataset

    return Dataset.from_list(records)


# ============================================================================ collators
def mask_labels(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    assistant_masks: torch.Tensor,
    media_token_ids: tuple[int, ...] = (),
) -> torch.Tensor:
    """Labels that learn only assistant tokens: everything else (prompt, media, padding) is -100.

    (B, L) int tensors in, (B, L) labels out; media placeholder ids are masked even inside an
    assistant span.
    """
    labels = input_ids.clone()
    labels[(assistant_masks == 0) | (attention_mask == 0)] = IGNORE_INDEX
    for token_id in media_token_ids:
        labels[input_ids == token_id] = IGNORE_INDEX
    return labels


def _last_span(mask: torch.Tensor) -> torch.Tensor:
    """Keep only the last contiguous run of ones in each row of a (B, L) 0/1 mask."""
    out = torch.zeros_like(mask)
    for row in range(mask.shape[0]):
        ones = torch.nonzero(mask[row]).flatten().tolist()
        if not ones:
            continue
        start = ones[-1]
        while start - 1 in ones:
            start -= 1
        out[row, start : ones[-1] + 1] = 1
    return out


def _media_ids(processor: Any) -> tuple[int, ...]:
    return tuple(
        int(getattr(processor, n)) for n in ("image_token_id", "video_token_id") if hasattr(processor, n)
    )


def _load_frames(paths: list[str]) -> list[Any]:
    import PIL.Image

    frames = []
    for p in paths:
        with PIL.Image.open(p) as img:
            frames.append(img.convert("RGB"))
    return frames


def _conversation(turns: list[dict[str, str]], video: Any) -> list[dict[str, Any]]:
    """Chat-template messages: text blocks, with the video block first in the first user turn."""
    out, placed = [], video is None
    for turn in turns:
        content: list[dict[str, Any]] = []
        if not placed and turn["role"] == "user":
            content.append({"type": "video", "video": video})
            placed = True
        content.append({"type": "text", "text": turn["content"]})
        out.append({"role": turn["role"], "content": content})
    return out


@dataclass
class _VideoCollatorBase:
    processor: Any
    num_frames: int | None = None

    def _video(self, example: dict[str, Any]) -> Any:
        """The example's clip, decoded once: (T, H, W, 3) frames, a list of PIL frames, or None."""
        frames = example.get("frames")
        if frames is not None and len(frames) > 0:
            if isinstance(frames[0], str):
                return _load_frames(list(frames))
            return np.asarray(frames, dtype=np.uint8)
        video = example.get("video")
        if video is None:
            return None
        if isinstance(video, (str, os.PathLike, bytes)):
            (clip,) = self.processor.video_processor.load_clips([video], num_frames=self.num_frames)
            return clip.permute(0, 2, 3, 1)  # (T, 3, H, W) -> (T, H, W, 3)
        return np.asarray(video, dtype=np.uint8)

    def _render(self, conversations: list[list[dict]]) -> Any:
        return self.processor.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            padding_side="right",
            return_assistant_tokens_mask=True,
        )


@dataclass
class VideoSFTCollator(_VideoCollatorBase):
    """Collate SFT records (``video``/``frames`` + ``messages``) into model inputs with masked labels.

    Output: ``input_ids``, ``attention_mask``, ``labels`` (B, L); ``pixel_values_videos``
    (B, T_max, 3, 336, 336) and ``video_num_frames`` (B,) when the batch has videos.
    ``num_frames`` samples that many frames from video files (default: the processor's).
    """

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        conversations = [_conversation(ex["messages"], self._video(ex)) for ex in examples]
        out = self._render(conversations)
        out["labels"] = mask_labels(
            out["input_ids"], out["attention_mask"], out.pop("assistant_masks"), _media_ids(self.processor)
        )
        return dict(out)


@dataclass
class VideoDPOCollator(_VideoCollatorBase):
    """Collate DPO records (``video``/``frames`` + ``prompt``/``chosen``/``rejected``) for TRL's DPOTrainer.

    Output (TRL's layout): ``input_ids``/``attention_mask``/``completion_mask`` (2B, L) with the B
    prompt+chosen rows first, then the B prompt+rejected rows; the clip is decoded once per example and
    shared by both rows (``pixel_values_videos`` (2B, T_max, 3, 336, 336), ``video_num_frames`` (2B,)).
    ``completion_mask`` covers the final answer and its ``</s>`` only.
    """

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        videos = [self._video(ex) for ex in examples]
        conversations = [
            _conversation([*ex["prompt"], {"role": "assistant", "content": ex[side]}], video)
            for side in ("chosen", "rejected")
            for ex, video in zip(examples, videos, strict=True)
        ]
        out = self._render(conversations)
        out["completion_mask"] = _last_span(out.pop("assistant_masks")) * out["attention_mask"]
        return dict(out)
