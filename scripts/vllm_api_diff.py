"""Compare, between two vLLM source trees, every name this package imports from ``vllm``.

For each ``from vllm.x import Name`` in ``src/llava_next_video_hf``: is ``Name`` still defined in
the other tree, and with the same signature (functions) or the same bases and method signatures
(classes)? A static check for widening the ``vllm`` range before a new version can be run.

Usage: ``python scripts/vllm_api_diff.py OLD_SITE_PACKAGES NEW_SITE_PACKAGES`` where each folder
holds a ``vllm/`` package (an installed one, or a wheel unzipped). Exit 1 when anything differs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "llava_next_video_hf"


def imported_names(src: Path = SRC) -> set[tuple[str, str]]:
    """``(module, name)`` for every ``from vllm... import name`` in the package."""
    found = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vllm":
                found.update((node.module, alias.name) for alias in node.names)
    return found


def describe(root: Path, module: str, name: str) -> tuple | None:
    """What ``module.name`` is in the tree at ``root`` (signature-level), None when it is gone."""
    base = root / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name == name:
                methods = {
                    m.name: ast.unparse(m.args)
                    for m in node.body
                    if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)
                }
                return ("class", tuple(ast.unparse(b) for b in node.bases), tuple(sorted(methods.items())))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                return ("def", ast.unparse(node.args))
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    return ("variable",)
            if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
                return ("re-exported from", node.module)
        return None
    return ("module",) if (base / name).with_suffix(".py").exists() or (base / name).is_dir() else None


def main(argv: list[str]) -> int:
    """Print one line per imported name; exit 1 when one is missing or changed."""
    old, new = Path(argv[1]), Path(argv[2])
    bad = 0
    for module, name in sorted(imported_names()):
        before, after = describe(old, module, name), describe(new, module, name)
        status = "same" if before == after else ("MISSING" if after is None else "CHANGED")
        bad += status != "same"
        print(f"{status:8} {module}.{name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
