"""What a Hub-ready folder must hold, checked without the network (before any upload).

[`check_folder`] returns the files that would be uploaded with their sizes, or raises
[`HubFolderError`] listing *every* problem found: missing config/weights/shards/processor/tokenizer
files, unreadable safetensors headers, pickled weights, unexpected code files, ``auto_map`` entries
that point to missing modules or classes, and a README.md whose metadata fails the card's checks.
It sits above both ``folder`` (the files) and ``card`` (the model card), which do not import it.
"""

from __future__ import annotations

from pathlib import Path

from .card import card_problems
from .folder import (
    MODEL_TYPE,
    PICKLE_SUFFIXES,
    PROCESSOR_FILES,
    TOKENIZER_MODEL_FILES,
    FileEntry,
    HubFolderError,
    check_code,
    list_files,
    read_json,
    safetensors_header,
    weight_files,
)


def check_folder(folder: str | Path) -> list[FileEntry]:
    """Check that ``folder`` is a complete, loadable, publishable checkpoint of this format.

    Returns:
        The files an upload would send, sorted by path.

    Raises:
        HubFolderError: listing every problem found (nothing is uploaded when this raises).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise HubFolderError(f"{folder} is not a folder")
    problems: list[str] = []
    config = read_json(folder / "config.json", problems) if (folder / "config.json").is_file() else None
    if config is None and not (folder / "config.json").is_file():
        problems.append("config.json is missing")
    elif config is not None and config.get("model_type") != MODEL_TYPE:
        problems.append(
            f"config.json: model_type is {config.get('model_type')!r}, expected {MODEL_TYPE!r} "
            "(convert the checkpoint first: `llava-next-video convert`)"
        )
    for path in weight_files(folder, problems):
        try:
            safetensors_header(path)
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"{path.name}: not a readable safetensors file ({error})")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        problems.append(f"pickle file(s) {', '.join(pickles)}: only safetensors are published")
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        problems.append(f"no processor config: expected {' or '.join(PROCESSOR_FILES)}")
    if not (folder / "tokenizer_config.json").is_file():
        problems.append("tokenizer_config.json is missing")
    if not any((folder / name).is_file() for name in TOKENIZER_MODEL_FILES):
        problems.append(f"no tokenizer model: expected one of {', '.join(TOKENIZER_MODEL_FILES)}")
    check_code(folder, problems)
    readme = folder / "README.md"
    if not readme.is_file():
        problems.append("README.md (the model card) is missing: `llava-next-video export` writes one")
    else:
        problems.extend(f"README.md: {p}" for p in card_problems(readme.read_text(encoding="utf-8")))
    problems = list(dict.fromkeys(problems))
    if problems:
        raise HubFolderError(
            f"{folder} is not ready for the Hub ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return list_files(folder)


__all__ = ["check_folder"]
