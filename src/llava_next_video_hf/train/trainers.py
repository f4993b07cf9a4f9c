"""Model set-up for fine-tuning: freezing, LoRA targets, TRL configs and trainers, log-probabilities,
and the frozen-tower feature cache ([`cache_video_features`] / [`embed_with_cached_video`])."""

from __future__ import annotations

import copy
import os
from typing import Any

import torch

from .data import IGNORE_INDEX, VideoDPOCollator, VideoSFTCollator, records_to_dataset


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
    from ..layout import video_frames

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
