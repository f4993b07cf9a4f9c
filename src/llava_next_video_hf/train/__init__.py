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

The data format is documented in [`data`](data.py); trainers and LoRA in [`trainers`](trainers.py).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import LlavaNextVideoError
from .data import (
    IGNORE_INDEX,
    TrainingDataError,
    VideoDPOCollator,
    VideoSFTCollator,
    load_jsonl,
    mask_labels,
    records_to_dataset,
)
from .trainers import (
    _has_accelerator,
    cache_video_features,
    completion_logprobs,
    default_lora_target_modules,
    dpo_config,
    dpo_trainer,
    embed_with_cached_video,
    freeze_vision_tower,
    lora_config,
    sft_config,
    sft_trainer,
)

__all__ = [
    "IGNORE_INDEX",
    "TrainingDataError",
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
    "records_to_dataset",
    "run_training",
    "sft_config",
    "sft_trainer",
]


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
    lora_dropout: float = 0.05,
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

    from .. import processing

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
    peft_config = lora_config(r=lora_r, alpha=2 * lora_r, dropout=lora_dropout) if lora else None
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
        lora_dropout=args.lora_dropout,
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
        p.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the LoRA adapters' input")
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
