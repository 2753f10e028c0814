"""Tests for the shape of the pyro_vae.data package: its public names, the old import path, and
that it stays a leaf without import cycles between its modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pyro_vae.data

PUBLIC = {
    "check_data",
    "DATASETS",
    "IDX_FILES",
    "ImageData",
    "DatasetNotFoundError",
    "CorruptDataError",
    "DatasetWarning",
    "load_dataset",
    "read_idx",
    "binarize",
    "binarize_static",
    "as_tensor",
    "default_cache_dir",
}
PACKAGE = Path(pyro_vae.data.__file__).parent


def test_public_names() -> None:
    assert set(pyro_vae.data.__all__) == PUBLIC
    assert len(pyro_vae.data.__all__) == len(PUBLIC)
    for name in PUBLIC:
        assert getattr(pyro_vae.data, name) is not None


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports, absolute (``pyro_vae.data.idx``, ``numpy``, ...)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(node.module or "")
                continue
            base = "pyro_vae.data" if node.level == 1 else "pyro_vae"
            if node.module:
                found.add(f"{base}.{node.module}")
            else:  # from . import a, b
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_package_is_a_leaf_without_cycles() -> None:
    graph = {f"pyro_vae.data.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py")}
    allowed_outside = {"pyro_vae._io", "pyro_vae._registry"}
    for module, imports in graph.items():
        ours = {m for m in imports if m == "pyro_vae" or m.startswith("pyro_vae.")}
        outside = {m for m in ours if not m.startswith("pyro_vae.data")}
        assert outside <= allowed_outside, (module, outside)
    # Depth-first search over the modules of the package (the package itself sits on top).
    edges = {
        m: {i for i in imports if i in graph and i != "pyro_vae.data.__init__"}
        for m, imports in graph.items()
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join(path + (module,))}"
        if module in done:
            return
        for target in edges[module]:
            visit(target, path + (module,))
        done.add(module)

    for module in edges:
        visit(module, ())
