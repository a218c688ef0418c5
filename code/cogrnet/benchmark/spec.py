"""A benchmark spec (JSON), read and checked in one place before anything runs: every key
known (a misspelt ``comparisons`` or ``max_se`` would silently drop what a table
pre-registers), every value of the type it must have, the rows' names unique, each
comparison naming two rows, and every training, test and registration argument a flag of
its script. A fault is a one-line :class:`~cogrnet.errors.ConfigError` naming the spec
and the key.

Keys (``*``: required):

- ``prefix``\\*: the runs' folder names, ``<prefix>_<row>_s<seed>``; ``rows``\\*: a list of
  ``{"name", "args" (train.py flags without the dashes), "seeds" (optional)}``;
- ``title``, ``notes``: the table's heading and its protocol in words;
- ``seeds``: the seeds of every row without its own (default ``[1337]``);
- ``common``: train.py flags of every row; ``registration``: ``{"out_dir", "args"}``, the
  coarse labels' ``code/utils/registration.py`` run; ``test``: test.py flags;
- ``checkpoint``: the file each run is scored with (default ``last.pth``);
- ``headline``: ``"teacher"`` (a teacher method's EMA teacher leads) or ``"student"``;
  ``test_teacher``: also score the teachers, as a diagnostic;
- ``comparisons``: ``[{"a", "b", "target"}]``, pre-registered A - B >= target (``null``:
  secondary); ``max_se``: the standard error each target also needs.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from cogrnet.cli import option_strings
from cogrnet.errors import ConfigError

_NONE = type(None)
_NUMBER = (int, float)
SPEC_KEYS: dict[str, tuple[type, ...]] = {
    "title": (str,), "notes": (str,), "prefix": (str,), "seeds": (list,), "checkpoint": (str,),
    "headline": (str,), "test_teacher": (bool,), "common": (dict,), "registration": (dict,),
    "test": (dict,), "rows": (list,), "comparisons": (list,), "max_se": (*_NUMBER, _NONE)}
ROW_KEYS: dict[str, tuple[type, ...]] = {"name": (str,), "args": (dict,), "seeds": (list,)}
COMPARISON_KEYS: dict[str, tuple[type, ...]] = {"a": (str,), "b": (str,),
                                                "target": (*_NUMBER, _NONE)}
#: ``command``: written in by benchmark.py (the command it ran), kept in results.json
REGISTRATION_KEYS: dict[str, tuple[type, ...]] = {"out_dir": (str,), "args": (dict,),
                                                  "command": (str,)}
HEADLINES = ("student", "teacher")
#: flags benchmark.py gives each command itself
OWN_FLAGS = {"train": {"seed", "exp", "out_root", "no_progress", "coarse_dir", "resume",
                       "overwrite"},
             "test": {"checkpoint", "out_dir", "no_progress", "ema", "pred_dir"},
             "registration": {"out_dir"}}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_spec(path: Path) -> dict[str, Any]:
    """The benchmark spec at ``path``, checked (:func:`check_spec`); a one-line error when
    it is missing, not JSON or not a valid spec."""
    if not path.is_file():
        raise ConfigError(f"--spec {path}: file not found")
    try:
        spec = json.loads(path.read_text(), parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--spec {path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    check_spec(spec, f"--spec {path}")
    return spec


def _no_constant(name: str) -> Any:
    """JSON's non-standard NaN / Infinity: refused (a NaN target or max_se is never met)."""
    raise json.JSONDecodeError(f"{name} is not a number a spec may hold", name, 0)


def _check_keys(obj: Any, keys: dict[str, tuple[type, ...]], where: str,
                required: tuple[str, ...] = ()) -> None:
    """``obj`` is a dict of known ``keys``, each value of its types, ``required`` ones there."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: "
                          f"{', '.join(keys)})")
    for key in required:
        if key not in obj:
            raise ConfigError(f"{where}: '{key}' is required")
    for key, value in obj.items():
        types = keys[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is _NONE else t.__name__ for t in types)
            raise ConfigError(f"{where}: '{key}' must be {names}, not {json.dumps(value)[:60]}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: '{key}' must be a finite number, not {value}")


def _check_seeds(seeds: list[Any], where: str) -> None:
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: 'seeds' lists a seed twice")


def _check_rows(spec: dict[str, Any], where: str) -> set[str]:
    """The rows' keys, names (unique, usable in a folder name) and seeds; their names."""
    names: set[str] = set()
    if not spec["rows"]:
        raise ConfigError(f"{where}: 'rows' is empty")
    for i, row in enumerate(spec["rows"]):
        _check_keys(row, ROW_KEYS, f"{where}: rows[{i}]", required=("name",))
        name = row["name"]
        if not _NAME.match(name) or name in names:
            problem = "twice" if name in names else "not usable in a folder name"
            raise ConfigError(f"{where}: rows[{i}]: name '{name}' {problem}")
        names.add(name)
        if "seeds" in row:
            _check_seeds(row["seeds"], f"{where}: row {name}")
    return names


def check_spec(spec: Any, where: str) -> None:
    """A one-line :class:`ConfigError` (``where``: the spec's name) for anything in ``spec``
    that is not as the module docstring says."""
    _check_keys(spec, SPEC_KEYS, where, required=("prefix", "rows"))
    if not _NAME.match(spec["prefix"]):
        raise ConfigError(f"{where}: prefix '{spec['prefix']}' is not usable in a folder name")
    if "seeds" in spec:
        _check_seeds(spec["seeds"], where)
    names = _check_rows(spec, where)
    if spec.get("headline", "student") not in HEADLINES:
        raise ConfigError(f"{where}: headline '{spec['headline']}' is not one of "
                          f"{', '.join(HEADLINES)}")
    checkpoint = spec.get("checkpoint", "last.pth")
    if not checkpoint.endswith(".pth") or not _NAME.match(checkpoint):
        raise ConfigError(f"{where}: checkpoint '{checkpoint}' is not the name of a .pth file "
                          "in the run folder")
    if spec.get("max_se") is not None and spec["max_se"] <= 0:
        raise ConfigError(f"{where}: max_se must be positive")
    for i, c in enumerate(spec.get("comparisons") or []):
        _check_comparison(spec, c, names, f"{where}: comparisons[{i}]")
    if "registration" in spec:
        _check_keys(spec["registration"], REGISTRATION_KEYS, f"{where}: registration",
                    required=("out_dir", "args"))
    _check_flags(spec, where)


def _check_comparison(spec: dict[str, Any], c: Any, names: set[str], where: str) -> None:
    """A comparison names two rows; a primary one under ``max_se`` needs at least two
    planned seeds of each (with one, the seeds' part of its standard error is unknown)."""
    _check_keys(c, COMPARISON_KEYS, where, required=("a", "b"))
    for side in ("a", "b"):
        if c[side] not in names:
            raise ConfigError(f"{where} names row '{c[side]}', which the spec does not have")
    if c.get("target") is None or spec.get("max_se") is None:
        return
    for side in ("a", "b"):
        row = next(r for r in spec["rows"] if r["name"] == c[side])
        if len(row.get("seeds", spec.get("seeds", [1337]))) < 2:
            raise ConfigError(f"{where}: row '{c[side]}' plans one seed: its standard error "
                              "is unknown, so max_se can never be met (plan two or more)")


def _script_options(script: str) -> set[str]:
    """The long options (without dashes) of ``code/<script>``'s parser."""
    if script == "train.py":
        from cogrnet.training.config import build_parser
    elif script == "test.py":
        from cogrnet.evaluation.run import build_parser
    else:
        from cogrnet.prepare.registration import build_parser
    return {opt[2:] for opt in option_strings(build_parser()) if opt.startswith("--")}


def _check_flags(spec: dict[str, Any], where: str) -> None:
    """Every argument of the rows (``common`` and each row's ``args``), of ``test`` and of
    the registration is a flag of its script, and none is one benchmark.py sets itself."""
    groups = [("train", "train.py", f"{where}: common", spec.get("common", {}))]
    groups += [("train", "train.py", f"{where}: row {r['name']}", r.get("args", {}))
               for r in spec["rows"]]
    groups.append(("test", "test.py", f"{where}: test", spec.get("test", {})))
    if "registration" in spec:
        groups.append(("registration", "utils/registration.py", f"{where}: registration args",
                       spec["registration"]["args"]))
    options: dict[str, set[str]] = {}
    for kind, script, place, args in groups:
        if not args:
            continue
        known = options.setdefault(script, _script_options(script))
        for key in args:
            if key in OWN_FLAGS[kind]:
                raise ConfigError(f"{place}: '{key}' is set by benchmark.py itself; leave it "
                                  "out")
            if key not in known:
                raise ConfigError(f"{place}: '{key}' is not a flag of code/{script}")
