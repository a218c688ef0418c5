"""The shape the code keeps: no function in ``code/`` or ``scripts/`` over 60 lines or with
more than 10 parameters, and checkpoints written and read by one module."""
from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CODE, REPO

MAX_LINES = 60
MAX_PARAMETERS = 10
#: the one module that calls torch.save / torch.load on checkpoints
CHECKPOINT_MODULE = CODE / "cogrnet" / "checkpoints.py"


def sources() -> list[Path]:
    paths = sorted(CODE.rglob("*.py")) + sorted((REPO / "scripts").rglob("*.py"))
    paths = [p for p in paths if "egg-info" not in str(p)]
    assert len(paths) > 50, "too few source files found"
    return paths


def parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Parameters of ``fn``, ``*args`` and ``**kwargs`` each counting one, without the
    ``self`` / ``cls`` of a method."""
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    count = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    return count - bool(a.args and a.args[0].arg in ("self", "cls"))


def oversized(source: str, where: str) -> list[str]:
    """``where:line name: N lines / N parameters`` for each function over the limits."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            params = parameter_count(node)
            if lines > MAX_LINES or params > MAX_PARAMETERS:
                found.append(f"{where}:{node.lineno} {node.name}: {lines} lines, "
                             f"{params} parameters")
    return found


def test_the_check_finds_a_long_function_and_a_wide_one():
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    wide = ", ".join(f"a{i}" for i in range(MAX_PARAMETERS + 1))
    source = f"def long():\n{long_body}\n\ndef wide({wide}):\n    pass\n\n" \
             "class C:\n    def ok(self, a, b, c, d, e, f, g, h, i, j):\n        pass\n"
    assert [s.split(" ")[1] for s in oversized(source, "x")] == ["long:", "wide:"]


def test_no_function_over_60_lines_or_10_parameters():
    found = [hit for p in sources()
             for hit in oversized(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not found, "\n".join(found)


def test_checkpoints_are_saved_and_loaded_in_one_module():
    calls = []
    for p in sources():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("save", "load")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                calls.append(p)
    assert calls and set(calls) == {CHECKPOINT_MODULE}, sorted(map(str, set(calls)))


def test_the_repository_tracks_no_symbolic_link():
    """A committed link points into the machine it was made on (``data/LA_half`` once pointed
    at a path outside the clone): in a user's clone it dangles and the README's own command
    that makes that folder fails on it."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    links = [line.split("\t", 1)[1] for line in listed if line.startswith("120000 ")]
    assert links == []
