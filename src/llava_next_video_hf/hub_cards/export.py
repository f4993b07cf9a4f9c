"""``export_for_hub``: a checkpoint folder -> a Hub-ready folder (card, remote code, ``auto_map``).

The export copies the checkpoint's files byte for byte (safetensors weights and index, config,
generation config, processor and tokenizer files, chat template, LICENSE), never code or pickles from
the source folder, then (with ``remote_code=True``) copies the package's model core as remote code
(transformers' ``custom_object_save``, see [`remote_code`](remote_code.py)) and writes the ``auto_map``
entries that point to it:

* ``config.json``: ``AutoConfig``, ``AutoModel``, ``AutoModelForImageTextToText``;
* ``processor_config.json``: ``AutoProcessor`` at the top level, ``AutoImageProcessor`` in its
  ``image_processor`` block and ``AutoVideoProcessor`` in its ``video_processor`` block (transformers
  loads each sub-processor through its own Auto class, which reads those nested blocks);
* ``tokenizer_config.json`` (and the stand-alone pre-processor configs, when present): ``AutoProcessor``,
  as ``ProcessorMixin.save_pretrained`` itself writes for custom processors.

Finally it writes the model card (README.md) and checks the result with [`check_folder`]. Everything is
written to a temporary sibling folder first and moved into place only when complete and valid.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .. import output_dir
from . import remote_code as _remote
from .check import check_folder
from .folder import MODEL_TYPE, PICKLE_SUFFIXES, HubFolderError

# files of a checkpoint that are carried into the export, by exact name or prefix/suffix
COPIED_NAMES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "processor_config.json",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "tokenizer.model",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "chat_template.json",
    }
)
AUTO_PROCESSOR_FILES = ("tokenizer_config.json", "preprocessor_config.json", "video_preprocessor_config.json")


def _is_copied(rel: Path) -> bool:
    name = rel.name
    if len(rel.parts) == 2 and rel.parts[0] == "chat_templates" and name.endswith(".jinja"):
        return True
    if len(rel.parts) != 1:
        return False
    if name in COPIED_NAMES or name.upper().startswith(("LICENSE", "NOTICE")):
        return True
    return name.startswith("model-") and name.endswith(".safetensors")  # shards


def plan_copy(src: Path) -> tuple[list[Path], list[str]]:
    """(files to copy, relative paths left out) of a checkpoint folder; code and pickles are left out."""
    copied: list[Path] = []
    skipped: list[str] = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if _is_copied(rel):
            copied.append(path)
        else:
            skipped.append(rel.as_posix())
    return copied, skipped


def _edit_json(path: Path, edit: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _set_auto_map(data: dict, entries: dict[str, str] | None) -> None:
    """Replace the ``auto_map`` of one config dict (``None``: remove it)."""
    data.pop("auto_map", None)
    if entries:
        data["auto_map"] = dict(entries)


def write_auto_maps(folder: Path, remote: bool) -> None:
    """Point the folder's configs at the remote-code modules (``remote=False``: strip every ``auto_map``)."""

    def on(entries: dict[str, str]) -> dict[str, str] | None:
        return entries if remote else None

    _edit_json(folder / "config.json", lambda d: _set_auto_map(d, on(_remote.CONFIG_AUTO_MAP)))

    def processor(d: dict) -> None:
        _set_auto_map(d, on(_remote.PROCESSOR_AUTO_MAP))
        if isinstance(d.get("image_processor"), dict):
            _set_auto_map(d["image_processor"], on(_remote.IMAGE_PROCESSOR_AUTO_MAP))
        if isinstance(d.get("video_processor"), dict):
            _set_auto_map(d["video_processor"], on(_remote.VIDEO_PROCESSOR_AUTO_MAP))

    if (folder / "processor_config.json").is_file():
        _edit_json(folder / "processor_config.json", processor)
    for name in AUTO_PROCESSOR_FILES:
        if (folder / name).is_file():
            extra = {}
            if name == "preprocessor_config.json":
                extra = _remote.IMAGE_PROCESSOR_AUTO_MAP
            elif name == "video_preprocessor_config.json":
                extra = _remote.VIDEO_PROCESSOR_AUTO_MAP
            entries = {**_remote.PROCESSOR_AUTO_MAP, **extra}
            _edit_json(folder / name, lambda d, e=entries: _set_auto_map(d, on(e)))


def _check_source(src: Path) -> None:
    if not src.is_dir():
        raise HubFolderError(f"source checkpoint {src} is not a folder")
    config = src / "config.json"
    if not config.is_file():
        raise HubFolderError(f"{src} has no config.json: not a checkpoint folder")
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    if model_type != MODEL_TYPE:
        raise HubFolderError(
            f"{src} holds a {model_type!r} checkpoint; the export takes {MODEL_TYPE!r} checkpoints "
            "(convert it first: `llava-next-video convert`)"
        )
    if not (src / "model.safetensors").is_file() and not (src / "model.safetensors.index.json").is_file():
        pickles = sorted(p.name for p in src.iterdir() if p.suffix in PICKLE_SUFFIXES)
        found = f" (found {', '.join(pickles)})" if pickles else ""
        raise HubFolderError(
            f"{src} has no safetensors weights{found}; the export ships safetensors only: "
            "re-save with `model.save_pretrained(folder)` first"
        )


def export_for_hub(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    remote_code: bool = True,
    *,
    overwrite: bool = False,
    **facts: Any,
) -> Path:
    """Write a Hub-ready copy of the checkpoint ``src`` to ``dst``.

    Args:
        src: a checkpoint folder of this format (``model_type`` ``llava_next_video_anyres``).
        dst: the folder to create (must not exist, or be empty, unless ``overwrite``); it must not
            overlap ``src``, and ``overwrite`` replaces only a checkpoint folder (never a plain file
            or any other folder).
        remote_code: ship the model core as remote code with its ``auto_map`` entries, so that machines
            without this package load the folder with ``trust_remote_code=True``.
        overwrite: replace an existing non-empty ``dst`` that is a checkpoint folder.
        facts: model-card facts for [`build_model_card`] (``repo_id``, ``base_model``, ``license``,
            ``datasets``, ``eval_results``, ...).

    Returns:
        ``dst``.

    Raises:
        HubFolderError: ``src`` is not a checkpoint of this format, or the export fails the checks
            (nothing is left at ``dst`` then).
    """
    from .card import build_model_card

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    _check_source(src)
    output_dir.check_no_overlap(src, dst, HubFolderError)
    output_dir.check_destination(dst, overwrite, HubFolderError, empty_ok=True)
    with output_dir.staged_output(dst, overwrite, HubFolderError) as tmp:
        copied, _ = plan_copy(src)
        for path in copied:
            target = tmp / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        if remote_code:
            _remote.write_remote_code(tmp)
        write_auto_maps(tmp, remote_code)
        build_model_card(tmp, **facts).save(tmp / "README.md")
        check_folder(tmp)
    return dst.absolute()


__all__ = ["export_for_hub", "plan_copy", "write_auto_maps"]
