"""Fine-tuning LLaVA-NeXT-Video on video conversations: SFT and DPO with TRL, LoRA with PEFT.

What TRL 1.16 gives and what this module adds:

* TRL's vision collators know images only (``image``/``images`` columns). [`VideoSFTCollator`] and
  [`VideoDPOCollator`] render video conversations through our processor (frames sampled by
  ``video_io``, placeholders expanded by the token math of ``rope.py``) and build the labels:
  only assistant answers (and their ``</s>``) are learned; the system prompt, the user turns and
  every ``<video>``/``<image>`` token are ``-100``. The assistant spans come from the chat
  template's ``{% generation %}`` markers (``return_assistant_tokens_mask``).
* [`sft_trainer`] / [`dpo_trainer`] wire TRL's ``SFTTrainer`` / ``DPOTrainer`` to those collators
  (no text-only dataset preparation, columns kept), freeze the vision tower by default, and take a
  PEFT config; [`lora_config`] targets the language model's attention and MLP projections and the
  multimodal projector (never the vision tower nor ``lm_head``).
* [`cache_video_features`] / [`embed_with_cached_video`]: when the vision tower is frozen, its
  output for a clip never changes, so it can be computed once and reused across epochs. This is how
  ``bench/train_tiny.py`` trains the shipped tiny model in minutes on a CPU (parity with the normal
  forward is tested).

Command line: ``llava-next-video train {sft,dpo} --model CKPT --data FILE.jsonl --out DIR``
(``--help`` lists the options). ``DIR`` receives Trainer checkpoints (``checkpoint-*``; ``--resume``
continues from the last one) and, at the end, a complete checkpoint (LoRA merged into the weights)
with its processor, ready for ``llava-next-video generate DIR``; with LoRA the adapter alone is
also saved in ``DIR/adapter``. The same command runs under ``torchrun --nproc_per_node N -m
llava_next_video_hf.cli train ...`` or ``accelerate launch``: one DDP group (gloo on CPU), each rank a
share of every global batch, and only the main process writes (see [`run_training`]).

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

import argparse
import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import LlavaNextVideoError

__all__ = [
    "VideoDPOCollator",
    "VideoSFTCollator",
    "add_cli",
    "cache_video_features",
    "completion_logprobs",
    "default_lora_target_modules",
    "dpo_config",
    "dpo_trainer",
    "embed_with_cached_video",
    "freeze_vision_tower",
    "load_jsonl",
    "lora_config",
    "mask_labels",
    "run_training",
    "sft_config",
    "sft_trainer",
]

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


# ============================================================================ model set-up
def freeze_vision_tower(model: Any, frozen: bool = True) -> int:
    """Set ``requires_grad`` of the vision tower's parameters to ``not frozen``; returns how many tensors."""
    tower = _unwrap(model).model.vision_tower
    params = list(tower.parameters())
    for p in params:
        p.requires_grad_(not frozen)
    return len(params)


def _unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


#: Linear layers LoRA adapts by default: the language model's attention and MLP and the projector.
LM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROJECTOR_TARGETS = ("linear_1", "linear_2")


def default_lora_target_modules() -> str:
    """PEFT ``target_modules`` regex: LM q/k/v/o + MLP and the projector; never the tower or ``lm_head``."""
    return (
        rf".*language_model\..*\.({'|'.join(LM_TARGETS)})"
        rf"|.*multi_modal_projector\.({'|'.join(PROJECTOR_TARGETS)})"
    )


def lora_config(
    r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules: str | list[str] | None = None
) -> Any:
    """A ``peft.LoraConfig`` for causal-LM fine-tuning with [`default_lora_target_modules`]."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or default_lora_target_modules(),
        task_type="CAUSAL_LM",
    )


def _common_args(output_dir: str | os.PathLike, overrides: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        output_dir=str(output_dir),
        remove_unused_columns=False,  # keep video/frames/messages for the collator
        bf16=False,  # fp32 unless asked: TRL defaults to bf16, which CPUs run slowly
        report_to="none",
        save_strategy="steps",
        save_steps=100,
        save_total_limit=2,
        logging_steps=10,
        per_device_train_batch_size=1,
        gradient_checkpointing=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )
    if not _has_accelerator():
        # torchrun / `accelerate launch` on a CPU-only machine: without `use_cpu`, accelerate sees
        # LOCAL_RANK but no GPU backend, reports "not distributed", and every rank trains its own
        # copy on all the data. With it, the ranks form one gloo DDP group (harmless in one process).
        args["use_cpu"] = True
    args.update(overrides)
    return args


def _has_accelerator() -> bool:
    """Whether torch sees a GPU-like device (CUDA, ROCm, XPU, MPS, ...)."""
    return bool(torch.accelerator.is_available())


def sft_config(output_dir: str | os.PathLike, **overrides: Any) -> Any:
    """``trl.SFTConfig`` for video data: our collator builds inputs and labels, so TRL's text
    preparation is skipped and columns are kept; fp32; checkpoints every 100 steps."""
    from trl import SFTConfig

    args = _common_args(output_dir, overrides)
    args.setdefault("dataset_kwargs", {"skip_prepare_dataset": True})
    args.setdefault("max_length", None)  # the processor never truncates (it would cut visual tokens)
    return SFTConfig(**args)


def dpo_config(output_dir: str | os.PathLike, **overrides: Any) -> Any:
    """``trl.DPOConfig`` for video data (sigmoid loss, ``beta`` 0.1 unless overridden), fp32."""
    from trl import DPOConfig

    args = _common_args(output_dir, overrides)
    args.setdefault("max_length", None)
    return DPOConfig(**args)


def sft_trainer(
    model: Any,
    processor: Any,
    train_dataset: Any,
    args: Any = None,
    *,
    peft_config: Any = None,
    num_frames: int | None = None,
    freeze_vision: bool = True,
    **kwargs: Any,
) -> Any:
    """TRL ``SFTTrainer`` on video conversations through our processor and [`VideoSFTCollator`].

    ``train_dataset``: a ``datasets.Dataset`` of SFT records (see [`load_jsonl`]) or a list of them.
    The vision tower is frozen unless ``freeze_vision=False``; ``peft_config`` (e.g. [`lora_config`])
    trains adapters instead of the weights.
    """
    from trl import SFTTrainer

    if isinstance(train_dataset, list):
        train_dataset = records_to_dataset(train_dataset)
    freeze_vision_tower(model, freeze_vision)
    return SFTTrainer(
        model=model,
        args=args if args is not None else sft_config("sft-output"),
        data_collator=VideoSFTCollator(processor, num_frames),
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=peft_config,
        **kwargs,
    )


def _video_dpo_trainer_class() -> type:
    from trl import DPOTrainer

    class VideoDPOTrainer(DPOTrainer):
        """``DPOTrainer`` whose dataset goes to [`VideoDPOCollator`] as is.

        TRL tokenizes text datasets up front and skips that only for image datasets; video records
        must reach the collator untouched (it decodes the clip and tokenizes with the processor).
        """

        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            return dataset

    return VideoDPOTrainer


def dpo_trainer(
    model: Any,
    processor: Any,
    train_dataset: Any,
    args: Any = None,
    *,
    ref_model: Any = None,
    peft_config: Any = None,
    num_frames: int | None = None,
    freeze_vision: bool = True,
    **kwargs: Any,
) -> Any:
    """TRL ``DPOTrainer`` on video preference pairs through our processor and [`VideoDPOCollator`].

    The reference model is a frozen copy of ``model`` unless given (with ``peft_config`` the base
    model, adapters disabled, is the reference and no copy is made).
    """
    if isinstance(train_dataset, list):
        train_dataset = records_to_dataset(train_dataset)
    freeze_vision_tower(model, freeze_vision)
    if ref_model is None and peft_config is None:
        ref_model = copy.deepcopy(model).eval()
        ref_model.requires_grad_(False)
    return _video_dpo_trainer_class()(
        model=model,
        ref_model=ref_model,
        args=args if args is not None else dpo_config("dpo-output"),
        data_collator=VideoDPOCollator(processor, num_frames),
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=peft_config,
        **kwargs,
    )


# ============================================================================ log-probabilities
def completion_logprobs(model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label) over the positions whose label is not -100: (B,) for (B, L) ``labels``.

    ``inputs`` are forward kwargs (``input_ids`` + media, or ``inputs_embeds``) with ``attention_mask``.
    """
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()  # (B, L-1, V)
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


# ============================================================================ frozen-tower cache
def cache_video_features(
    model: Any, pixel_values_videos: torch.Tensor, video_num_frames: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """The frozen part of the video path, once per clip: one tensor per video, in batch order.

    ``pixel_values_videos`` (B, T_max, 3, H, W) (zero-padded, ``video_num_frames`` (B,)). Returns
    [`VisualTokenLayout.frame_features`] of the vision tower's output: (T_i, side*side, Dv) each when
    the config pools before the projector, else (T_i, grid*grid, Dv). Feed them to
    [`embed_with_cached_video`].
    """
    from .layout import video_frames

    net = _unwrap(model).model
    frames, lengths = video_frames(pixel_values_videos, video_num_frames)
    with torch.no_grad():
        feats = net.frame_features(net.vision_features(frames))  # (sum T, tokens, Dv)
    return list(torch.split(feats, lengths))


def embed_with_cached_video(model: Any, input_ids: torch.Tensor, cached: list[torch.Tensor]) -> torch.Tensor:
    """``inputs_embeds`` (B, L, D) for ``input_ids`` with the videos' tokens built from cached features.

    The trainable rest of the video path runs here through the model's own layout code:
    [`VisualTokenLayout.project_frames`] (projector, pooling after it, newlines), ``split_videos``
    and ``scatter_features``.
    """
    net = _unwrap(model).model
    embeds = net.get_input_embeddings()(input_ids)
    per_frame = net.project_frames(torch.cat(cached))  # (sum T, tokens_per_frame, D)
    videos = net.split_videos(per_frame, [len(c) for c in cached])
    mask = net.placeholder_mask(input_ids, embeds, net.config.video_token_id)
    return net.scatter_features(embeds, mask, videos, "video")[0]


# ============================================================================ the CLI job
def _require_train_extra() -> None:
    import importlib.util

    missing = [m for m in ("trl", "peft", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        raise LlavaNextVideoError(
            f"training needs {', '.join(missing)}: pip install 'llava-next-video-hf[train]'"
        )


def run_training(
    kind: str,
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    epochs: float = 1.0,
    lr: float | None = None,
    batch_size: int = 1,
    grad_accum: int = 1,
    lora: bool = True,
    lora_r: int = 16,
    frames: int | None = None,
    resume: bool = False,
    max_steps: int = -1,
    save_steps: int = 100,
    logging_steps: int = 10,
    beta: float = 0.1,
    gradient_checkpointing: bool = True,
    train_vision_tower: bool = False,
    bf16: bool = False,
    seed: int = 42,
    fsdp: str | None = None,
    fsdp_config: str | os.PathLike | None = None,
    deepspeed: str | os.PathLike | None = None,
) -> Path:
    """Fine-tune the checkpoint at ``model_path`` on ``data_path`` (SFT or DPO) and write ``out_dir``.

    ``out_dir`` gets ``checkpoint-*`` folders while training (``resume=True`` continues from the last
    one) and a complete checkpoint (LoRA merged) + processor at the end (LoRA adapter in ``adapter/``).

    Several processes (``torchrun --nproc_per_node N`` or ``accelerate launch``) train one model with
    DDP: each rank gets its share of every global batch (``batch_size`` per rank), and only the main
    process writes. ``fsdp`` (e.g. ``"full_shard auto_wrap"``) with an optional ``fsdp_config`` file,
    or ``deepspeed`` (a DeepSpeed JSON config), go to the trainer arguments as in any TRL script; an
    ``accelerate launch --config_file`` that enables FSDP works as well.
    """
    _require_train_extra()
    if (fsdp or deepspeed) and not _has_accelerator():
        # accelerate (1.16) enables FSDP only for GPU-like backends, and `use_cpu` skips DeepSpeed:
        # on a CPU-only machine either would silently train plain DDP with full copies on every rank.
        option = "--fsdp" if fsdp else "--deepspeed"
        raise LlavaNextVideoError(
            f"{option} needs a GPU (CUDA, ROCm, XPU, ...): torch sees none here, and accelerate would "
            "silently fall back to DDP; drop the option to train with DDP on CPU"
        )
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.trainer_utils import get_last_checkpoint

    from . import processing

    processing.register_auto_classes()  # idempotent; AutoProcessor must know our processor

    out = Path(out_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if resume and last is None:
        raise LlavaNextVideoError(f"--resume: no checkpoint-* folder in {out} to resume from")
    if not resume and last is not None:
        raise LlavaNextVideoError(f"{out} already holds {Path(last).name}: pass --resume to continue it")
    records = load_jsonl(data_path, kind)
    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    settings = dict(
        num_train_epochs=epochs,
        learning_rate=lr if lr is not None else (2e-4 if lora else 2e-5),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        max_steps=max_steps,
        save_steps=save_steps,
        logging_steps=logging_steps,
        gradient_checkpointing=gradient_checkpointing,
        bf16=bf16,
        seed=seed,
    )
    if fsdp:
        settings.update(fsdp=fsdp, fsdp_config=str(fsdp_config) if fsdp_config else None)
    if deepspeed:
        settings["deepspeed"] = str(deepspeed)
    peft_config = lora_config(r=lora_r, alpha=2 * lora_r) if lora else None
    common = dict(peft_config=peft_config, num_frames=frames, freeze_vision=not train_vision_tower)
    if kind == "sft":
        trainer = sft_trainer(model, processor, records, sft_config(out, **settings), **common)
    else:
        trainer = dpo_trainer(model, processor, records, dpo_config(out, beta=beta, **settings), **common)
    trainer.train(resume_from_checkpoint=last if resume else None)
    _save_final(trainer, model_path, out, lora=lora)
    return out


def _save_final(trainer: Any, model_path: str | os.PathLike, out: Path, *, lora: bool) -> None:
    """Write the trained model once, however many processes trained it.

    ``Trainer.save_model`` writes on the main process only and gathers parameters that FSDP or
    DeepSpeed ZeRO-3 sharded across ranks (with the processor beside them). With LoRA it writes the
    adapter; the merged checkpoint is then built on the main process from a fresh load of the base
    weights and that saved adapter, so it is the same whether the adapter lived on one rank or was
    sharded (the main process holds one unsharded copy of the model for the merge).
    """
    trainer.save_model(str(out / "adapter" if lora else out))
    if lora and trainer.is_world_process_zero():
        from peft import PeftModel
        from transformers import AutoModelForImageTextToText

        base = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()
        merged.save_pretrained(out)
        trainer.processing_class.save_pretrained(out)
    trainer.accelerator.wait_for_everyone()  # no rank returns before the files are complete


def _run(args: argparse.Namespace) -> int:
    out = run_training(
        args.kind,
        args.model,
        args.data,
        args.out,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lora=args.lora,
        lora_r=args.lora_r,
        frames=args.frames,
        resume=args.resume,
        max_steps=args.max_steps,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        beta=getattr(args, "beta", 0.1),
        gradient_checkpointing=args.gradient_checkpointing,
        train_vision_tower=args.train_vision_tower,
        bf16=args.bf16,
        seed=args.seed,
        fsdp=args.fsdp,
        fsdp_config=args.fsdp_config,
        deepspeed=args.deepspeed,
    )
    if int(os.environ.get("RANK", "0")) == 0:  # set by torchrun / accelerate launch on every rank
        print(f"saved the fine-tuned checkpoint to {out}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train sft`` and ``train dpo`` on the ``llava-next-video`` parser."""
    train = subparsers.add_parser(
        "train",
        help="fine-tune a checkpoint on video conversations (SFT) or preference pairs (DPO)",
        description="Fine-tune with TRL (+ PEFT LoRA). JSONL format: see `llava_next_video_hf.train`.",
    )
    kinds = train.add_subparsers(dest="kind", required=True, metavar="{sft,dpo}")
    for kind, help_ in (
        ("sft", "supervised fine-tuning on {video|frames, messages} lines"),
        ("dpo", "direct preference optimisation on {video|frames, prompt, chosen, rejected} lines"),
    ):
        p = kinds.add_parser(kind, help=help_)
        p.add_argument("--model", required=True, help="checkpoint folder to start from")
        p.add_argument("--data", required=True, help="training data (JSONL)")
        p.add_argument("--out", required=True, help="output folder (checkpoints + final model)")
        p.add_argument("--epochs", type=float, default=1.0)
        p.add_argument("--lr", type=float, help="learning rate (default 2e-4 with LoRA, 2e-5 without)")
        p.add_argument("--batch-size", type=int, default=1, help="examples per step (DPO: pairs)")
        p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
        p.add_argument(
            "--lora", action=argparse.BooleanOptionalAction, default=True, help="train LoRA adapters"
        )
        p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2 r)")
        p.add_argument("--frames", type=int, help="frames sampled per video file (default: the checkpoint's)")
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
        p.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps")
        p.add_argument("--save-steps", type=int, default=100, help="write a checkpoint every N steps")
        p.add_argument("--logging-steps", type=int, default=10)
        p.add_argument(
            "--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
            help="recompute activations in the backward pass to save memory",
        )  # fmt: skip
        p.add_argument("--train-vision-tower", action="store_true", help="unfreeze the vision tower")
        p.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
        p.add_argument("--seed", type=int, default=42)
        p.add_argument(
            "--fsdp", metavar="OPTIONS",
            help='shard with FSDP under torchrun/accelerate, e.g. "full_shard auto_wrap" (TrainingArguments.fsdp)',
        )  # fmt: skip
        p.add_argument("--fsdp-config", metavar="FILE", help="FSDP options (JSON), with --fsdp")
        p.add_argument(
            "--deepspeed", metavar="FILE", help="DeepSpeed config (JSON); needs `pip install deepspeed`"
        )
        if kind == "dpo":
            p.add_argument("--beta", type=float, default=0.1, help="DPO temperature")
        p.set_defaults(func=_run, kind=kind)
