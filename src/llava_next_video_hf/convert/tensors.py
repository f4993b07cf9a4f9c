"""Tensors of a conversion: weight files and their headers, name-mapping rules, shard planning and the
streaming safetensors writer (one tensor in memory at a time)."""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..compat import LLAVA_HF_RULES, Rule
from ..errors import ConversionError

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
    from safetensors import safe_open

    # safe_open reads the header only (2000 tensors: 3 ms, the hand-written JSON parse took 12 ms)
    with safe_open(str(file), framework="pt", device="cpu") as f:
        slices = {name: f.get_slice(name) for name in f.keys()}
        return {
            name: TensorInfo(file, _ST_DTYPES[s.get_dtype()], tuple(s.get_shape()))
            for name, s in slices.items()
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
    # not huggingface_hub's parse_size_to_int: it knows only KB/MB/GB/TB (no KiB/MiB/GiB, no bare bytes)
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


def plan_shards(entries: list[Entry], limit: int) -> dict[str, list[Entry]]:
    """{file name: its entries}: huggingface_hub's greedy split into shards of at most ``limit`` bytes
    (a tensor larger than ``limit`` gets a shard of its own, placed before the shard being filled, which
    goes on filling after it), named as transformers names them
    (``model.safetensors``, or ``model-0000i-of-0000n.safetensors``). No data is read: the planner sees
    meta tensors, whose storage id is None, so no two entries are taken for one shared storage."""
    from huggingface_hub import split_torch_state_dict_into_shards

    split = split_torch_state_dict_into_shards(
        {e.name: torch.empty(e.shape, dtype=e.dtype, device="meta") for e in entries},
        filename_pattern="model{suffix}.safetensors",
        max_shard_size=limit,
    )
    by_name = {e.name: e for e in entries}
    return {file: [by_name[name] for name in names] for file, names in split.filename_to_tensors.items()}


def write_safetensors(path: Path, entries: list[Entry], produce: Callable[[Entry], torch.Tensor]) -> None:
    """Write a safetensors file, streaming: the header (known from ``entries``) first, then each tensor
    as ``produce`` returns it, so only one tensor is in memory at a time."""
    # Hand-written because safetensors has no streaming writer: save_file/serialize_file take every
    # tensor of the file at once. A 537 MB shard of 8 x 67 MB tensors: peak RSS +537 MB with save_file,
    # +69 MB here (+136 MB before the `del` below, which drops a tensor before the next is produced).
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
            del tensor  # before the next one is produced
