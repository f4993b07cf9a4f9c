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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import output_dir, rope
from .chat_templates import TEMPLATES
from .compat import (
    LLAVA_HF_RULES,
    LMMS_LAB_TEXT,
    Rule,
    Settings,
    build_config,
    config_from_llava_hf,
    config_from_lmms_lab,
    derived_config,
    load_tokenizer,
    name_list,
    quiet_transformers,
    register_key_mapping,
)
from .configuration import LlavaNextVideoAnyResConfig
from .errors import ConversionError

LAYOUTS = ("llava-hf", "llava-hf-image", "lmms-lab", "ours")
TARGETS = ("ours", "llava-hf")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ============================================================================ tensor names


_LMMS_LAB_RULES: list[Rule] = [
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "model.image_newline"),
    (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
    (r"^lm_head\.", "lm_head."),
]
_OURS_RULES: list[Rule] = [(r"^(model\.|lm_head\.)", r"\1")]
RULES = {
    "llava-hf": LLAVA_HF_RULES,
    "llava-hf-image": LLAVA_HF_RULES,
    "lmms-lab": _LMMS_LAB_RULES,
    "ours": _OURS_RULES,
}
#: ours -> the names transformers' LlavaNextVideo checkpoints carry on the Hub (load in transformers 4 and 5)
_TO_LLAVA_HF_RULES: list[Rule] = [
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.language_model\.", "language_model.model."),
    (r"^model\.vision_tower\.", "vision_tower.vision_model."),
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
    (r"^model\.image_newline$", "image_newline"),
]
#: buffers some checkpoints carry that no model here loads
_IGNORED = re.compile(r"(^|\.)(rotary_emb\.inv_freq|position_ids)$")


def map_name(name: str, rules: list[Rule]) -> str | None:
    """``name`` renamed by the first matching rule, or None when no rule knows it."""
    for pattern, replacement in rules:
        renamed, hits = re.subn(pattern, replacement, name, count=1)
        if hits:
            return renamed
    return None


# ============================================================================ reading tensors

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip
_ST_NAMES = {dtype: name for name, dtype in _ST_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it is, read from the file header (no data)."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _safetensors_header(file: Path) -> dict[str, TensorInfo]:
    with open(file, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return {
        name: TensorInfo(file, _ST_DTYPES[meta["dtype"]], tuple(meta["shape"]))
        for name, meta in header.items()
    }


def _load_pickle(file: Path) -> dict[str, torch.Tensor]:
    try:  # weights only: never runs code from the checkpoint; mmap keeps it lazy where the format allows
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return torch.load(file, map_location="cpu", weights_only=True)


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder: safetensors (index first), else ``*.bin`` pickles."""
    for index_name, pattern in (
        ("model.safetensors.index.json", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model*.bin"),
    ):
        index = folder / index_name
        if index.is_file():
            return [folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        files = sorted(folder.glob(pattern))
        if files:
            return files
    return []


class TensorSource:
    """The tensors of a checkpoint folder, read one at a time.

    A safetensors file is memory-mapped only while one tensor is copied out of it, so the pages read
    never accumulate (peak memory ~ the largest tensor, whatever the shard sizes). ``*.bin`` files load
    with ``weights_only=True`` (memory-mapped where the format allows) and stay open until [`close`].
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.files = weight_files(folder)
        if not self.files:
            raise ConversionError(f"{folder} holds no weights (no *.safetensors and no pytorch_model*.bin)")
        self.infos: dict[str, TensorInfo] = {}
        for file in self.files:
            if not file.is_file():
                raise ConversionError(f"{file} is listed in the index of {folder} but does not exist")
            if file.suffix == ".safetensors":
                self.infos.update(_safetensors_header(file))
            else:
                state = _load_pickle(file)
                self.infos.update({k: TensorInfo(file, v.dtype, tuple(v.shape)) for k, v in state.items()})
        self._pickle: tuple[Path, dict[str, torch.Tensor]] | None = None

    def read(self, name: str) -> torch.Tensor:
        """The tensor ``name`` (a fresh CPU tensor)."""
        info = self.infos[name]
        if info.file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(info.file), framework="pt", device="cpu") as f:
                return f.get_tensor(name)
        if self._pickle is None or self._pickle[0] != info.file:
            self._pickle = (info.file, _load_pickle(info.file))
        return self._pickle[1][name]

    def close(self) -> None:
        """Release an open pickle file."""
        self._pickle = None


# ============================================================================ writing tensors


@dataclass
class Entry:
    """One output tensor: its name, where it comes from, and what it must be once written."""

    name: str
    source: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    fix: Callable[[torch.Tensor], torch.Tensor] | None = None  # e.g. new vocabulary rows

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def parse_size(size: int | str) -> int:
    """``"5GB"`` -> 5e9 bytes (``KB/MB/GB/TB`` are powers of 1000, ``KiB/MiB/GiB`` of 1024; a bare number is bytes)."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(size), flags=re.IGNORECASE)
        if not match:
            raise ConversionError(f"shard size {size!r} is not a size like 5GB, 500MB or 1048576")
        unit = (match.group(2) or "B").upper()
        base = 1024 if "I" in unit else 1000
        power = "BKMGT".index(unit[0])
        value = int(float(match.group(1)) * base**power)
    if value < 1:
        raise ConversionError(f"shard size must be positive, got {size!r}")
    return value


def plan_shards(entries: list[Entry], limit: int) -> list[list[Entry]]:
    """Greedy shards of at most ``limit`` bytes, in order (a tensor larger than ``limit`` is alone)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return shards


def write_safetensors(path: Path, entries: list[Entry], produce: Callable[[Entry], torch.Tensor]) -> None:
    """Write a safetensors file, streaming: the header (known from ``entries``) first, then each tensor
    as ``produce`` returns it, so only one tensor is in memory at a time."""
    header: dict[str, Any] = {}
    offset = 0
    for e in entries:
        header[e.name] = {
            "dtype": _ST_NAMES[e.dtype],
            "shape": list(e.shape),
            "data_offsets": [offset, offset + e.nbytes],
        }
        offset += e.nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for e in entries:
            tensor = produce(e)
            if tensor.dtype != e.dtype or tuple(tensor.shape) != e.shape:
                raise ConversionError(
                    f"{e.name}: produced {tuple(tensor.shape)} {tensor.dtype}, planned {e.shape} {e.dtype}"
                )
            f.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))


def write_shards(
    entries: list[Entry], source: TensorSource, folder: Path, shard_size: int, progress: bool = True
) -> int:
    """Stream ``entries`` from ``source`` into ``model[-0000i-of-0000n].safetensors`` (+ index); returns
    the number of shards."""
    from huggingface_hub.utils import are_progress_bars_disabled
    from tqdm.auto import tqdm

    shards = plan_shards(entries, shard_size)
    files = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    bar = tqdm(
        total=sum(e.nbytes for e in entries),
        unit="B",
        unit_scale=True,
        desc="converting",
        disable=not progress or are_progress_bars_disabled(),  # HF_HUB_DISABLE_PROGRESS_BARS=1
    )

    def produce(e: Entry) -> torch.Tensor:
        tensor = source.read(e.source)
        if e.fix is not None:
            tensor = e.fix(tensor)
        bar.update(e.nbytes)
        return tensor.to(e.dtype)

    with bar:
        for file, shard in zip(files, shards, strict=True):
            write_safetensors(folder / file, shard, produce)
            source.close()
    if len(shards) > 1:
        weight_map = {e.name: file for file, shard in zip(files, shards, strict=True) for e in shard}
        index = {
            "metadata": {"total_size": sum(e.nbytes for e in entries)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return len(shards)


# ============================================================================ RoPE


# ============================================================================ configs


# ---- lmms-lab ---------------------------------------------------------------------------


def config_to_llava_hf(config: LlavaNextVideoAnyResConfig) -> Any:
    """transformers' ``LlavaNextVideoConfig`` equal to ours, or ConversionError naming what it cannot hold."""
    from transformers import LlavaNextVideoConfig

    problems = []
    if config.spatial_pool_position != "before_projector":
        problems.append(f"spatial_pool_position={config.spatial_pool_position}")
    if config.spatial_pool_mode not in ("average", "max"):
        problems.append(f"spatial_pool_mode={config.spatial_pool_mode}")
    if config.video_newline_position != "no_token":
        problems.append(f"video_newline_position={config.video_newline_position}")
    if problems:
        raise ConversionError(
            "cannot express this checkpoint in transformers' LlavaNextVideo layout, which pools before the "
            f"projector (average or max) and adds no video newline: it has {', '.join(problems)}"
        )
    text = config.text_config.to_dict()
    text["max_position_embeddings"] = (
        config.original_max_position_embeddings
    )  # the factor stays in rope_parameters
    hf = LlavaNextVideoConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=text,
        image_token_index=config.image_token_id,
        video_token_index=config.video_token_id,
        projector_hidden_act=config.projector_hidden_act,
        multimodal_projector_bias=config.multimodal_projector_bias,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_feature_layer=config.vision_feature_layer,
        image_grid_pinpoints=config.image_grid_pinpoints,
        spatial_pool_stride=config.spatial_pool_stride,
        spatial_pool_mode=config.spatial_pool_mode,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    hf.architectures = ["LlavaNextVideoForConditionalGeneration"]
    return hf


# ============================================================================ tokenizer & template


def add_media_tokens(path: Path, tokenizer: Any, need: dict[str, str]) -> tuple[Any, list[str]]:
    """Reload ``tokenizer`` from ``path`` with the named ``need`` tokens (e.g. ``{"video_token": "<video>"}``)
    registered as special tokens, adding the missing ones in that order; returns (tokenizer, added)."""
    vocab = tokenizer.get_vocab()
    added = [tok for tok in need.values() if tok not in vocab]
    named = {
        key: str(getattr(tokenizer, key)) for key in ("image_token", "video_token") if hasattr(tokenizer, key)
    }
    named.update(need)
    tokenizer = load_tokenizer(path, extra_special_tokens=named)
    vocab = tokenizer.get_vocab()
    lost = [tok for tok in need.values() if tok not in vocab]
    if lost:
        raise ConversionError(f"could not add {lost} to the tokenizer of {path}")
    return tokenizer, added


def detect_chat_template(text_model_type: str, tokenizer: Any) -> str:
    """The original conversation template of a base LLM: Vicuna v1 (Llama/Vicuna), Mistral instruct,
    Yi-34B's ChatML (``chatml_direct``) or Qwen's ``qwen_1_5``."""
    vocab = tokenizer.get_vocab()
    if text_model_type.startswith("qwen"):
        return "qwen_1_5"
    if text_model_type in ("mistral", "mixtral"):
        return "mistral_instruct"
    if "<|im_start|>" in vocab:
        return "chatml_direct"
    return "vicuna_v1"


def _source_chat_template(folder: Path, tokenizer: Any) -> str:
    for file in ("chat_template.jinja", "chat_template.json"):
        path = folder / file
        if path.is_file():
            text = path.read_text()
            return json.loads(text)["chat_template"] if file.endswith(".json") else text
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise ConversionError(f"--chat-template source: {folder} has no chat template")


def _generation_config(folder: Path, text_config: Any, tokenizer: Any, template: str) -> Any:
    from transformers import GenerationConfig

    if (folder / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(str(folder))
    else:
        gen = GenerationConfig(
            bos_token_id=getattr(text_config, "bos_token_id", None) or tokenizer.bos_token_id,
            eos_token_id=getattr(text_config, "eos_token_id", None) or tokenizer.eos_token_id,
            pad_token_id=getattr(text_config, "pad_token_id", None) or tokenizer.pad_token_id,
        )
    im_end = tokenizer.get_vocab().get("<|im_end|>")
    if template in ("chatml_direct", "qwen_1_5") and im_end is not None:  # ChatML turns end with <|im_end|>
        eos = gen.eos_token_id
        eos = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]
        gen.eos_token_id = eos + [im_end] if im_end not in eos else eos
    return gen


def save_processor(config: Any, tokenizer: Any, chat_template: str | None, folder: Path) -> None:
    """Processor files (image + video processor, tokenizer, chat template) for ``config`` in ``folder``."""
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    try:
        from .processing import LlavaNextVideoAnyResProcessor
    except ImportError:  # processing not available: the tokenizer (with its template) still makes sense
        tokenizer.save_pretrained(str(folder))
        return
    processor = LlavaNextVideoAnyResProcessor.from_model_config(
        config, tokenizer, chat_template=chat_template
    )
    processor.save_pretrained(str(folder))


# ============================================================================ the plan


@dataclass
class Plan:
    """Everything a conversion will write, decided before any tensor data is read."""

    layout: str
    target: str
    config: Any
    entries: list[Entry]
    source: TensorSource
    tokenizer: Any
    chat_template: str | None
    template_name: str
    generation_config: Any
    notes: list[str] = field(default_factory=list)

    def save_files(self, folder: Path) -> None:
        """config.json, generation_config.json, tokenizer, processor files and chat template."""
        self.config.save_pretrained(str(folder))
        self.generation_config.save_pretrained(str(folder))
        if self.target == "ours":
            save_processor(self.config, self.tokenizer, self.chat_template, folder)
        else:
            _save_llava_hf_processor(self.config, self.tokenizer, self.chat_template, folder)


def _save_llava_hf_processor(config: Any, tokenizer: Any, chat_template: str | None, folder: Path) -> None:
    """Tokenizer (with the chat template) and transformers' LLaVA-NeXT image processor config."""
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(folder))
    size = int(config.vision_config.image_size)
    LlavaNextImageProcessorPil(
        image_grid_pinpoints=config.image_grid_pinpoints,
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    ).save_pretrained(str(folder))


def _detect_layout(config: dict, names: set[str]) -> tuple[str | None, str | None]:
    """(layout by config.json, family by tensor names): either may be None when unrecognised."""
    model_type = config.get("model_type", "")
    by_config = {
        "llava_next_video": "llava-hf",
        "llava_next": "llava-hf-image",
        LlavaNextVideoAnyResConfig.model_type: "ours",
    }.get(model_type)
    architectures = config.get("architectures") or []
    if by_config is None and ("mm_vision_tower" in config or any(a in LMMS_LAB_TEXT for a in architectures)):
        by_config = "lmms-lab"
    if any(n.startswith("model.mm_projector.") for n in names):
        by_tensors = "lmms-lab"
    elif any(re.match(r"^(model\.)?multi_modal_projector\.linear_1\.", n) for n in names):
        by_tensors = "llava-hf"
    else:
        by_tensors = None
    return by_config, by_tensors


def resolve_layout(requested: str, config: dict, names: set[str], folder: Path) -> str:
    """The layout of ``folder``; ``requested`` (``auto`` or a layout) must agree with what is found."""
    by_config, by_tensors = _detect_layout(config, names)
    family = {
        "llava-hf": "llava-hf",
        "llava-hf-image": "llava-hf",
        "ours": "llava-hf",
        "lmms-lab": "lmms-lab",
    }
    layout = by_config if requested == "auto" else requested
    if layout is not None and by_tensors is not None and family[layout] == by_tensors:
        if by_config in (None, layout):
            return layout
    found = (
        f"config.json has model_type {config.get('model_type')!r} and architectures {config.get('architectures')}"
        f" ({by_config or 'no known layout'}); the tensor names look like {by_tensors or 'no known layout'}"
    )
    if requested == "auto" or layout is None:
        raise ConversionError(
            f"unknown checkpoint layout in {folder}: {found}. Known layouts: llava-hf "
            "(LlavaNextVideoForConditionalGeneration), llava-hf-image (LlavaNextForConditionalGeneration), "
            "lmms-lab (original Llava*ForCausalLM with mm_vision_tower), ours"
        )
    raise ConversionError(f"--from {requested} does not match {folder}: {found}")


def _expected_shapes(config: Any, hf: bool = False) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the model ``config`` describes (built on the meta device)."""
    if hf:
        from transformers import LlavaNextVideoForConditionalGeneration as cls
    else:
        from .modeling import LlavaNextVideoAnyResForConditionalGeneration as cls
    with torch.device("meta"), quiet_transformers():
        model = cls(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def _mean_rows(rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def grow(t: torch.Tensor) -> torch.Tensor:  # (V, D) -> (rows, D): new rows = mean of the old ones
        mean = t.float().mean(0, keepdim=True).to(t.dtype)
        return torch.cat([t, mean.expand(rows - t.shape[0], -1)], dim=0)

    return grow


def _source_dtype(config: dict, source: TensorSource) -> torch.dtype:
    name = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    if isinstance(name, str) and name in DTYPES:
        return DTYPES[name]
    floats = [i.dtype for i in source.infos.values() if i.dtype.is_floating_point]
    return max(set(floats), key=floats.count) if floats else torch.float32


def _media_tokens(
    layout: str, config: dict, folder: Path, notes: list[str]
) -> tuple[Any, int | None, int | None]:
    """The tokenizer, with ``<video>`` (and ``<image>``) added where the layout lacks them, and their ids."""
    tokenizer = load_tokenizer(folder)
    need = {}
    if layout in ("llava-hf-image", "lmms-lab") and "<video>" not in tokenizer.get_vocab():
        need["video_token"] = "<video>"
    if layout == "lmms-lab" and "<image>" not in tokenizer.get_vocab():
        need["image_token"] = "<image>"
    if need:
        tokenizer, added = add_media_tokens(folder, tokenizer, need)
        notes.append(f"added {' and '.join(added)} to the tokenizer")
    vocab = tokenizer.get_vocab()
    if layout == "lmms-lab":
        return tokenizer, vocab["<image>"], vocab["<video>"]
    if layout == "llava-hf-image":
        return tokenizer, None, vocab["<video>"]
    return tokenizer, None, None


def plan_conversion(
    folder: Path, layout: str = "auto", target: str = "ours", settings: Settings | None = None
) -> Plan:
    """Read headers and configs of ``folder``, derive the output and check every tensor (no data read)."""
    settings = settings or Settings()
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConversionError(f"{folder} has no config.json")
    cfg = json.loads(config_file.read_text())
    source = TensorSource(folder)
    names = {n for n in source.infos if not _IGNORED.search(n)}
    layout = resolve_layout(layout, cfg, names, folder)
    notes: list[str] = []
    if target == "llava-hf":
        return _plan_to_llava_hf(folder, cfg, source, names, layout, settings)

    tokenizer, image_id, video_id = _media_tokens(layout, cfg, folder, notes)
    if layout in ("llava-hf", "llava-hf-image"):
        config = config_from_llava_hf(cfg, video_token_id=video_id, settings=settings)
    elif layout == "lmms-lab":
        shapes = {n: source.infos[n].shape for n in names}
        config = config_from_lmms_lab(
            cfg, shapes, image_token_id=image_id, video_token_id=video_id, settings=settings, notes=notes
        )
    else:
        fields = {**cfg, **settings.video()}
        for key in ("model_type", "architectures", "transformers_version", "dtype"):
            fields.pop(key, None)
        fields.update(
            {
                k: v
                for k, v in settings.rope(None, cfg.get("original_max_position_embeddings")).items()
                if v is not None
            }
        )
        text, vision = fields.pop("text_config", None), fields.pop("vision_config", None)
        config = build_config(text, vision, fields)

    mapping, unknown = _map_names(names, RULES[layout], folder)
    embed = "model.language_model.embed_tokens.weight"
    rows = source.infos[mapping[embed]].shape[0] if embed in mapping else None
    if rows is not None:  # the vocabulary: the embedding's rows, grown when the tokenizer outgrew them
        vocab_size = max(rows, len(tokenizer))
        config.text_config.vocab_size = vocab_size
        if vocab_size > rows:
            notes.append(
                f"embeddings grown from {rows} to {vocab_size} rows (new rows: the mean of the others)"
            )
    _fit_num_frames(config, settings, notes)
    expected = _expected_shapes(config)
    if config.tie_word_embeddings and "lm_head.weight" in mapping:
        del mapping["lm_head.weight"]
        notes.append("lm_head.weight dropped: the model ties it to the input embedding")
    out_dtype = DTYPES.get(settings.dtype) or _source_dtype(cfg, source)
    config.dtype = str(out_dtype).removeprefix("torch.")
    entries = _entries(expected, mapping, unknown, source, settings.dtype, rows, folder, layout)
    template_name = settings.chat_template or detect_chat_template(config.text_config.model_type, tokenizer)
    template = (
        _source_chat_template(folder, tokenizer) if template_name == "source" else TEMPLATES[template_name]
    )
    gen = _generation_config(folder, config.text_config, tokenizer, template_name)
    return Plan(layout, target, config, entries, source, tokenizer, template, template_name, gen, notes)


def _fit_num_frames(config: LlavaNextVideoAnyResConfig, settings: Settings, notes: list[str]) -> None:
    """Default frame count: what fits the context with the text budget, unless ``--num-frames`` says."""
    if settings.num_frames is not None:
        return
    fits = rope.max_frames_that_fit(
        config.context_length, rope.TEXT_TOKEN_BUDGET, **config.video_token_kwargs()
    )
    if fits < config.num_frames:
        notes.append(
            f"num_frames {config.num_frames} -> {max(1, fits)}: {config.num_frames} frames do not fit the "
            f"{config.context_length}-token context with text; --max-frames N or --rope-factor scales RoPE instead"
        )
        config.num_frames = max(1, fits)


def _map_names(names: set[str], rules: list[Rule], folder: Path) -> tuple[dict[str, str], list[str]]:
    """({our name: source name}, source names no rule knows)."""
    mapping: dict[str, str] = {}
    unknown = []
    for name in sorted(names):
        target = map_name(name, rules)
        if target is None:
            unknown.append(name)
        elif target in mapping:
            raise ConversionError(f"{folder}: both {mapping[target]} and {name} map to {target}")
        else:
            mapping[target] = name
    return mapping, unknown


def _entries(
    expected: dict[str, tuple[int, ...]],
    mapping: dict[str, str],
    unknown: list[str],
    source: TensorSource,
    dtype: str,
    rows: int | None,
    folder: Path,
    layout: str,
    rename: Callable[[str], str] = lambda name: name,
) -> list[Entry]:
    """One [`Entry`] per expected tensor, or a ConversionError listing every missing, unexpected and
    mis-shaped tensor."""
    missing = [name for name in expected if name not in mapping]
    unexpected = unknown + [src for name, src in mapping.items() if name not in expected]
    entries, mismatched = [], []
    for name, shape in expected.items():
        if name not in mapping:
            continue
        info = source.infos[mapping[name]]
        fix = None
        if rows is not None and name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            if info.shape[0] == rows and shape[0] > rows:
                fix = _mean_rows(shape[0])
        have = (shape[0], *info.shape[1:]) if fix is not None else info.shape
        if have != shape:
            mismatched.append(f"{mapping[name]} {list(info.shape)} (expected {list(shape)})")
            continue
        out = DTYPES[dtype] if dtype in DTYPES and info.dtype.is_floating_point else info.dtype
        entries.append(Entry(rename(name), mapping[name], out, shape, fix))
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing: {name_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {name_list(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) with the wrong shape: {name_list(mismatched)}")
    if problems:
        raise ConversionError(f"cannot convert {folder} (layout {layout}): " + "; ".join(problems))
    return entries


def _plan_to_llava_hf(
    folder: Path, cfg: dict, source: TensorSource, names: set[str], layout: str, settings: Settings
) -> Plan:
    if layout != "ours":
        raise ConversionError(
            f"--to llava-hf converts checkpoints of this package's format; {folder} is {layout}"
        )
    config = LlavaNextVideoAnyResConfig.from_dict({k: v for k, v in cfg.items() if k != "model_type"})
    hf = config_to_llava_hf(config)
    out_dtype = DTYPES.get(settings.dtype) or _source_dtype(cfg, source)
    hf.dtype = str(out_dtype).removeprefix("torch.")
    mapping, unknown = _map_names(names, _OURS_RULES, folder)
    expected = _expected_shapes(hf, hf=True)  # transformers 5 names, which are ours
    entries = _entries(
        expected, mapping, unknown, source, settings.dtype, None, folder, layout,
        rename=lambda name: map_name(name, _TO_LLAVA_HF_RULES) or name,
    )  # fmt: skip
    tokenizer = load_tokenizer(folder)
    template = (
        _source_chat_template(folder, tokenizer)
        if settings.chat_template in (None, "source")
        else TEMPLATES[settings.chat_template]
    )
    gen = _generation_config(folder, config.text_config, tokenizer, settings.chat_template or "")
    notes = ["num_frames/max_frames are not part of transformers' config and were dropped"]
    return Plan(layout, "llava-hf", hf, entries, source, tokenizer, template, "source", gen, notes)


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

    from .modeling import LlavaNextVideoAnyResForConditionalGeneration

    register_key_mapping()
    config_dict, _ = PreTrainedConfig.get_config_dict(str(path))
    config = derived_config(config_dict, path)
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


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
        type=_positive_int,
        metavar="N",
        help="frame budget; the linear RoPE factor follows from it",
    )
    rope_group.add_argument(
        "--rope-factor",
        type=_rope_factor_arg,
        metavar="F|auto",
        help="linear RoPE factor, or auto (from the frame budget)",
    )
    p.add_argument(
        "--num-frames", type=_positive_int, metavar="N", help="frames sampled per video by default"
    )
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
        type=_positive_int,
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
        choices=rope.NEWLINE_POSITIONS,
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
