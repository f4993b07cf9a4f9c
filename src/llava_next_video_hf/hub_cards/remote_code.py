"""Remote code for Hub exports, generated from the package's own modules at export time.

A folder exported with remote code loads on a machine *without* this package through
``AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)`` and
``AutoProcessor.from_pretrained(folder, trust_remote_code=True)``. The code transformers runs there is
the package's ``configuration``/``modeling``/``processing``/``rope``/``errors`` modules, copied
unchanged except for mechanical import rewrites ([`rewrite_module`]), each with a header saying so:

* sibling imports point to the shipped file names (``from .errors import X`` becomes
  ``from .errors_llava_next_video_anyres import X``), so the names cannot clash with other remote code;
* ``from . import rope`` (which transformers' remote-code loader does not see: its regex only knows
  ``from .name import ...``) gets a second line ``from .rope_... import __name__ as ...`` so that the
  loader copies ``rope_llava_next_video_anyres.py`` next to the module that needs it;
* a function-level import of a module that is not shipped (``convert``, for llava-hf configs) imports
  it from the installed package inside ``try`` and otherwise says that feature needs the plugin.

Video decoding is not shipped (``video_io`` needs PyAV and can fetch URLs). The generated
``video_io_llava_next_video_anyres.py`` holds ``video_io``'s frame-sampling functions (copied from its
source) and a ``load_video`` that decodes paths/URLs/bytes only where ``llava-next-video-hf`` is
installed, otherwise raising a ``VideoLoadError`` that says how to pass frames. So the exported
processor takes decoded frames; the remote code does no I/O, no network and starts no process, and
needs nothing beyond torch, transformers (with its huggingface_hub), numpy and Pillow.

Because the files are regenerated on every export there is no second copy to keep in sync by hand.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from ..errors import LlavaNextVideoError

SUFFIX = "llava_next_video_anyres"
COPIED_MODULES = (
    "configuration",
    "layout",
    "modeling",
    "image_processing",
    "video_inputs",
    "video_processing",
    "tokenization",
    "processing",
    "rope",
    "errors",
)
SHIM_MODULES = ("video_io",)
# top-level packages the remote code may import (the standard library aside)
ALLOWED_PACKAGES = frozenset({"torch", "transformers", "huggingface_hub", "numpy", "PIL"})
# standard-library modules that would give the remote code network or process powers
FORBIDDEN_STDLIB = frozenset(
    {"subprocess", "socket", "urllib", "http", "ftplib", "smtplib", "multiprocessing", "ctypes", "asyncio"}
)

CONFIG_AUTO_MAP = {
    "AutoConfig": f"configuration_{SUFFIX}.LlavaNextVideoAnyResConfig",
    "AutoModel": f"modeling_{SUFFIX}.LlavaNextVideoAnyResModel",
    "AutoModelForImageTextToText": f"modeling_{SUFFIX}.LlavaNextVideoAnyResForConditionalGeneration",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": f"processing_{SUFFIX}.LlavaNextVideoAnyResProcessor"}
IMAGE_PROCESSOR_AUTO_MAP = {
    "AutoImageProcessor": f"image_processing_{SUFFIX}.LlavaNextVideoAnyResImageProcessor"
}
VIDEO_PROCESSOR_AUTO_MAP = {
    "AutoVideoProcessor": f"video_processing_{SUFFIX}.LlavaNextVideoAnyResVideoProcessor"
}

_PACKAGE_DIR = Path(__file__).resolve().parent.parent

_VIDEO_IO_DOC = '''"""Frame sampling and (optional) video decoding for the Hub export of LLaVA-NeXT-Video (AnyRes).

``sample_indices`` and its helpers are copied from the package's ``video_io/sampling.py`` (the original sampling
rules: ``linspace`` including the last frame, or fps under a frame budget). The exported processor
takes decoded frames everywhere: (T, H, W, 3) uint8 arrays or tensors, or lists of PIL images.
Encoded videos (paths, URLs, bytes, file objects) are decoded only where the ``llava-next-video-hf``
package is installed (its PyAV-based ``video_io.load_video``); without it ``load_video`` raises an
error that says how to pass frames instead, so this remote code never opens files or URLs itself
and does not need PyAV.
"""
'''

_LOAD_VIDEO = '''

def load_video(source: Any, **kwargs: Any) -> Any:
    """Decode ``source`` with ``llava_next_video_hf.video_io.load_video`` when the package is installed."""
    try:
        from llava_next_video_hf.video_io import load_video as package_load_video
    except ImportError as error:
        raise VideoLoadError(
            f"cannot decode a video given as {type(source).__name__}: this model's remote code takes decoded "
            "frames. Pass a (T, H, W, 3) uint8 array (decode with PyAV/OpenCV/decord and keep frames "
            "numpy.linspace(0, total_frames - 1, num_frames, dtype=int)), or install the plugin "
            "(`pip install llava-next-video-hf`) to decode paths, URLs and bytes"
        ) from error
    return package_load_video(source, **kwargs)
'''
# what the exported processor uses from video_io, copied with everything they call from the file holding them
VIDEO_IO_FUNCTIONS = ("sample_indices",)
VIDEO_IO_SAMPLING = Path("video_io") / "sampling.py"


class RemoteCodeError(LlavaNextVideoError):
    """The package's modules cannot be turned into self-contained remote code (an unshippable import)."""


def remote_module_name(name: str) -> str:
    """File stem under which the package module ``name`` ships (``modeling`` -> ``modeling_llava_next_video_anyres``)."""
    return f"{name}_{SUFFIX}"


def _header(source: str, note: str = "") -> str:
    from .. import __version__

    note = note or f"Only sibling imports were rewritten to the shipped names (*_{SUFFIX}.py)."
    return (
        f"# Generated by llava_next_video_hf.hub_cards (llava-next-video-hf {__version__})\n"
        f"# from llava_next_video_hf/{source}. {note}\n"
        "# Do not edit: `llava-next-video export` regenerates it.\n"
    )


def _shipped(name: str | None, where: str) -> str:
    if name not in COPIED_MODULES + SHIM_MODULES:
        raise RemoteCodeError(
            f"{where} imports the sibling module {name!r}, which the Hub export does not ship "
            f"(shipped: {', '.join(COPIED_MODULES + SHIM_MODULES)}); remote code may import only "
            "torch/transformers/numpy/PIL and these siblings"
        )
    return remote_module_name(name)


def _plugin_only_import(node: ast.ImportFrom, filename: str, indent: str) -> str:
    """A function-level import of a sibling the export does not ship: import it from the installed
    package instead, inside ``try`` (which transformers' import scan skips), with a clear error."""
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    package = f"llava_next_video_hf.{node.module}" if node.module else "llava_next_video_hf"
    source = f"from {package} import {names}"
    where = node.module or names
    message = (
        f"{filename}: this feature needs the llava-next-video-hf package (its {where!r} module is not "
        "part of the remote code): pip install llava-next-video-hf"
    )
    return (
        f"{indent}try:  # plugin-only: llava_next_video_hf/{where}.py is not shipped as remote code\n"
        f"{indent}    {source}\n"
        f"{indent}except ImportError as _plugin_import_error:\n"
        f"{indent}    raise ImportError({message!r}) from _plugin_import_error\n"
    )


def _rewrite_import(node: ast.ImportFrom, lines: list[str], filename: str, top_level: bool) -> str:
    """The replacement text of one relative import (see [`rewrite_module`])."""
    indent = " " * node.col_offset
    wanted = [node.module] if node.module else [a.name for a in node.names]
    if not top_level and any(name not in COPIED_MODULES + SHIM_MODULES for name in wanted):
        return _plugin_only_import(node, filename, indent)
    if node.module is not None:
        new = ast.ImportFrom(module=_shipped(node.module, filename), names=node.names, level=1)
        trailing = lines[(node.end_lineno or node.lineno) - 1][node.end_col_offset or 0 :].rstrip("\n")
        return indent + ast.unparse(new) + trailing + "\n"
    text = ""  # from . import rope  ->  bind the renamed module, and let transformers' loader see it
    for alias in node.names:
        target, bound = _shipped(alias.name, filename), alias.asname or alias.name
        text += f"{indent}from . import {target} as {bound}\n"
        text += f"{indent}from .{target} import __name__ as _{bound}_module_name  # ships {target}.py\n"
    return text


def rewrite_module(source: str, filename: str) -> str:
    """The remote-code version of one package module: its source with sibling imports rewritten.

    * ``from .errors import X`` -> ``from .errors_llava_next_video_anyres import X`` (shipped siblings);
    * ``from . import rope`` -> the renamed module bound to ``rope``, plus a ``from .rope_... import``
      line so that transformers' loader (which only sees ``from .name import``) ships the file;
    * an import *inside a function* of a sibling that is not shipped (e.g. ``convert``) -> the same
      import from the installed package, inside ``try``, raising an ``ImportError`` that says the
      feature needs ``llava-next-video-hf``. Such code paths are plugin-only features.

    Args:
        source: the module's source text.
        filename: its file name, for the header and error messages (``"modeling.py"``).

    Raises:
        RemoteCodeError: a module-level import of a sibling that is not shipped, or a relative import
            from a parent package.
    """
    tree = ast.parse(source, filename=filename)
    lines = source.splitlines(keepends=True)
    top_level = {id(n) for n in tree.body}
    edits: list[tuple[int, int, str]] = []  # (first line, last line) 1-based inclusive -> replacement
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        if node.level > 1:
            raise RemoteCodeError(
                f"{filename}:{node.lineno}: parent-package imports cannot ship as remote code"
            )
        text = _rewrite_import(node, lines, filename, id(node) in top_level)
        edits.append((node.lineno, node.end_lineno or node.lineno, text))
    for first, last, text in sorted(edits, reverse=True):
        lines[first - 1 : last] = [text]
    return _header(filename) + "".join(lines)


def _top_level_names(tree: ast.Module) -> dict[str, ast.stmt]:
    """Module-level functions, classes and simple assignments by name."""
    out: dict[str, ast.stmt] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update({t.id: node for t in targets if isinstance(t, ast.Name)})
    return out


def _used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def extract_functions(source: str, names: tuple[str, ...], filename: str) -> str:
    """The definitions ``names`` of a module, with every module-level definition and import they use.

    Definitions keep their source order and text (comments included); imports are re-emitted keeping
    only the bound names that are used (sibling imports renamed like [`rewrite_module`] does).
    """
    tree = ast.parse(source, filename=filename)
    defs = _top_level_names(tree)
    wanted, todo = set(), list(names)
    while todo:  # transitive closure over module-level names
        name = todo.pop()
        if name in wanted or name not in defs:
            continue
        wanted.add(name)
        todo.extend(_used_names(defs[name]) - wanted)
    missing = set(names) - wanted
    if missing:
        raise RemoteCodeError(f"{filename} has no module-level {sorted(missing)}")
    nodes = [n for n in tree.body if n in {defs[w] for w in wanted}]
    used = set().union(*(_used_names(n) for n in nodes)) | {"Any"}
    imports = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            kept = [a for a in node.names if (a.asname or a.name.split(".")[0]) in used]
            if kept:
                imports.append(ast.unparse(ast.Import(names=kept)))
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            kept = [a for a in node.names if (a.asname or a.name) in used]
            if kept:
                module = _shipped(node.module, filename) if node.level else node.module
                # the shipped files sit side by side: ``from ..errors`` (a subpackage's) becomes ``from .errors_...``
                level = min(node.level, 1)
                imports.append(ast.unparse(ast.ImportFrom(module=module, names=kept, level=level)))
    body = "\n\n\n".join(ast.get_source_segment(source, n, padded=False) or "" for n in nodes)
    return "from __future__ import annotations\n\n" + "\n".join(imports) + "\n\n\n" + body + "\n"


def _video_io_module() -> str:
    """The ``video_io`` the remote code ships: the sampling functions of the package's
    ``video_io/sampling.py`` (copied) plus a ``load_video`` that decodes only through the installed package."""
    source = (_PACKAGE_DIR / VIDEO_IO_SAMPLING).read_text(encoding="utf-8")
    code = extract_functions(source, VIDEO_IO_FUNCTIONS, VIDEO_IO_SAMPLING.as_posix())
    header = _header(
        VIDEO_IO_SAMPLING.as_posix(),
        f"Only {', '.join(VIDEO_IO_FUNCTIONS)} and what it calls\n# were copied; load_video decodes only "
        "through the installed package.",
    )
    return header + _VIDEO_IO_DOC + "\n" + code + "\n" + _LOAD_VIDEO


def generate_remote_code() -> dict[str, str]:
    """File name -> text of every remote-code module, generated from the installed package's sources."""
    files = {}
    for name in COPIED_MODULES:
        source = (_PACKAGE_DIR / f"{name}.py").read_text(encoding="utf-8")
        files[f"{remote_module_name(name)}.py"] = rewrite_module(source, f"{name}.py")
    files[f"{remote_module_name('video_io')}.py"] = _video_io_module()
    for filename, text in files.items():
        check_imports(text, filename)
    return files


def check_imports(text: str, filename: str) -> None:
    """Refuse remote code that imports anything beyond the standard library and the allowed packages.

    Uses transformers' own import scan (the one ``trust_remote_code`` loading runs), which skips
    imports under ``try:`` (optional ones) and ``if is_..._available()``. Network/process modules of the
    standard library are refused as well.
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
    """Write the generated modules into ``folder``; returns their file names."""
    folder = Path(folder)
    files = generate_remote_code()
    for filename, text in files.items():
        (folder / filename).write_text(text, encoding="utf-8")
    return sorted(files)


__all__ = [
    "CONFIG_AUTO_MAP",
    "IMAGE_PROCESSOR_AUTO_MAP",
    "PROCESSOR_AUTO_MAP",
    "RemoteCodeError",
    "VIDEO_PROCESSOR_AUTO_MAP",
    "generate_remote_code",
    "remote_module_name",
    "rewrite_module",
    "write_remote_code",
]
