"""Checkpoint conversion: llava-hf (video and image) and original lmms-lab LLaVA-NeXT checkpoints -> ours.

Layouts:

* ``llava-hf``: transformers' ``LlavaNextVideoForConditionalGeneration`` (legacy names
  ``language_model.model.*``/``vision_tower.*``/``multi_modal_projector.*``/``image_newline`` or the
  transformers-5 names ``model.*``/``lm_head.*``). Settings map one to one.
* ``llava-hf-image``: ``LlavaNextForConditionalGeneration`` (LLaVA-NeXT *image*), which becomes a video
  model with the paper's zero-shot settings (pool 2x2 average before the projector, no video newline).
* ``lmms-lab``: the original ``Llava{Llama,Mistral,Qwen}ForCausalLM`` (``model.vision_tower.vision_tower.
  vision_model.*``, ``model.mm_projector.0/2.*``, ``model.layers.*``; ``mm_*`` settings in config.json).
* ``ours``: this package's format (re-shard / re-cast, or ``--to llava-hf`` for transformers' class).

A conversion runs in three steps:

1. **plan** (no tensor data read): config.json and the tensor headers give names, shapes and dtypes;
   the layout is detected, our config derived, every source name mapped to ours and checked against the
   model built on the meta device (missing, unexpected and mis-shaped tensors are all listed at once);
2. **write** into a temporary sibling folder: tensors are streamed one at a time into safetensors
   shards of at most ``shard_size`` (peak memory ~ one tensor plus the source pages of one shard), then
   the index, config, generation config, tokenizer, processor files and chat template;
3. **publish**: the temporary folder is renamed to DST, so an interrupted conversion never leaves a
   DST that loads as if complete.

Media tokens: the original code splices features in at id -200 and LLaVA-NeXT image tokenizers have no
``<video>``; missing ``<video>``/``<image>`` tokens are added to the tokenizer (video first, as llava-hf
does) and, when the embedding has no spare rows, the input embedding and LM head get one new row each,
the mean of the existing rows (the placeholders' embeddings are overwritten by visual features anyway).

Modules: ``tensors`` (weight files, headers, name rules, shards, the streaming writer), ``plan`` (layout,
configs, the checked plan, tokenizer and processor files); here: writing, ``convert``, the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import output_dir, rope, visual_tokens
from ..arg_types import positive_int
from ..chat_templates import TEMPLATES
from ..compat import (
    Settings,
    config_from_llava_hf_folder,
    name_list,
    quiet_transformers,
    register_key_mapping,
)
from ..errors import ConversionError
from .plan import LAYOUTS, TARGETS, config_to_llava_hf, detect_chat_template, plan_conversion
from .tensors import DTYPES, Entry, TensorSource, parse_size, plan_shards, weight_files, write_safetensors

# ============================================================================ writing tensors


def write_shards(
    entries: list[Entry], source: TensorSource, folder: Path, shard_size: int, progress: bool = True
) -> int:
    """Stream ``entries`` from ``source`` into ``model[-0000i-of-0000n].safetensors`` (+ index); returns
    the number of shards. (It looks ``write_safetensors`` up in this module, where tests replace it.)"""
    from huggingface_hub.utils import tqdm  # off when HF_HUB_DISABLE_PROGRESS_BARS=1

    shards = plan_shards(entries, shard_size)
    bar = tqdm(
        total=sum(e.nbytes for e in entries),
        unit="B",
        unit_scale=True,
        desc="converting",
        disable=not progress,
    )

    def produce(e: Entry) -> torch.Tensor:
        tensor = source.read(e.source)
        if e.fix is not None:
            tensor = e.fix(tensor)
        bar.update(e.nbytes)
        return tensor.to(e.dtype)

    with bar:
        for file, shard in shards.items():
            write_safetensors(folder / file, shard, produce)
            source.close()
    if len(shards) > 1:
        weight_map = {e.name: file for file, shard in shards.items() for e in shard}
        index = {
            "metadata": {"total_size": sum(e.nbytes for e in entries)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return len(shards)


# ============================================================================ conversion


@dataclass
class ConversionResult:
    """What a conversion wrote."""

    dst: Path
    layout: str
    target: str
    num_tensors: int
    num_shards: int
    total_bytes: int
    chat_template: str
    notes: list[str]


def resolve_source(src: str | os.PathLike) -> Path:
    """A local checkpoint folder for ``src``: the folder itself, or a Hub id's snapshot (when online)."""
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConversionError(f"{src} is not a folder")
        return path
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(src)) or str(src).startswith("."):
        raise ConversionError(f"{src} does not exist (and is not a Hub id like org/name)")
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        raise ConversionError(f"{src} is not a local folder and the Hub is offline (HF_HUB_OFFLINE=1)")
    patterns = ["*.json", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
    try:
        folder = Path(snapshot_download(str(src), allow_patterns=[*patterns, "*.safetensors"]))
        if not weight_files(folder):
            folder = Path(snapshot_download(str(src), allow_patterns=[*patterns, "pytorch_model*.bin"]))
    except Exception as err:  # network, auth, missing repo: all end the conversion the same way
        raise ConversionError(f"could not download {src} from the Hub: {err}") from err
    return folder


def _check_destination(dst: Path, src: Path | None, overwrite: bool) -> None:
    """Refuse a DST that overlaps SRC, cannot be created, or exists (without ``overwrite``, or when it
    is not a checkpoint folder we would replace): see ``output_dir``."""
    if src is not None:
        output_dir.check_no_overlap(src, dst, ConversionError)
    output_dir.check_destination(dst, overwrite, ConversionError)


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    layout: str = "auto",
    target: str = "ours",
    shard_size: int | str = "5GB",
    overwrite: bool = False,
    progress: bool = True,
    **settings: Any,
) -> ConversionResult:
    """Convert the checkpoint ``src`` (folder or Hub id) into ``dst``.

    Args:
        layout: ``auto`` or one of ``LAYOUTS`` (must agree with what ``src`` holds).
        target: ``ours`` or ``llava-hf`` (transformers' LlavaNextVideo layout, from our format only).
        shard_size: largest safetensors shard (``"5GB"``, ``"1MB"``, bytes).
        overwrite: replace an existing ``dst`` (atomically, once the new one is complete).
        settings: fields of [`Settings`]: ``max_frames``, ``rope_factor`` (number or ``"auto"``),
            ``num_frames``, ``spatial_pool_stride/mode/position``, ``video_newline_position``,
            ``chat_template`` (a name of ``TEMPLATES`` or ``"source"``), ``vision_config``, ``dtype``.
    """
    if layout not in ("auto", *LAYOUTS):
        raise ConversionError(f"layout must be auto or one of {LAYOUTS}, got {layout!r}")
    if target not in TARGETS:
        raise ConversionError(f"target must be one of {TARGETS}, got {target!r}")
    limit = parse_size(shard_size)
    dst = Path(dst).expanduser()
    local = Path(src).expanduser()
    _check_destination(dst, local if local.exists() else None, overwrite)
    folder = resolve_source(src)
    _check_destination(dst, folder, overwrite)
    plan = plan_conversion(folder, layout, target, Settings(**settings))
    try:
        with output_dir.staged_output(dst, overwrite, ConversionError) as tmp:
            shards = write_shards(plan.entries, plan.source, tmp, limit, progress)
            plan.save_files(tmp)
    finally:
        plan.source.close()
    return ConversionResult(
        dst=dst,
        layout=plan.layout,
        target=plan.target,
        num_tensors=len(plan.entries),
        num_shards=shards,
        total_bytes=sum(e.nbytes for e in plan.entries),
        chat_template=plan.template_name,
        notes=plan.notes,
    )


# ============================================================================ loading llava-hf directly


def load_llava_hf(path: str | os.PathLike, **kwargs: Any) -> Any:
    """[`LlavaNextVideoAnyResForConditionalGeneration`] straight from a llava-hf folder (or Hub id).

    The config is derived (with a warning saying so) and the weight names are mapped on the fly by
    [`register_key_mapping`]; ``kwargs`` go to ``from_pretrained`` (``dtype``, ``device_map``, ...).
    Missing, unexpected or mis-shaped weights raise ConversionError.
    """
    from transformers import PreTrainedConfig

    from ..modeling import LlavaNextVideoAnyResForConditionalGeneration

    register_key_mapping()
    config_dict, _ = PreTrainedConfig.get_config_dict(str(path))
    config = config_from_llava_hf_folder(config_dict, path)
    want_info = kwargs.pop("output_loading_info", False)
    with quiet_transformers():
        model, info = LlavaNextVideoAnyResForConditionalGeneration.from_pretrained(
            str(path), config=config, output_loading_info=True, **kwargs
        )
    problems = {
        k: sorted(map(str, info.get(k) or [])) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(problems.values()):
        raise ConversionError(
            f"{path} does not load as a llava-hf checkpoint: "
            + "; ".join(f"{k.replace('_', ' ')}: {name_list(v)}" for k, v in problems.items() if v)
        )
    return (model, info) if want_info else model


# ============================================================================ CLI


def _rope_factor_arg(text: str) -> float | str:
    try:
        return rope.parse_rope_factor(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ConversionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_CLI_DESCRIPTION = """\
Convert a checkpoint to this package's format (or, with --to llava-hf, ours to transformers' layout).

layouts (--from, detected from config.json and the tensor names by default):
  llava-hf        transformers' LlavaNextVideoForConditionalGeneration (settings kept as they are)
  llava-hf-image  LlavaNextForConditionalGeneration: LLaVA-NeXT image used zero-shot on video
                  (2x2 average pooling before the projector, no video newline; <video> added)
  lmms-lab        original Llava{Llama,Mistral,Qwen}ForCausalLM with mm_* settings (<image>/<video> added)
  ours            this package's format (re-shard, re-cast, change settings)

SRC is a folder (or a Hub id, downloaded when online). DST must not exist unless --overwrite, must not
overlap SRC, and --overwrite replaces only a checkpoint folder. DST is written to a hidden folder next to
it (.DST.partial-*) and renamed when complete; one left by a killed run is removed by the next run."""


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` subcommand to the ``llava-next-video`` parser."""
    p = subparsers.add_parser(
        "convert",
        help="convert llava-hf, LLaVA-NeXT image or original lmms-lab checkpoints to this package's format",
        description=_CLI_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="checkpoint folder or Hub id")
    p.add_argument("dst", metavar="DST", help="output folder")
    p.add_argument(
        "--from",
        dest="layout",
        choices=("auto", *LAYOUTS),
        default="auto",
        help="source layout (default: auto)",
    )
    p.add_argument(
        "--to",
        dest="target",
        choices=TARGETS,
        default="ours",
        help="output layout (llava-hf: from ours only)",
    )
    rope_group = p.add_mutually_exclusive_group()
    rope_group.add_argument(
        "--max-frames",
        type=positive_int,
        metavar="N",
        help="frame budget; the linear RoPE factor follows from it",
    )
    rope_group.add_argument(
        "--rope-factor",
        type=_rope_factor_arg,
        metavar="F|auto",
        help="linear RoPE factor, or auto (from the frame budget)",
    )
    p.add_argument("--num-frames", type=positive_int, metavar="N", help="frames sampled per video by default")
    p.add_argument(
        "--dtype", choices=("auto", *DTYPES), default="auto", help="output dtype (default: the source's)"
    )
    p.add_argument(
        "--shard-size",
        type=_size_arg,
        default="5GB",
        metavar="SIZE",
        help="largest shard, e.g. 5GB, 500MB (default: 5GB)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DST when it is a checkpoint folder")
    p.add_argument(
        "--chat-template",
        choices=(*sorted(TEMPLATES), "source"),
        help="default: the base LLM's original template",
    )
    p.add_argument(
        "--vision-config",
        metavar="PATH",
        help="vision tower config (folder or .json) for lmms-lab checkpoints",
    )
    p.add_argument(
        "--pool-stride",
        dest="spatial_pool_stride",
        type=positive_int,
        metavar="N",
        help="override the pooling stride",
    )
    p.add_argument("--pool-mode", dest="spatial_pool_mode", choices=("average", "max", "bilinear"))
    p.add_argument(
        "--pool-position", dest="spatial_pool_position", choices=("before_projector", "after_projector")
    )
    p.add_argument(
        "--newline",
        dest="video_newline_position",
        choices=visual_tokens.NEWLINE_POSITIONS,
        help="video newline policy",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    keys = ("max_frames", "rope_factor", "num_frames", "spatial_pool_stride", "spatial_pool_mode",
            "spatial_pool_position", "video_newline_position", "chat_template", "vision_config", "dtype")  # fmt: skip
    result = convert(
        args.src,
        args.dst,
        layout=args.layout,
        target=args.target,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        **{k: getattr(args, k) for k in keys},
    )
    print(
        f"converted {args.src} ({result.layout}) -> {result.dst} ({result.target}): {result.num_tensors} tensors, "
        f"{result.total_bytes / 1e6:.1f} MB in {result.num_shards} shard(s), chat template {result.chat_template}"
    )
    for note in result.notes:
        print(f"note: {note}")
    sys.stdout.flush()
    return 0


__all__ = [
    "LAYOUTS",
    "ConversionResult",
    "add_cli",
    "config_to_llava_hf",
    "convert",
    "detect_chat_template",
    "load_llava_hf",
    "parse_size",
]
