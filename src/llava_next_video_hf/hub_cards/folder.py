"""The files of a Hub folder, read without the network: the upload list, safetensors headers,
parameter counts, code files and ``auto_map`` references. [`check.check_folder`] turns them (and
the model card's checks) into one verdict before any upload.
"""

from __future__ import annotations

import ast
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import LlavaNextVideoError

MODEL_TYPE = "llava_next_video_anyres"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TOKENIZER_MODEL_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
# auto_map holders, in the order AutoProcessor reads them
AUTO_MAP_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer_config.json",
    "config.json",
)
# files left out of uploads (local clutter); everything else in the folder is checked and uploaded
IGNORED_PARTS = (".git", ".cache", "__pycache__", ".DS_Store")


class HubFolderError(LlavaNextVideoError, ValueError):
    """A folder is not ready for the Hub; the message lists every problem found."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a Hub folder: where it goes in the repo and how big it is."""

    path_in_repo: str
    size: int
    local_path: Path


def list_files(folder: str | Path) -> list[FileEntry]:
    """Every file under ``folder`` that an upload would send (sorted, local clutter skipped)."""
    folder = Path(folder)
    entries = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part in IGNORED_PARTS for part in rel.parts):
            continue
        entries.append(FileEntry(rel.as_posix(), path.stat().st_size, path))
    return entries


def read_json(path: Path, problems: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems.append(f"{path.name}: cannot be read as JSON ({error})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: expected a JSON object")
        return None
    return data


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor names -> dtype/shape/offsets), read without loading data."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            raise ValueError(f"header length {length} is implausible")
        header = json.loads(f.read(length))
    size = path.stat().st_size
    for name, info in header.items():
        if name != "__metadata__" and info["data_offsets"][1] + 8 + length > size:
            raise ValueError(f"tensor {name!r} extends past the end of the file (truncated?)")
    return header


def weight_files(folder: Path, problems: list[str]) -> list[Path]:
    """The safetensors files of the checkpoint (single file, or every shard of the index)."""
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        data = read_json(index, problems) or {}
        shards = sorted(set((data.get("weight_map") or {}).values()))
        if not shards:
            problems.append(f"{WEIGHTS_INDEX_NAME}: has no weight_map")
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            problems.append(f"{WEIGHTS_INDEX_NAME}: {len(missing)} shard(s) missing: {', '.join(missing)}")
        return [folder / s for s in shards if (folder / s).is_file()]
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    problems.append(f"no weights: neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME} is in the folder")
    return []


def count_parameters(folder: str | Path) -> int | None:
    """Number of parameters in the folder's safetensors weights (from the headers), None if unreadable."""
    problems: list[str] = []
    total = 0
    for path in weight_files(Path(folder), problems):
        try:
            header = safetensors_header(path)
        except (OSError, ValueError, KeyError):
            return None
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for d in info["shape"]:
                    n *= int(d)
                total += n
    return None if problems else total


def _defines_class(path: Path, name: str) -> bool:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return False
    return any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body)


def _auto_map_refs(data: dict) -> list[str]:
    refs = []
    for holder in (data, *(v for v in data.values() if isinstance(v, dict))):
        for value in (holder.get("auto_map") or {}).values():
            values = value if isinstance(value, (list, tuple)) else [value]
            refs.extend(v for v in values if isinstance(v, str))
    return refs


def check_code(folder: Path, problems: list[str]) -> None:
    """Every ``auto_map`` entry names a module file in the folder that defines the class; no other code."""
    referenced: set[str] = set()
    for name in AUTO_MAP_FILES:
        path = folder / name
        data = read_json(path, []) if path.is_file() else None
        for ref in _auto_map_refs(data or {}):
            if "--" in ref:
                problems.append(f"{name}: auto_map entry {ref!r} points to another repository")
                continue
            module, _, cls = ref.rpartition(".")
            module_path = folder / f"{module}.py"
            if not module_path.is_file():
                problems.append(f"{name}: auto_map entry {ref!r} needs {module}.py, which is missing")
            elif not _defines_class(module_path, cls):
                problems.append(f"{name}: auto_map entry {ref!r}: {module}.py defines no class {cls}")
            referenced.add(f"{module}.py")
    if referenced:  # plus the siblings transformers' loader copies with them (their relative imports)
        from transformers.dynamic_module_utils import get_relative_import_files

        for name in sorted(referenced):
            if not (folder / name).is_file():
                continue  # reported above
            for needed in map(Path, get_relative_import_files(folder / name)):
                referenced.add(needed.name)
                if not needed.is_file():
                    problems.append(f"remote code imports {needed.stem}, but {needed.name} is missing")
    stray = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if p.name not in referenced)
    stray = [s for s in stray if not any(part in IGNORED_PARTS for part in Path(s).parts)]
    if stray:
        problems.append(
            f"unexpected code file(s) {', '.join(stray)}: only the remote-code modules auto_map needs are "
            "published (re-export the folder with `llava-next-video export`)"
        )


__all__ = [
    "FileEntry",
    "HubFolderError",
    "count_parameters",
    "list_files",
    "safetensors_header",
]
