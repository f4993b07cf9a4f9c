"""The rows of a batch job: read from a folder, a glob, a text file of paths/URLs, a JSONL/CSV/Parquet
manifest, or given in memory (a list, a pandas or ``datasets`` table, an iterator), then sharded.

A row is ``id``, ``video`` (path or URL), ``prompt`` and the other columns of its manifest row,
carried to the output record unchanged. Ids default to the video's path; duplicated ids are refused
before anything runs.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LlavaNextVideoError

#: file name endings taken as videos when the input is a folder (lower case)
VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".flv",
    ".wmv",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".3gp",
    ".ogv",
    ".gif",
)
#: manifest endings (anything else that is a file is a text file of paths/URLs, one per line)
MANIFEST_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
#: keys of an output record; a manifest column with one of these names would be overwritten
RESERVED_COLUMNS = frozenset(
    {"answer", "finish_reason", "frames", "prompt_tokens", "output_tokens", "seconds", "error", "worker"}
)


class BatchInputError(LlavaNextVideoError):
    """The job's input cannot be read (missing file, bad manifest, duplicate ids, ...)."""


@dataclass(frozen=True)
class Row:
    """One unit of work: answer ``prompt`` about ``video``; ``extra`` is carried to the output."""

    id: str
    video: str
    prompt: str
    extra: dict[str, Any] = field(default_factory=dict)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _from_folder(folder: Path) -> list[dict[str, Any]]:
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not found:
        raise BatchInputError(
            f"{folder}: no videos in this folder or below it (looked for {', '.join(VIDEO_EXTENSIONS)})"
        )
    return [{"video": str(p)} for p in found]


def _from_text(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append({"video": line if _is_url(line) or os.path.isabs(line) else str(path.parent / line)})
    return rows


def _from_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise BatchInputError(f"{path}:{n}: not a JSON object ({err.msg})") from None
            if not isinstance(obj, dict):
                raise BatchInputError(
                    f"{path}:{n}: each line must be a JSON object, got {type(obj).__name__}"
                )
            rows.append(obj)
    return rows


def _from_manifest(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _from_jsonl(path)
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = [dict(r) for r in csv.DictReader(f)]
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError as err:  # pragma: no cover - pyarrow comes with datasets/vllm
            raise BatchInputError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from err
        rows = pq.read_table(path).to_pylist()
    base = path.parent
    for n, row in enumerate(rows, 1):
        video = row.get("video")
        if not isinstance(video, str) or not video:
            raise BatchInputError(f"{path}: row {n} has no 'video' (a path or URL); columns: {sorted(row)}")
        if not _is_url(video) and not os.path.isabs(video):
            row["video"] = str(base / video)  # relative to the manifest
    return rows


def _from_path(text: str) -> list[dict[str, Any]]:
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if path.suffix.lower() in MANIFEST_EXTENSIONS:
            return _from_manifest(path)
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return [{"video": str(path)}]
        return _from_text(path)
    if glob.has_magic(text):
        found = sorted(p for p in glob.glob(os.path.expanduser(text), recursive=True) if os.path.isfile(p))
        if not found:
            raise BatchInputError(f"the pattern {text!r} matches no files")
        return [{"video": p} for p in found]
    raise BatchInputError(
        f"{text}: no such folder or file (INPUT is a folder, a glob, a text file of paths/URLs, "
        "or a .jsonl/.csv/.parquet manifest)"
    )


def _records_of(inputs: Any) -> list[dict[str, Any]]:
    if isinstance(inputs, str | os.PathLike):
        return _from_path(os.fspath(inputs))
    if hasattr(inputs, "to_dict") and hasattr(inputs, "columns"):  # pandas.DataFrame
        return list(inputs.to_dict(orient="records"))
    if hasattr(inputs, "to_list") and hasattr(inputs, "column_names"):  # datasets.Dataset
        return list(inputs.to_list())
    if isinstance(inputs, Iterable):
        out = []
        for item in inputs:
            if isinstance(item, str | os.PathLike):
                out.append({"video": os.fspath(item)})
            elif isinstance(item, Row):
                out.append({"id": item.id, "video": item.video, "prompt": item.prompt, **item.extra})
            elif isinstance(item, Mapping):
                out.append(dict(item))
            else:
                raise BatchInputError(
                    f"each input item must be a path/URL or a mapping with 'video', got {type(item).__name__}"
                )
        return out
    raise BatchInputError(f"cannot read rows from a {type(inputs).__name__}")


def read_rows(inputs: Any, prompt: str | None = None) -> list[Row]:
    """The job's rows, in input order.

    Args:
        inputs: a folder (searched recursively for :data:`VIDEO_EXTENSIONS`), a glob, a text file of
            paths/URLs (one per line, ``#`` comments), a ``.jsonl``/``.csv``/``.parquet`` manifest
            with ``video`` and optional ``id``/``prompt`` columns, or the same rows in memory (a list
            of paths or dicts, a pandas DataFrame, a ``datasets.Dataset``, an iterator).
        prompt: the prompt of rows without their own (captioning); a row's ``prompt`` wins.

    Raises:
        BatchInputError: unreadable input, a row without a video or a prompt, a column named like an
            output field, or two rows with the same id.
    """
    records = _records_of(inputs)
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for n, rec in enumerate(records, 1):
        video = rec.get("video")
        if not isinstance(video, str) or not video:
            raise BatchInputError(f"row {n} has no 'video' (a path or URL)")
        row_prompt = rec.get("prompt")
        if (
            row_prompt is None
            or row_prompt == ""
            or (isinstance(row_prompt, float) and row_prompt != row_prompt)
        ):
            row_prompt = prompt
        if not isinstance(row_prompt, str) or not row_prompt.strip():
            raise BatchInputError(
                f"row {n} ({video}) has no prompt: give --prompt for all rows or a 'prompt' column"
            )
        row_id = rec.get("id")  # empty in a CSV cell, NaN in a table: none given
        if row_id is None or row_id == "" or (isinstance(row_id, float) and row_id != row_id):
            row_id = video
        row_id = str(row_id)
        if row_id in seen:
            raise BatchInputError(
                f"duplicate id {row_id!r} (rows {seen[row_id]} and {n}); ids must be unique"
            )
        seen[row_id] = n
        extra = {k: v for k, v in rec.items() if k not in ("id", "video", "prompt")}
        clash = sorted(RESERVED_COLUMNS & extra.keys())
        if clash:
            raise BatchInputError(f"row {n}: column(s) {clash} would be overwritten by the output's fields")
        rows.append(Row(id=row_id, video=video, prompt=row_prompt, extra=_jsonable(extra)))
    if not rows:
        raise BatchInputError("the input has no rows")
    return rows


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    """Carried columns as JSON can hold them (numpy/pandas scalars to Python, others to str)."""
    out = {}
    for k, v in extra.items():
        if hasattr(v, "item") and callable(v.item):
            try:
                v = v.item()
            except (ValueError, TypeError):
                v = str(v)
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            v = str(v)
        out[str(k)] = v
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (``0 <= K < N``) as ``(K, N)``."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise BatchInputError(f"--shard must be K/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise BatchInputError(f"--shard K/N needs N >= 1 and 0 <= K < N, got {text!r}")
    return k, n


def shard_rows(rows: list[Row], shard: tuple[int, int] | None) -> list[Row]:
    """The rows of shard ``K`` of ``N``: every ``N``-th row starting at ``K`` (disjoint, union = all).

    The split is by position in the input, which is sorted for folders and globs, so every shard of
    the same input sees the same order.
    """
    if shard is None:
        return rows
    k, n = shard
    return rows[k::n]


__all__ = [
    "MANIFEST_EXTENSIONS",
    "RESERVED_COLUMNS",
    "VIDEO_EXTENSIONS",
    "BatchInputError",
    "Row",
    "parse_shard",
    "read_rows",
    "shard_rows",
]
