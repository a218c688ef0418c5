"""The library's layers point one way: a module of ``code/cogrnet`` imports only its own
layer and the layers below it (function-level and relative imports included), and nothing
puts folders on ``sys.path``. The order is the README's "Layout" section."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CODE, REPO

LIBRARY = CODE / "cogrnet"
#: lowest first; a module may import its own layer and the ones before it
LAYERS = ("base", "data", "annotation", "prepare", "networks", "inference", "methods",
          "evaluation", "training", "benchmark")
#: the modules directly in cogrnet/ (the base layer)
BASE = {"errors", "fileio", "presets", "train_config", "runtime", "parallel", "plotting", "cli",
        "overlap", "checkpoints"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CODE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a ``cogrnet`` module name; a ValueError for one no layer holds."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    if parts[1] in LAYERS:
        return parts[1]
    raise ValueError(f"{module}: in no layer (add it to LAYERS or BASE here and to the "
                     "README's Layout)")


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, cogrnet module)`` for every import in ``source``, at any depth (inside
    functions too); relative imports resolved against ``module``."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise ValueError(f"{module}:{node.lineno}: relative import above cogrnet")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if node.module:
                found.append((node.lineno, target))
            else:  # from .. import x: x may be a module
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return [(line, name) for line, name in found
            if name == "cogrnet" or name.startswith("cogrnet.")]


def upward_imports(source: str, module: str, is_package: bool) -> list[str]:
    """The imports of ``source`` that reach a higher layer than ``module``'s own."""
    own = LAYERS.index(layer_of(module))
    return [f"{module}:{line} imports {name} (layer {layer_of(name)} is above "
            f"{LAYERS[own]})"
            for line, name in imported_modules(source, module, is_package)
            if LAYERS.index(layer_of(name)) > own]


def library_modules() -> list[Path]:
    paths = sorted(LIBRARY.rglob("*.py"))
    assert len(paths) > 40, f"too few modules found under {LIBRARY}"
    return paths


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in library_modules():
        bad += upward_imports(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_every_module_has_a_layer():
    for path in library_modules():
        layer_of(module_name(path))


@pytest.mark.parametrize("source,module,package", [
    ("def f():\n    from ..training.trainer import Trainer\n", "cogrnet.data.dataset", False),
    ("from .. import evaluation\n", "cogrnet.inference.model", False),
    ("from ..evaluation import figures\n", "cogrnet.annotation", True),
    ("import cogrnet.training\n", "cogrnet.errors", False),
    ("class A:\n    def f(self):\n        from cogrnet.methods import ema\n",
     "cogrnet.inference.sliding_window", False),
])
def test_the_check_sees_upward_imports_at_any_depth(source, module, package):
    assert len(upward_imports(source, module, package)) == 1


def test_the_check_allows_downward_imports():
    source = ("from ..data.dataset import CaseStore\nfrom . import model\n"
              "def f():\n    from ..errors import DataError\n    import numpy\n")
    assert upward_imports(source, "cogrnet.inference.segment", False) == []


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """``module -> the library modules it imports`` (at any depth) for ``sources``
    (``module -> (source, is_package)``); an imported name is mapped to the module that
    holds it (``cogrnet.annotation.sparse.read_sparse_map`` -> ``cogrnet.annotation.sparse``)."""
    def owner(name: str) -> str | None:
        while name and name not in sources:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    return {m: {o for _, n in imported_modules(src, m, pkg) if (o := owner(n)) not in (None, m)}
            for m, (src, pkg) in sources.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a circle (strongly connected
    components of more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_between_library_modules():
    sources = {module_name(p): (p.read_text(), p.name == "__init__.py")
               for p in library_modules()}
    cycles = import_cycles(import_graph(sources))
    assert not cycles, "modules importing each other in a circle: " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle_inside_a_function():
    sources = {"cogrnet.annotation.dpa": ("def f():\n    from .sparse import g\n", False),
               "cogrnet.annotation.sparse": ("from .dpa import DPA\n", False)}
    assert import_cycles(import_graph(sources)) == [["cogrnet.annotation.dpa",
                                                     "cogrnet.annotation.sparse"]]


def test_no_sys_path_insert_in_code_or_scripts():
    hits = [f"{p.relative_to(REPO)}:{i}"
            for folder in (CODE, REPO / "scripts") for p in sorted(folder.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if "sys.path.insert" in line or "sys.path.append" in line]
    assert not hits, "sys.path is changed in: " + ", ".join(hits)


@pytest.mark.parametrize("script", ["code/utils/intensity_stats.py", "scripts/gpu_check.py"])
def test_a_script_without_the_install_says_so_in_one_line(script):
    # -S: no site-packages (so no editable install), -E: no PYTHONPATH
    res = subprocess.run([sys.executable, "-S", "-E", str(REPO / script), "--help"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 1
    assert res.stderr.strip() == ("cogrnet is not installed: run `make setup` or "
                                  "`pip install -e .`")
