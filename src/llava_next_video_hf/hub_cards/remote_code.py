"""Remote code for Hub exports: the model core's own files, shipped by transformers' own machinery.

A folder exported with remote code loads on a machine *without* this package through
``AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)`` and
``AutoProcessor.from_pretrained(folder, trust_remote_code=True)``.

The model core (docs/ARCHITECTURE.md) is self-contained: ``configuration``, ``modeling``,
``processing``, ``image_processing``, ``video_processing`` and what they import (``rope``,
``layout``, ``video_inputs``, ``tokenization``, ``frame_sampling``, ``limits``, ``errors``) import
only each other (``from .x import y``), transformers, torch, numpy, PIL and the standard library.
So transformers' ``custom_object_save`` — what ``save_pretrained`` runs for a class registered with
``register_for_auto_class`` — copies the files unchanged with every sibling they import, and the
``auto_map`` entries below point at the classes in them. It is called directly here, per class, so
an export neither loads the weights nor registers the package's classes globally.

Video decoding (``video_io``, PyAV, URLs) is not part of the core: ``video_inputs.decode_video`` uses
the installed package when there is one and otherwise says how to pass decoded frames, so the remote
code opens no files or URLs itself and needs no PyAV. [`check_imports`] refuses a core that would
import anything else (transformers' own import scan, the one ``trust_remote_code`` loading runs).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ..errors import LlavaNextVideoError

# top-level packages the remote code may import (the standard library aside)
ALLOWED_PACKAGES = frozenset({"torch", "transformers", "huggingface_hub", "numpy", "PIL"})
# standard-library modules that would give the remote code network or process powers
FORBIDDEN_STDLIB = frozenset(
    {"subprocess", "socket", "urllib", "http", "ftplib", "smtplib", "multiprocessing", "ctypes", "asyncio"}
)

# auto_map entries ("<module>.<class>", modules of this package), one dict per config file that holds them
CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration.LlavaNextVideoAnyResConfig",
    "AutoModel": "modeling.LlavaNextVideoAnyResModel",
    "AutoModelForImageTextToText": "modeling.LlavaNextVideoAnyResForConditionalGeneration",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing.LlavaNextVideoAnyResProcessor"}
IMAGE_PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_processing.LlavaNextVideoAnyResImageProcessor"}
VIDEO_PROCESSOR_AUTO_MAP = {"AutoVideoProcessor": "video_processing.LlavaNextVideoAnyResVideoProcessor"}
AUTO_MAPS = (CONFIG_AUTO_MAP, PROCESSOR_AUTO_MAP, IMAGE_PROCESSOR_AUTO_MAP, VIDEO_PROCESSOR_AUTO_MAP)


class RemoteCodeError(LlavaNextVideoError):
    """The model core would import something remote code may not (a package beyond the allowed ones)."""


def remote_classes() -> list[type]:
    """The classes every ``auto_map`` entry names, imported from this package."""
    classes = []
    for auto_map in AUTO_MAPS:
        for entry in auto_map.values():
            module, name = entry.rsplit(".", 1)
            classes.append(getattr(importlib.import_module(f"llava_next_video_hf.{module}"), name))
    return classes


def generate_remote_code() -> dict[str, str]:
    """File name -> text of the remote code: the files of the classes' modules and every sibling they
    import, as transformers' ``custom_object_save`` copies them (the package's own source)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    files = {}
    for cls in remote_classes():
        module_file = Path(sys.modules[cls.__module__].__file__)
        for path in [module_file, *map(Path, get_relative_import_files(module_file))]:
            files[path.name] = path.read_text(encoding="utf-8")
    for filename, text in files.items():
        check_imports(text, filename)
    return dict(sorted(files.items()))


def check_imports(text: str, filename: str) -> None:
    """Refuse remote code that imports anything beyond the standard library and the allowed packages.

    Uses transformers' own import scan (the one ``trust_remote_code`` loading runs), which skips
    imports under ``try:`` (optional ones, as ``decode_video``'s) and ``if is_..._available()``.
    Network/process modules of the standard library are refused as well.
    """
    import tempfile

    from transformers.dynamic_module_utils import get_imports

    with tempfile.TemporaryDirectory() as tmp:  # transformers' scanner reads a file
        path = Path(tmp) / filename
        path.write_text(text, encoding="utf-8")
        imported = get_imports(path)
    bad = [
        name
        for name in imported
        if name in FORBIDDEN_STDLIB or (name not in ALLOWED_PACKAGES and name not in sys.stdlib_module_names)
    ]
    if bad:
        raise RemoteCodeError(
            f"{filename} would import {bad} at load time; remote code may import only the standard library "
            f"(without {sorted(FORBIDDEN_STDLIB)}) and {sorted(ALLOWED_PACKAGES)}"
        )


def write_remote_code(folder: str | Path) -> list[str]:
    """Copy the remote code into ``folder`` with transformers' ``custom_object_save``; returns the file names."""
    from transformers.dynamic_module_utils import custom_object_save

    generate_remote_code()  # checks the imports before anything is written
    written: set[str] = set()
    for cls in remote_classes():
        written.update(Path(p).name for p in custom_object_save(cls, folder))
    return sorted(written)


__all__ = [
    "AUTO_MAPS",
    "CONFIG_AUTO_MAP",
    "IMAGE_PROCESSOR_AUTO_MAP",
    "PROCESSOR_AUTO_MAP",
    "RemoteCodeError",
    "VIDEO_PROCESSOR_AUTO_MAP",
    "check_imports",
    "generate_remote_code",
    "remote_classes",
    "write_remote_code",
]
