"""A benchmark spec is checked before anything runs: a misspelt key, a value of the wrong
type, a row named twice, a comparison of a row the spec lacks, an argument that is no flag
of its script: each a one-line error naming the spec and the key, and nothing is run."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest

from conftest import CODE, REPO
from cogrnet.benchmark.spec import check_spec
from cogrnet.errors import ConfigError

SPEC = {"title": "t", "prefix": "b", "seeds": [1, 2], "headline": "teacher", "max_se": 0.01,
        "common": {"dataset": "phantom", "val_list": "val"},
        "registration": {"out_dir": "coarse", "args": {"dataset": "phantom", "labelnum": 2}},
        "test": {"split": "val", "stride_xy": 9},
        "rows": [{"name": "cog", "args": {"method": "cogrnet"}},
                 {"name": "sup", "args": {"method": "sup"}, "seeds": [1, 3]}],
        "comparisons": [{"a": "cog", "b": "sup", "target": 0.0}]}


def _set(path: str, value):
    """A copy of SPEC with the value at ``path`` (``a.b.0.c``) set (``...``: deleted)."""
    spec = copy.deepcopy(SPEC)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return spec


@pytest.mark.parametrize("path, value, message", [
    ("comparison", [], "unknown key(s) comparison (known: title"),
    ("max-se", 0.01, "unknown key(s) max-se"),
    ("prefix", ..., "'prefix' is required"),
    ("rows", [], "'rows' is empty"),
    ("rows.1.name", "cog", "rows[1]: name 'cog' twice"),
    ("rows.1.name", "a/b", "name 'a/b' not usable in a folder name"),
    ("rows.0.arg", {}, "rows[0]: unknown key(s) arg"),
    ("rows.0.seeds", [1, "2"], "row cog: 'seeds' must be a non-empty list of integers"),
    ("seeds", [1, 1], "'seeds' lists a seed twice"),
    ("headline", "teachers", "headline 'teachers' is not one of student, teacher"),
    ("max_se", "0.01", "'max_se' must be int or float or null, not \"0.01\""),
    ("max_se", 0, "max_se must be positive"),
    ("test_teacher", 1, "'test_teacher' must be bool, not 1"),
    ("checkpoint", "best", "checkpoint 'best' is not the name of a .pth file in the run folder"),
    ("checkpoint", "../x.pth", "checkpoint '../x.pth' is not the name of a .pth file"),
    ("max_se", float("nan"), "'max_se' must be a finite number, not nan"),
    ("comparisons.0.target", float("inf"), "'target' must be a finite number"),
    ("rows.1.seeds", [1], "comparisons[0]: row 'sup' plans one seed: its standard error is "
                          "unknown, so max_se can never be met"),
    ("test.ema", True, "test: 'ema' is set by benchmark.py itself"),
    ("rows.0.args.overwrite", True, "row cog: 'overwrite' is set by benchmark.py itself"),
    ("comparisons.0.target", "0.05", "comparisons[0]: 'target' must be int or float or null"),
    ("comparisons.0.b", "uamt", "comparisons[0] names row 'uamt', which the spec does not have"),
    ("comparisons.0.c", 1, "comparisons[0]: unknown key(s) c"),
    ("registration.args", ..., "registration: 'args' is required"),
    ("rows.0.args.lable_source", "coarse",
     "row cog: 'lable_source' is not a flag of code/train.py"),
    ("common.seed", 3, "common: 'seed' is set by benchmark.py itself"),
    ("test.strid_xy", 9, "test: 'strid_xy' is not a flag of code/test.py"),
    ("test.checkpoint", "x.pth", "test: 'checkpoint' is set by benchmark.py itself"),
    ("registration.args.lablenum", 2, "registration args: 'lablenum' is not a flag of "
                                      "code/utils/registration.py"),
])
def test_a_bad_spec_is_one_line_naming_the_key(path, value, message):
    with pytest.raises(ConfigError) as err:
        check_spec(_set(path, value), "--spec s.json")
    assert str(err.value).startswith("--spec s.json: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_specs_of_the_repository_are_valid():
    check_spec(SPEC, "SPEC")
    specs = sorted((REPO / "benchmarks").rglob("*.json"))
    assert len(specs) >= 4
    for path in specs:
        check_spec(json.loads(path.read_text()), str(path))


def test_benchmark_py_refuses_a_bad_spec_before_running_anything(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(_set("comparisons.0.b", "uamt")))
    for extra in ([], ["--collect"], ["--status"]):
        res = subprocess.run([sys.executable, str(CODE / "benchmark.py"), "--spec", str(path),
                              "--out", str(tmp_path / "out"), "--model_dir",
                              str(tmp_path / "runs"), *extra],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert res.stderr.strip() == (f"error: --spec {path}: comparisons[0] names row 'uamt', "
                                      "which the spec does not have")
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_the_specs_written_in_the_docs_are_valid():
    """Every fenced JSON block of README.md and docs/*.md that holds ``rows`` is a spec
    that benchmark.py accepts."""
    blocks = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        for block in re.findall(r"```json\n(.*?)```", text, flags=re.S):
            if '"rows"' in block:
                blocks.append((doc.name, block))
    assert blocks, "the docs hold no spec"
    for name, block in blocks:
        check_spec(json.loads(block), name)


def test_nan_and_infinity_in_the_json_are_refused(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC).replace('"max_se": 0.01', '"max_se": NaN'))
    res = subprocess.run([sys.executable, str(CODE / "benchmark.py"), "--spec", str(path),
                          "--out", str(tmp_path / "out"), "--status"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip() == (
        f"error: --spec {path}: not valid JSON (NaN is not a number a spec may hold, line 1)")


def test_rows_scored_on_different_cases_are_one_line():
    import cogrnet.benchmark as benchmark

    def row(name, method, case):
        return {"name": name, "method": method, "seeds": [
            {"seed": s, "case_dice": {case: 0.5}, "case_dice_teacher": {case: 0.6}}
            for s in (1, 2)]}

    results = [row("cog", "cogrnet", "x"), row("sup", "sup", "y")]
    with pytest.raises(ConfigError, match=r"^comparison cog − sup: run 1 of row A did not "
                                          r"score 1 case\(s\) the others did \(e\.g\. y\)"):
        benchmark.compare_rows(SPEC, results)
