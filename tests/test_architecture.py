"""The import rules of docs/ARCHITECTURE.md, checked on the source (AST, every import, lazy ones too):
each module sits in a layer and imports only its own layer or lower ones, and no modules import
each other in a circle. Known violations are listed here until they are fixed: a new violation fails,
and so does a listed one that no longer exists (remove it from the list)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = "llava_next_video_hf"
SRC = Path(__file__).resolve().parents[1] / "src" / PKG

#: layer of each module (lowest first); a module may import its own layer and the ones below
LAYERS: dict[int, tuple[str, ...]] = {
    0: (
        "errors",
        "visual_tokens",
        "rope",
        "limits",
        "frame_sampling",
        "video_io",
        "output_dir",
        "install_check",
        "chat_templates",
        "arg_types",
    ),
    1: ("configuration",),
    2: ("compat",),
    3: (
        "layout",
        "modeling",
        "image_processing",
        "video_inputs",
        "video_processing",
        "tokenization",
        "processing",
    ),
    4: (
        "modeling_patches",
        "vllm_plugin",
        "train",
        "evaluation",
        "serve",
        "testing",
        "_registration",
        "hf_engine",
    ),
    5: ("convert", "hub_cards", "batch"),
    6: ("cli", "inspection", "app", ""),  # "" is the package itself: a lazy facade over everything
}

#: (importer, imported) pairs that break the rules today; each names the planned fix
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CIRCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    """``llava_next_video_hf/hub_cards/card.py`` -> ``hub_cards.card`` (the package itself: "")."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SRC.rglob("*.py") if "assets" not in p.relative_to(SRC).parts}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports (module level or inside functions)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == PKG:
                target = node.module[len(PKG) + 1 :]
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PKG:
                    found.add(alias.name[len(PKG) + 1 :])
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer(name: str) -> int:
    for level, names in LAYERS.items():
        if name in names or any(name.startswith(n + ".") for n in names if n):
            return level
    raise AssertionError(f"module {name!r} has no layer in LAYERS (docs/ARCHITECTURE.md): place it")


def circles(edges: dict[str, set[str]]) -> set[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)


def test_the_checked_source_is_the_package():
    """The rules above hold vacuously for an empty or misplaced ``src/``: every name in ``LAYERS`` must be
    a module or package found there, with the model core's and the vLLM plugin's modules inside."""
    found = modules()
    placed = {n for names in LAYERS.values() for n in names}
    assert placed - set(found) == set(), "LAYERS names modules that are not in src/"
    core = {"configuration", "modeling", "processing", "tokenization", "video_processing", "image_processing"}
    assert core | {"vllm_plugin.model", "vllm_plugin.processing", "video_io.decoder"} <= set(found)
    assert len(found) >= 50, sorted(found)  # 62 modules when this was written
    assert sum(len(targets) for targets in graph().values()) >= 100  # their imports were read (184)


def test_no_module_imports_a_higher_layer():
    edges = graph()
    upward = {(a, b) for a, targets in edges.items() for b in targets if layer(b) > layer(a)}
    assert upward - KNOWN_UPWARD == set(), "imports from a higher layer (docs/ARCHITECTURE.md)"
    assert KNOWN_UPWARD - upward == set(), "fixed: remove these from KNOWN_UPWARD"


def test_no_import_circles():
    found = circles(graph())
    assert found - KNOWN_CIRCLES == set(), "modules importing each other in a circle"
    assert KNOWN_CIRCLES - found == set(), "fixed: remove these from KNOWN_CIRCLES"


def test_the_checker_sees_lazy_imports_and_circles(tmp_path):
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == {frozenset({"a", "b", "c"})}
    source = tmp_path / "card.py"
    source.write_text(
        "from .. import rope\nfrom ..errors import E\nimport llava_next_video_hf.video_io\n"
        "def f():\n    from .folder import g\n    from ..convert import h\n"
    )
    known = {"rope", "errors", "video_io", "hub_cards.folder", "convert"}
    assert imports("hub_cards.card", source, known) == known  # lazy ones included


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_vllm_workers_do_not_import_the_transformers_model():
    """The vLLM model shares the token layout (``layout``), not the transformers model's module."""
    edges = graph()
    for name in ("vllm_plugin", "vllm_plugin.model", "vllm_plugin.video_loader"):
        assert "modeling" not in reachable(edges, name), name


def defined_names(path: Path) -> set[str]:
    """Names a module defines at top level, plus its string constants (the keys of a lazy
    ``__getattr__`` table are strings)."""
    tree = ast.parse(path.read_text())
    names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_every_import_of_our_modules_resolves():
    """A relative import inside a function is only run when called: check every one names a module
    (or a name in a package) that exists, so moving a module into a subpackage cannot leave one behind."""
    mods = modules()
    broken = []
    for name, path in mods.items():
        package = [p for p in (name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]) if p]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            if target not in mods:
                broken.append((name, node.lineno, target))
            elif not node.module:  # `from . import x`: x is a module of that package or a name its
                defined = defined_names(mods[target])  # __init__ defines (or serves lazily)
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    if sub not in mods and alias.name not in defined:
                        broken.append((name, node.lineno, sub))
    assert not broken, broken
