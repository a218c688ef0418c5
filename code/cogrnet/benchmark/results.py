"""The finished runs of a benchmark: each run's ``bench_result.json`` and the results files
(``results.json``, a GPU report) that record runs, with what the run folder adds (the
validation curve, the Dice per scored case, the teacher's scores), and which (row, seed)
runs of a spec are finished and which are still to do (:func:`table_state`)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cogrnet.benchmark.commands import row_commands, row_method, short_command
from cogrnet.errors import ConfigError, DataError
from cogrnet.evaluation.metrics import METRIC_NAMES
from cogrnet.fileio import read_jsonl
from cogrnet.presets import REPO_ROOT

RESULT_KEYS = ("seed", "run_dir", "seconds", "mean", "train_command", "test_command")


def _check_result(result: Any, path: Path) -> dict[str, Any]:
    """One run's result as read from ``path``; a clear error when it is not one."""
    if not isinstance(result, dict) or any(k not in result for k in RESULT_KEYS):
        raise ConfigError(f"{path}: not a benchmark result (needs {', '.join(RESULT_KEYS)}); "
                          "delete it to rerun that row")
    return result


def read_result(path: Path) -> dict[str, Any]:
    """``bench_result.json`` of a finished run."""
    try:
        return _check_result(json.loads(path.read_text()), path)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); delete it "
                          "to rerun that row") from None


def _result_pairs(text: str, path: Path, hint: str,
                  key: str | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """``(row name, seed) -> result`` of a results file's text (of its ``key`` part, when
    the file holds one); a one-line error naming ``path`` otherwise."""
    try:
        data = json.loads(text)
        if key is not None and isinstance(data, dict) and key in data:
            data = data[key]
        pairs = [(r["name"], s) for r in data["results"] for s in r["seeds"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a benchmark results file ({err}); {hint}") from None
    return {(name, _check_result(s, path)["seed"]): s for name, s in pairs}


def recorded_results(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """``(row name, seed) -> result`` from an earlier ``results.json`` (empty if none)."""
    if not path.exists():
        return {}
    return _result_pairs(path.read_text(), path, "move it away to start a new table")


def imported_results(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """``(row name, seed) -> result`` from a file given to ``--collect``: a ``results.json``
    or a ``scripts/gpu_benchmark.py`` report (the runs under its ``table``)."""
    if not path.is_file():
        raise ConfigError(f"--collect {path}: file not found")
    return _result_pairs(path.read_text(), path, "give a results.json or a "
                         "scripts/gpu_benchmark.py report", key="table")


def known_results(out: Path, collect: list[str] | None
                  ) -> tuple[dict[tuple[str, int], dict[str, Any]], dict[tuple[str, int], Path]]:
    """``(row, seed) -> result`` recorded in ``out/results.json`` and in the ``--collect``
    files, and the file each came from."""
    recorded = recorded_results(out / "results.json")
    source = {key: out / "results.json" for key in recorded}
    for path in map(Path, collect or []):
        found = imported_results(path)
        recorded.update(found)
        source.update({key: path for key in found})
    return recorded, source


def _val_curve(run: Path) -> tuple[list[int], list[float]]:
    by_it = {row["iteration"]: row["val/dice"] for row in read_jsonl(run / "metrics.jsonl")
             if "val/dice" in row and "iteration" in row}
    its = sorted(by_it)
    return its, [by_it[i] for i in its]


def read_summary(folder: Path) -> dict[str, Any] | None:
    """A scoring's ``summary.json`` in ``folder`` (test.py's), ``None`` when there is none;
    a one-line :class:`DataError` naming it when it is not JSON."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _case_dice(summary: dict[str, Any] | None) -> dict[str, float] | None:
    """The Dice of each scored case of a test.py ``summary`` (``None`` without one)."""
    if summary is None:
        return None
    return {c["case"]: c["dice"] for c in summary["cases"] if "dice" in c}


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside (results files hold no
    machine paths), else as given."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(os.path.abspath(REPO_ROOT)))
    except ValueError:
        return str(path)


def run_path(result: dict[str, Any]) -> Path:
    """A result's run folder (``run_dir``, relative to the repository unless absolute)."""
    run = Path(result["run_dir"])
    return run if run.is_absolute() else REPO_ROOT / run


def with_run_details(result: dict[str, Any]) -> dict[str, Any]:
    """Fill what was not recorded from the run folder: the validation curve, the Dice per
    scored case, and the teacher's scores (``bench_test_ema/summary.json``) when it was
    tested; ``run_dir`` is kept relative to the repository when it lies inside."""
    run = run_path(result)
    result["run_dir"] = repo_relative(run)
    if "val_curve" not in result:
        its, dice = _val_curve(run)
        if its:
            result["val_curve"] = {"iterations": its, "dice": dice}
    if "case_dice" not in result:
        cases = _case_dice(read_summary(run / "bench_test"))
        if cases:
            result["case_dice"] = cases
    if "mean_teacher" not in result and (summary := _teacher_summary(run)) is not None:
        result["mean_teacher"] = {m: summary["mean"][m] for m in METRIC_NAMES}
        result["case_dice_teacher"] = _case_dice(summary)
    return result


def _teacher_summary(run: Path) -> dict[str, Any] | None:
    """The run's EMA-teacher scoring (``bench_test_ema/summary.json``) when it scored the
    same checkpoint and list as the run's own scoring (``bench_test``), with the teacher's
    weights; ``None`` when there is none, or another scoring (said as such)."""
    summary = read_summary(run / "bench_test_ema")
    if summary is None:
        return None
    own = (read_summary(run / "bench_test") or {}).get("settings", {})
    mine = summary.get("settings", {})
    if mine.get("weights") == "ema" and all(
            mine.get(k) == own.get(k) for k in ("checkpoint", "split", "list_file")):
        return summary
    print(f"{run / 'bench_test_ema'}: not the EMA teacher's scoring of the checkpoint and "
          "list the run's own scoring used, left out", flush=True)
    return None


def run_threads(run_dir: Path) -> str | None:
    """The intra-op thread counts the run trained with, from its ``environment.jsonl`` (one
    line per start; ``"2+1"`` when it was resumed with another count); ``None`` without it."""
    counts: list[str] = []
    for start in read_jsonl(run_dir / "environment.jsonl"):
        t = str(start.get("threads", "?"))
        if not counts or counts[-1] != t:
            counts.append(t)
    return "+".join(counts) or None


def wall_minutes(entry: dict[str, Any]) -> list[float]:
    """The wall times (min) of a row's finished seeds that ran in one go (a resumed one's
    time covers only its last part)."""
    return [s["seconds"] / 60 for s in entry["seeds"] if s.get("seconds") and not s.get("resumed")]


def missing_seeds(spec: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """``"row 1340, 1341"`` for each row with planned seeds not finished yet."""
    default = spec.get("seeds", [1337])
    done = {r["name"]: {s["seed"] for s in r["seeds"]} for r in results}
    out = []
    for row in spec["rows"]:
        left = [s for s in row.get("seeds", default) if s not in done.get(row["name"], ())]
        if left:
            out.append(f"{row['name']} {', '.join(map(str, left))}")
    return out


def _other_commands(result: dict[str, Any], train: list[str], test: list[str]) -> str:
    """``"training"``, ``"test"`` or ``"training and test"``: which of a recorded result's
    commands differ from the ones the spec makes now; ``""`` when both are the same."""
    other = [name for name, key, cmd in (("training", "train_command", train),
                                         ("test", "test_command", test))
             if result.get(key) != short_command(cmd)]
    return " and ".join(other)


def _seed_result(spec: dict[str, Any], row: dict[str, Any], seed: int, model_dir: Path,
                 recorded: dict[tuple[str, int], dict[str, Any]],
                 source: dict[tuple[str, int], Path], to_run: bool
                 ) -> tuple[dict[str, Any] | None, tuple]:
    """A (row, seed)'s finished result (its run folder's, else the recorded one), made by
    the training and test commands the spec makes now, or ``None``; and its ``(exp,
    train, test, run_dir)``. A run folder finished by other commands is left out, or, when
    the (row, seed) is ``to_run``, a one-line :class:`ConfigError` (running it would only
    read that folder's result again)."""
    exp, train, test = row_commands(spec, row, seed, model_dir)
    run_dir = model_dir / exp
    done = run_dir / "bench_result.json"
    earlier = recorded.get((row["name"], seed))
    if earlier is not None and (other := _other_commands(earlier, train, test)):
        # the spec (or --model_dir) changed since: that number is not this row's
        print(f"{exp}: {source[(row['name'], seed)]} records another {other} command "
              "(changed spec or --model_dir), left out", flush=True)
        earlier = None
    folder = read_result(done) if done.exists() else None
    if folder is not None and (other := _other_commands(folder, train, test)):
        message = (f"{done}: a run of another {other} command than this spec's (the spec or "
                   "--model_dir changed since)")
        if to_run:
            raise ConfigError(f"{message}: move its folder away, and the row's seed runs again")
        print(f"{exp}: {message}, left out", flush=True)
        folder = None
    if folder is not None:
        result = folder
        result["run_dir"] = str(run_dir)  # where it was found (it may have moved)
        result.setdefault("date", time.strftime("%Y-%m-%d", time.localtime(done.stat().st_mtime)))
        print(f"{exp}: done earlier", flush=True)
    elif earlier is not None:
        result = earlier
        print(f"{exp}: recorded in {source[(row['name'], seed)]}", flush=True)
    else:
        result = None
    return result, (exp, train, test, run_dir)


def table_state(spec: dict[str, Any], selected: set[str], seeds: list[int] | None,
                model_dir: Path, known: tuple[dict, dict], collect: bool
                ) -> tuple[list[dict[str, Any]], list[tuple]]:
    """Every row of the spec with its finished seeds, and the (row, seed) runs still to do
    among the ``selected`` rows (``seeds``: the ``--seeds`` asked for, else each row's
    planned ones; ``collect``: nothing is to do)."""
    recorded, source = known
    default_seeds = spec.get("seeds", [1337])
    results, pending = [], []
    for row in spec["rows"]:
        entry = {"name": row["name"], "method": row_method(spec, row),
                 "seeds": []}
        results.append(entry)
        planned = row.get("seeds", default_seeds)  # a row's own seeds, else the spec's
        wanted = seeds or planned
        for seed in sorted(set(wanted) | set(planned)
                           | {s for (name, s) in recorded if name == row["name"]}):
            to_run = row["name"] in selected and seed in wanted and not collect
            result, (exp, train, test, run_dir) = _seed_result(spec, row, seed, model_dir,
                                                               recorded, source, to_run)
            if result is not None:
                entry["seeds"].append(with_run_details(result))
            elif row["name"] in selected and seed in wanted and collect:
                print(f"{exp}: not finished, left out", flush=True)
            elif row["name"] in selected and seed in wanted:
                pending.append((entry, seed, exp, train, test, run_dir))
    return results, pending
