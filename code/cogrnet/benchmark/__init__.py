"""Run a table of experiments (registration -> training -> test) and write the results table.

    python code/benchmark.py --spec benchmarks/la_half_cpu.json --out_dir docs/benchmarks/la_half_cpu

The spec (JSON) holds ``common`` training arguments, a ``registration`` block (made once,
when a row trains on coarse labels), a ``test`` block and the ``rows``; each row is a
method with its own arguments. Every (row, seed) is a run ``model/<prefix>_<row>_s<seed>/``
made by the same ``code/train.py`` and ``code/test.py`` commands a user would type (they are
written into the table). Outputs in ``--out_dir``: ``results.md`` (the table), ``results.json``,
``val_dice.png`` (validation Dice over iterations), ``case_dice.png`` (the Dice of each
scored case, every row side by side: a case that one method fails stands out) and
``comparisons.png`` (each pre-registered comparison: its per-case differences, the mean and
its standard error against the target).

A (row, seed) is finished when its run folder holds ``bench_result.json`` or when the
``results.json`` already in ``--out_dir`` records it with the same training command; finished
runs are not rerun, and the table always lists every finished row of the spec, so rows can
be run one invocation (or one machine) at a time without losing the earlier ones. To redo a
row, delete its run folder and its entry in ``results.json``.

``--collect`` runs nothing and writes the table of what is finished; ``--collect FILE ...``
also takes the runs recorded in other JSON files: another ``results.json``, or the report of
``scripts/gpu_benchmark.py`` (its ``table``), with the same rule (a run counts when its
training command is the one this spec makes). ``--status`` runs and writes nothing: the
planned runs not finished yet, their state and the time left.

The spec's keys (each checked before anything runs, a one-line error otherwise): ``prefix``
and ``rows`` (``name``, ``args``, own ``seeds``), ``title``, ``notes``, ``seeds``,
``common``, ``registration`` (``out_dir``, ``args``), ``test``, ``checkpoint``,
``headline`` (``teacher`` or ``student``), ``test_teacher``, ``comparisons`` (``a``, ``b``,
``target``) and ``max_se``: code/cogrnet/benchmark/spec.py says what each holds.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cogrnet.benchmark.comparisons import compare_rows, comparison_table, headline, scores
from cogrnet.benchmark.figures import plot_case_dice, plot_comparisons, plot_val_curves
from cogrnet.benchmark.spec import read_spec
from cogrnet.cli import add_debug, add_out_dir, parser
from cogrnet.errors import ConfigError, DataError, FolderBusy
from cogrnet.evaluation.compare import seed_gap
from cogrnet.evaluation.metrics import METRIC_NAMES
from cogrnet.fileio import (lock_folder, lock_holder, read_jsonl, write_json_atomic,
                            write_text_atomic)
from cogrnet.methods.registry import has_teacher
from cogrnet.presets import MODEL_DIR, REPO_ROOT

#: the entry scripts a row runs (``code/train.py`` ...), the commands a user would type
CODE = REPO_ROOT / "code"


def cli_flags(args: dict[str, Any]) -> list[str]:
    """``{"patch_size": [64, 64, 32], "amp": 0, "no_augment": true}`` -> CLI flags."""
    out: list[str] = []
    for k, v in args.items():
        if v is None or v is False:
            continue
        out.append(f"--{k}")
        if v is True:
            continue
        out += [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]
    return out


def thread_env(threads: int | None) -> dict[str, str] | None:
    """The environment of a row's commands: ``threads`` intra-op threads (torch, OpenMP,
    MKL) unless the caller's environment already sets them; ``None``: inherit as is."""
    if threads is None:
        return None
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, str(threads))
    return env


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run a command from the repository root, its output into ``log``; seconds taken."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        res = subprocess.run(cmd, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if res.returncode != 0:
        raise ConfigError(f"command failed (exit {res.returncode}), see {log}: {shlex.join(cmd)}")
    return time.perf_counter() - t0


def _short(cmd: list[str]) -> str:
    return shlex.join(["python"] + [c for c in cmd[1:]]).replace(str(REPO_ROOT) + "/", "")


#: the label sources read from the registration's output (``--coarse_dir``)
REGISTRATION_LABELS = ("coarse", "slices")


def row_args(spec: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A row's training arguments: the spec's ``common`` ones updated by the row's own."""
    return {**spec.get("common", {}), **row.get("args", {})}


def row_method(spec: dict[str, Any], row: dict[str, Any]) -> str:
    """The method a row trains (its own ``args``, else ``common``, else train.py's default)."""
    return row_args(spec, row).get("method", "cogrnet")


def uses_coarse(spec: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    """Whether some of ``rows`` trains on the registration's output (``label_source``
    coarse, or slices: the two annotated slices it stores)."""
    return any(row_args(spec, r).get("label_source") in REGISTRATION_LABELS for r in rows)


def _repo_path(path: str | None) -> str | None:
    """A spec path as the row's commands see it (they run from the repository root)."""
    return None if path is None else str(REPO_ROOT / path)


def _list_places(args: dict[str, Any]) -> tuple[str, str | None]:
    """``(root, lists_dir)`` where a script given ``args`` looks for its list files: its
    ``root_path`` and ``lists_dir``, else its dataset preset's."""
    from cogrnet.inference.settings import inference_preset

    preset = inference_preset(None, args.get("dataset"), args.get("root_path"))
    root = args.get("root_path") or preset.root_path or "."
    lists = args.get("lists_dir") if args.get("lists_dir") is not None else preset.lists_dir
    return str(_repo_path(root)), _repo_path(lists)


def check_isolation(spec: dict[str, Any], rows: list[dict[str, Any]], where: str) -> None:
    """The scored list is never trained on and never picks a checkpoint: for each row, no
    scored ID is a training ID (the train list minus the row's validation list, labeled or
    not), and when the scored cases are (some of) the row's validation list, the table scores
    ``last.pth`` and a two-stage row hands over its last pre-training weights
    (``handover: last``). A one-line :class:`ConfigError` naming the spec and row otherwise."""
    from cogrnet.data.dataset import find_list, read_list
    from cogrnet.methods.registry import method_class
    from cogrnet.training.data import validation_ids

    for row in rows:
        args = row_args(spec, row)
        scoring = scoring_args(spec, args)  # the test command's list, where test.py finds it
        split = str(scoring.get("split", "test"))
        scored_root, scored_lists = _list_places(scoring)
        scored = set(read_list(find_list(scored_root, split, scored_lists)))
        root, lists = _list_places(args)
        train = read_list(find_list(root, "train", lists))
        val, _ = validation_ids(root, lists, str(args.get("val_list", "auto")), train)
        held_out = set(val)
        trained = [i for i in train if i not in held_out and i in scored]
        name = f"{where}: row {row['name']}"
        if trained:
            raise ConfigError(f"{name} trains on {len(trained)} of the {len(scored)} scored "
                              f"cases (list '{split}', e.g. {trained[0]}): a scored case must "
                              "lie outside the training IDs (make it the row's val_list)")
        if not scored & set(val):
            continue
        checkpoint = spec.get("checkpoint", "last.pth")
        if checkpoint != "last.pth":
            raise ConfigError(f"{name}: scores {checkpoint}, chosen on its validation list, "
                              f"which holds scored cases (list '{split}'); score last.pth")
        method = method_class(row_method(spec, row))
        if method.two_stage and args.get("handover", "best") != "last":
            raise ConfigError(f"{name}: self-training would start from the pre-training "
                              "checkpoint chosen on a validation list that holds scored cases "
                              f"(list '{split}'); give the row \"handover\": \"last\"")


def isolation_problem(spec: dict[str, Any]) -> str | None:
    """Why the spec's scored list is not held out from its rows (:func:`check_isolation`),
    or that this could not be checked (a list file missing); ``None`` when it is."""
    try:
        check_isolation(spec, spec["rows"], "the spec")
    except ConfigError as err:
        return str(err)
    except DataError as err:
        return f"whether its scored list is held out could not be checked: {err}"
    return None


def scoring_args(spec: dict[str, Any], train_args: dict[str, Any]) -> dict[str, Any]:
    """The scoring arguments of a row trained with ``train_args``: its data (``dataset``,
    ``root_path``, ``lists_dir``), overridden by the spec's ``test`` block."""
    return {"dataset": train_args.get("dataset"), "root_path": train_args.get("root_path"),
            "lists_dir": train_args.get("lists_dir"), **spec.get("test", {})}


def row_commands(spec: dict[str, Any], row: dict[str, Any], seed: int,
                 model_dir: Path) -> tuple[str, list[str], list[str]]:
    """The run name and the train / test commands of one (row, seed)."""
    exp = f"{spec['prefix']}_{row['name']}_s{seed}"
    train_args = {**row_args(spec, row), "seed": seed, "exp": exp,
                  "out_root": str(model_dir), "no_progress": True}
    if train_args.get("label_source") in REGISTRATION_LABELS:
        train_args["coarse_dir"] = spec["registration"]["out_dir"]
    train = [sys.executable, str(CODE / "train.py"), *cli_flags(train_args)]
    scoring = {**scoring_args(spec, train_args),
               "checkpoint": str(model_dir / exp / spec.get("checkpoint", "last.pth")),
               "out_dir": str(model_dir / exp / "bench_test"), "no_progress": True}
    test = [sys.executable, str(CODE / "test.py"), *cli_flags(scoring)]
    return exp, train, test


def _summary(values: list[float]) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return "n/a"
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


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


def _val_curve(run: Path) -> tuple[list[int], list[float]]:
    by_it = {row["iteration"]: row["val/dice"] for row in read_jsonl(run / "metrics.jsonl")
             if "val/dice" in row and "iteration" in row}
    its = sorted(by_it)
    return its, [by_it[i] for i in its]


def teacher_test_command(test: list[str]) -> list[str]:
    """The test command of a row scored with the EMA teacher's weights (``--ema``), into
    ``bench_test_ema`` beside the student's ``bench_test``."""
    cmd = list(test)
    k = cmd.index("--out_dir") + 1
    cmd[k] = str(Path(cmd[k]).with_name("bench_test_ema"))
    return cmd + ["--ema"]


def _read_summary(folder: Path) -> dict[str, Any] | None:
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


def _run_path(result: dict[str, Any]) -> Path:
    """A result's run folder (``run_dir``, relative to the repository unless absolute)."""
    run = Path(result["run_dir"])
    return run if run.is_absolute() else REPO_ROOT / run


def _with_curve(result: dict[str, Any]) -> dict[str, Any]:
    """Fill what was not recorded from the run folder: the validation curve, the Dice per
    scored case, and the teacher's scores (``bench_test_ema/summary.json``) when it was
    tested; ``run_dir`` is kept relative to the repository when it lies inside."""
    run = _run_path(result)
    result["run_dir"] = repo_relative(run)
    if "val_curve" not in result:
        its, dice = _val_curve(run)
        if its:
            result["val_curve"] = {"iterations": its, "dice": dice}
    if "case_dice" not in result:
        cases = _case_dice(_read_summary(run / "bench_test"))
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
    summary = _read_summary(run / "bench_test_ema")
    if summary is None:
        return None
    own = (_read_summary(run / "bench_test") or {}).get("settings", {})
    mine = summary.get("settings", {})
    if mine.get("weights") == "ema" and all(
            mine.get(k) == own.get(k) for k in ("checkpoint", "split", "list_file")):
        return summary
    print(f"{run / 'bench_test_ema'}: not the EMA teacher's scoring of the checkpoint and list the run's own "
          "scoring used, left out", flush=True)
    return None


def _wall_minutes(entry: dict[str, Any]) -> list[float]:
    """The wall times (min) of a row's finished seeds that ran in one go (a resumed one's
    time covers only its last part)."""
    return [s["seconds"] / 60 for s in entry["seeds"] if s.get("seconds") and not s.get("resumed")]


def _main_table(results: list[dict[str, Any]], teacher_first: bool) -> list[str]:
    """The table's rows: the headline model's metrics (module docs), the per-seed Dice, the
    other model's Dice and, for teacher-first tables, the teacher-student gap."""
    other = "student Dice | teacher − student" if teacher_first else "teacher Dice"
    lines = [f"| row | method | seeds | Dice | Jaccard | HD95 | ASD | per-seed Dice | {other} "
             "| wall time (min) | measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * teacher_first]
    for r in results:
        if not r["seeds"]:
            continue
        key = headline(r["method"], teacher_first)
        heads = [scores(s, key)[0] for s in r["seeds"]]
        scored = [h for h in heads if h]
        cells = [_summary([h[m] for h in scored]) for m in METRIC_NAMES]
        if len(scored) < len(r["seeds"]):
            cells[0] += f" ({len(scored)} of {len(r['seeds'])})"
        per_seed = ", ".join(f"{h['dice']:.3f}" if h else "-" for h in heads)
        walls = _wall_minutes(r)
        wall = f"{np.mean(walls):.1f}" if walls else "-"
        mark = "*" if any(s.get("resumed") for s in r["seeds"]) else ""
        dates = ", ".join(sorted({s.get("date", "not recorded") for s in r["seeds"]}))
        lines.append(f"| {r['name']} | {r['method']} | {len(r['seeds'])} | " + " | ".join(cells)
                     + f" | {per_seed} | {_other_cells(r, key, teacher_first)} | "
                     f"{wall}{mark} | {dates} |")
    return lines


def _other_cells(r: dict[str, Any], key: str, teacher_first: bool) -> str:
    """The cells beside the headline: the teacher's Dice (student-first tables), or the
    student's Dice and the teacher-student gap (teacher-first tables; ``-`` for ``sup``)."""
    if teacher_first and key != "teacher":
        return "- | -"
    if teacher_first:
        student = _summary([s["mean"]["dice"] for s in r["seeds"]])
        pairs = [(s["case_dice_teacher"], s["case_dice"]) for s in r["seeds"]
                 if s.get("case_dice_teacher") and s.get("case_dice")]
        if not pairs:
            return f"{student} | -"
        try:
            gap, se, n = seed_gap([t for t, _ in pairs], [u for _, u in pairs])
        except ValueError as err:
            raise ConfigError(f"row {r['name']}, teacher − student: {err}") from None
        return f"{student} | {gap:+.4f}" + (f" ± {se:.4f}" if n > 1 else "")
    teacher = [s["mean_teacher"]["dice"] for s in r["seeds"] if "mean_teacher" in s]
    if not teacher:
        return "-"
    return _summary(teacher) + (f" ({len(teacher)} of {len(r['seeds'])})"
                                if len(teacher) < len(r["seeds"]) else "")


def case_dice_table(results: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: Dice of each scored case (columns) for each finished (row, seed), and
    the teacher's where it was scored; empty when no run recorded its cases."""
    runs = [(f"{r['name']} s{s['seed']}{tag}", str(s.get("threads", "-")), cases)
            for r in results for s in r["seeds"]
            for tag, cases in (("", s.get("case_dice")), (" teacher", s.get("case_dice_teacher")))
            if cases]
    if not runs:
        return []
    ids = sorted({c for _, _, cases in runs for c in cases})
    no_cases = [f"{r['name']} s{s['seed']}" for r in results for s in r["seeds"]
                if not s.get("case_dice")]
    lines = ["", "Dice per case (case IDs shortened to their first 6 characters; *threads*: "
             "the intra-op threads it trained with, `2+1` when resumed with another count; on "
             "the CPU a run is bit-reproducible only at the same count):", "",
             "| run | threads | " + " | ".join(c[:6] for c in ids) + " |",
             "|---|---|" + "---|" * len(ids)]
    for name, threads, cases in runs:
        lines.append(f"| {name} | {threads} | " + " | ".join(
            f"{cases[c]:.3f}" if c in cases else "-" for c in ids) + " |")
    if no_cases:
        lines += ["", f"Cases not recorded for: {', '.join(no_cases)} (run folders gone)."]
    return lines


def _command_lines(spec: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: the training and test commands of each row's first seed, and the
    registration's."""
    lines = ["", "Commands (first seed of each row; the seed is `--seed`):", ""]
    for r in results:
        if r["seeds"]:
            lines += [f"- {r['name']}:", "  ```", f"  {r['seeds'][0]['train_command']}",
                      f"  {r['seeds'][0]['test_command']}", "  ```"]
    if spec.get("registration"):
        lines += ["", "Coarse labels (once, before the rows):", "", "```",
                  spec["registration"].get("command", ""), "```"]
    return lines


def _header(spec: dict[str, Any], command: str, not_held_out: str | None) -> list[str]:
    """The lines above the table: title, command and date, notes, units, and whether the
    scored list was held out (:func:`write_outputs`)."""
    lines = [f"# {spec.get('title', 'Benchmark')}", "",
             f"Written by `{command}` on {time.strftime('%Y-%m-%d')}; rows finished by "
             "earlier runs of the spec are kept (the *measured* column gives each row's date).", "",
             *([spec["notes"], ""] if spec.get("notes") else []),
             "Dice/Jaccard as fractions, HD95/ASD in voxels; each cell is the mean over "
             f"the cases of the scored list (`{spec.get('test', {}).get('split', 'test')}`), "
             "then mean ± std over seeds when there are several (the sample standard "
             "deviation, n − 1).", ""]
    if not_held_out:
        lines += [f"**Not a held-out table**: {not_held_out}. Its comparisons carry no "
                  "verdict.", ""]
    return lines


def write_outputs(spec: dict[str, Any], results: list[dict[str, Any]], out: Path,
                  command: str, not_held_out: str | None = None) -> None:
    """``results.md``, ``results.json``, ``val_dice.png`` (when some row has a validation
    curve), ``case_dice.png`` (when some run recorded its Dice per case) and
    ``comparisons.png`` (when a pre-registered comparison has runs) in ``out``.
    ``not_held_out``: why the scored list is not held out (:func:`isolation_problem`); the
    table then says so and its comparisons carry no verdict."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", {"spec": spec, "results": results})
    teacher_first = spec.get("headline") == "teacher"
    lines = _header(spec, command, not_held_out) + _main_table(results, teacher_first)
    missing = [r["name"] for r in results if not r["seeds"]]
    if any(s.get("resumed") for r in results for s in r["seeds"]):
        lines += ["", "\\* some seeds were resumed from a checkpoint (their wall time covers "
                  "only the part after the resume): the wall time is the mean over the seeds "
                  "that ran in one go (`-`: none did)."]
    if teacher_first:
        lines += ["", "Headline (pre-registered): a teacher method's EMA teacher, last weights "
                  "(`test.py --ema`); `sup` its last weights. *student Dice*: the same "
                  "checkpoint's student; *teacher − student*: mean ± standard error over seeds "
                  "of the per-seed gap."]
    elif any("mean_teacher" in s for r in results for s in r["seeds"]):
        lines += ["", "Teacher Dice: the same checkpoint scored with its EMA teacher's weights "
                  "(`test.py --ema`), a diagnostic beside the student's score."]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    if missing_seeds(spec, results):
        lines += ["", f"Planned seeds still to run: {'; '.join(missing_seeds(spec, results))}."]
    comparisons = compare_rows(spec, results, judged=not not_held_out)
    compared = [c for c in comparisons if c.diff is not None]
    lines += comparison_table(comparisons)
    if compared:
        lines += ["", "![paired comparisons](comparisons.png)"]
    lines += case_dice_table(results)
    lines += _command_lines(spec, results)
    curves = {r["name"]: seed_curves for r in results
              if (seed_curves := [s["val_curve"] for s in r["seeds"]
                                  if s.get("val_curve", {}).get("iterations")])}
    no_curve = [r["name"] for r in results if r["seeds"] and r["name"] not in curves]
    if curves:
        lines += ["", "![validation Dice](val_dice.png)"]
    if no_curve:
        lines += ["", f"No validation curve recorded for: {', '.join(no_curve)} (run without a "
                  "validation list, or finished before curves were kept in results.json)."]
    with_cases = [r for r in results if any(s.get("case_dice") for s in r["seeds"])]
    if with_cases:
        lines += ["", "![Dice per case](case_dice.png)"]
    write_text_atomic(out / "results.md", "\n".join(lines + [""]))
    if curves:
        plot_val_curves(curves, out / "val_dice.png")
    if with_cases:
        plot_case_dice(with_cases, out / "case_dice.png", teacher_first)
    if compared:
        plot_comparisons(compared, out / "comparisons.png")


def run_threads(run_dir: Path) -> str | None:
    """The intra-op thread counts the run trained with, from its ``environment.jsonl`` (one
    line per start; ``"2+1"`` when it was resumed with another count); ``None`` without it."""
    counts: list[str] = []
    for start in read_jsonl(run_dir / "environment.jsonl"):
        t = str(start.get("threads", "?"))
        if not counts or counts[-1] != t:
            counts.append(t)
    return "+".join(counts) or None


ROW_LOCK = ".benchmark.lock"  # a row's lock, taken around its own train.py's and test.py's
TRAINED = "bench_train.json"  # a row's finished training: its command, wall time, resumed


def _trained(path: Path, train: list[str]) -> dict[str, Any] | None:
    """The record of a finished training of ``train`` (:data:`TRAINED`); ``None`` when
    there is none (or it is unreadable, or of another command: then it trains again)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and record.get("train_command") == _short(train)
    return record if ok and isinstance(record.get("seconds"), (int, float)) else None


def run_row(exp: str, train: list[str], test: list[str], run_dir: Path, seed: int,
            log: Path, env: dict[str, str] | None = None,
            test_teacher: bool = False) -> dict[str, Any]:
    """Train (resuming from ``last.pth`` if there is one) and test one (row, seed), and with
    ``test_teacher`` test its EMA teacher too; its result, also written to
    ``run_dir/bench_result.json``.

    The row is this process's alone (:data:`ROW_LOCK`; held by another benchmark.py: a
    one-line :class:`~cogrnet.errors.FolderBusy`), and a row that process finished
    meanwhile is read, not run again. Interrupted anywhere, the same call finishes the row:
    a finished training (:data:`TRAINED`) is not run again, so the row keeps its wall time,
    and only a test that completed now gives a result."""
    with lock_folder(run_dir, f"row {exp}, run folder", name=ROW_LOCK):
        done = run_dir / "bench_result.json"
        if done.exists():
            print(f"{exp}: finished by another process", flush=True)
            return _with_curve(read_result(done))
        trained = _trained(run_dir / TRAINED, train)
        if trained is None:
            print(f"{exp}: training", flush=True)
            resume = ["--resume"] if (run_dir / "last.pth").exists() else []
            trained = {"train_command": _short(train), "seconds": _run(train + resume, log, env),
                       "resumed": bool(resume)}
            write_json_atomic(run_dir / TRAINED, trained)
        else:
            print(f"{exp}: trained earlier", flush=True)
        for folder in ("bench_test", "bench_test_ema"):  # only this call's tests count
            (run_dir / folder / "summary.json").unlink(missing_ok=True)
        print(f"{exp}: testing", flush=True)
        seconds = trained["seconds"] + _run(test, log, env)
        if test_teacher:
            print(f"{exp}: testing the teacher", flush=True)
            _run(teacher_test_command(test), log, env)  # not in the wall time: a diagnostic
        return _write_result(train, test, run_dir, seed, env, seconds,
                             bool(trained.get("resumed")))


def _write_result(train: list[str], test: list[str], run_dir: Path, seed: int,
                  env: dict[str, str] | None, seconds: float, resumed: bool) -> dict[str, Any]:
    """The result of a tested (row, seed) (:func:`run_row`), written to
    ``run_dir/bench_result.json``."""
    summary = json.loads((run_dir / "bench_test" / "summary.json").read_text())
    result = {"seed": seed, "run_dir": str(run_dir), "seconds": seconds,
              "date": time.strftime("%Y-%m-%d"), "resumed": resumed,
              "threads": run_threads(run_dir) or (env or os.environ).get("OMP_NUM_THREADS",
                                                                         "all cores"),
              "mean": {m: summary["mean"][m] for m in METRIC_NAMES},
              "train_command": _short(train), "test_command": _short(test)}
    write_json_atomic(run_dir / "bench_result.json", _with_curve(result))
    return result


def run_pending(pending: list[tuple], seeds: list[int], jobs: int, write: Any, out: Path,
                test_teacher: bool = False) -> None:
    """Run the pending (row, seed) runs, ``jobs`` at a time, first seed of every row first;
    after each finished run the table is rewritten (``write``), so a later failure or a
    stopped session keeps it. A failed run is reported and the others go on.
    ``test_teacher``: rows of a teacher method are also scored with the teacher."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be at least 1")
    order = sorted(range(len(pending)), key=lambda i: (seeds.index(pending[i][1]), i))
    threads = None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)
    lock = threading.Lock()
    failures: list[str] = []
    busy: list[str] = []

    def one(i: int) -> None:
        entry, seed, exp, train, test, run_dir = pending[i]
        try:
            run_row(exp, train, test, run_dir, seed, out / "logs" / f"{exp}.log",
                    thread_env(threads),
                    test_teacher and has_teacher(entry["method"]))
        except FolderBusy as err:  # another benchmark.py runs it: never the same row twice
            print(f"{exp}: skipped: {err}", flush=True)
            busy.append(exp)
            return
        except ConfigError as err:
            if jobs == 1:
                raise
            print(f"{exp}: failed: {err}", flush=True)
            failures.append(exp)
            return
        with lock:  # write() reads every finished run again, this one included
            write()

    if jobs == 1:
        for i in order:
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, order))
    if busy:
        print(f"{len(busy)} run(s) left to the process(es) running them: {', '.join(busy)}; "
              "the same command again, once they have finished, writes the whole table",
              flush=True)
    if failures:
        raise ConfigError(f"{len(failures)} run(s) failed: {', '.join(failures)} (logs in "
                          f"{out / 'logs'}); the table holds the others")


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


def _total_iterations(run_dir: Path, method: str) -> int | None:
    """The iterations of the run's whole training (both stages of a two-stage method), from
    its ``config.json``; ``None`` without a readable one."""
    from cogrnet.methods.registry import method_class

    try:
        config = json.loads((run_dir / "config.json").read_text())
        return int(config["pre_max_iteration"] + config["self_max_iteration"]
                   if method_class(method).two_stage else config["max_iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_progress(run_dir: Path, method: str) -> tuple[str, float]:
    """What the folder of an unfinished run says: ``(state, fraction of its iterations
    done)``; the state names the process running it (its row lock held)."""
    holder = next((pid for pid in (lock_holder(run_dir, ROW_LOCK), lock_holder(run_dir))
                   if pid is not None), None)  # its benchmark.py's lock, or its train.py's
    running = f"running (process {holder}), " if holder is not None else ""
    if (run_dir / TRAINED).exists():
        return running + "trained, not scored", 1.0
    total = _total_iterations(run_dir, method)
    if total is None:
        return running + "not started", 0.0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    done = max((r.get("iteration", 0) for r in rows), default=0)
    return running + f"iteration {done} of {total}", min(done / max(total, 1), 1.0)


def _scaled_minutes(seed: dict[str, Any], method: str) -> float | None:
    """A resumed seed's wall time (min) scaled to a whole run: its recorded time covers the
    iterations from its last start (the last line of its ``environment.jsonl``) to the end,
    and its scoring; both are scaled by total / (total - start), so it overstates a little.
    ``None`` when its run folder does not say (gone, or another machine's)."""
    if not seed.get("seconds") or not seed.get("run_dir"):
        return None
    run = _run_path(seed)
    total = _total_iterations(run, method)
    starts = read_jsonl(run / "environment.jsonl")
    start = starts[-1].get("iteration") if starts else None
    if total is None or not isinstance(start, int) or not 0 <= start < total:
        return None
    return seed["seconds"] / 60 * total / (total - start)


def _row_minutes(entry: dict[str, Any], rows: list[dict[str, Any]]
                 ) -> tuple[float | None, str]:
    """``(minutes, basis)``: a run's wall time at its row's seeds that ran in one go
    (``basis`` ``""``); else at its row's resumed seeds scaled to a whole run
    (:func:`_scaled_minutes`); else the same from the first row of the same method that has
    either; ``basis`` says which (``"mt_coarse's time"``, ``"its resumed runs' time scaled to
    a whole run"``); else ``(None, "")``."""
    others = [r for r in rows if r["method"] == entry["method"] and r["name"] != entry["name"]]
    for row in [entry] + others:
        whose = "its" if row is entry else f"{row['name']}'s"
        if walls := _wall_minutes(row):
            return float(np.mean(walls)), "" if row is entry else f"{whose} time"
        scaled = [m for s in row["seeds"] if s.get("resumed")
                  if (m := _scaled_minutes(s, row["method"])) is not None]
        if scaled:
            return float(np.mean(scaled)), f"{whose} resumed runs' time scaled to a whole run"
    return None, ""


def print_status(pending: list[tuple], rows: list[dict[str, Any]],
                 scope: str = "the table") -> None:
    """For each pending (row, seed): its state (:func:`run_progress`) and the minutes left
    at its row's measured wall time (:func:`_row_minutes`: else at its resumed runs' scaled
    to a whole run, else at a measured row of ``rows`` with the same method, said as such);
    then the total for ``scope``."""
    minutes_left, measured, scoring, unmeasured = 0.0, 0, 0, set()
    bases: set[str] = set()
    width = max((len(p[2]) for p in pending), default=0)
    for entry, seed, exp, _, _, run_dir in pending:
        state, done = run_progress(run_dir, entry["method"])
        minutes, basis = _row_minutes(entry, rows)
        if done >= 1.0:
            scoring += 1
            estimate = "its scoring left"
        elif minutes is not None:
            left = minutes * (1.0 - done)
            minutes_left, measured = minutes_left + left, measured + 1
            estimate = f"about {left:.0f} min left"
            if basis:
                bases.add(f"{entry['name']} at {basis}")
                estimate += f" at {basis}"
                if not basis.startswith("its "):
                    estimate += " (same method; its row has none yet)"
        else:
            unmeasured.add(entry["name"])
            estimate = "no measured run of its row or of its method yet"
        print(f"{exp:<{width}}  {state}; {estimate}")
    if not pending:
        print(f"nothing left to run in {scope}")
        return
    parts = []
    if measured:
        at = f" ({'; '.join(sorted(bases))})" if bases else ""
        parts.append(f"{measured} of them about {minutes_left / 60:.1f} h at their rows' "
                     f"measured wall times{at} (one after another; divide by the runs side "
                     "by side)")
    if unmeasured:
        parts.append(f"{len(pending) - measured - scoring} of rows without a measured run of "
                     f"their method yet ({', '.join(sorted(unmeasured))})")
    if scoring:
        parts.append(f"{scoring} trained, their scoring left")
    print(f"{len(pending)} run(s) to go in {scope}: " + "; ".join(parts))


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--spec", required=True, help="benchmark spec (JSON)")
    add_out_dir(p, "folder for results.md/json and val_dice.png", "--out", dest="out",
                required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run these seeds of every selected row (default: each row's own "
                        "'seeds', else the spec's)")
    p.add_argument("--rows", nargs="+", default=None,
                   help="only these row names (run and listed in the spec's order; default: "
                        "every row)")
    p.add_argument("--model_dir", default=str(MODEL_DIR),
                   help="folder of the runs, each train.py's --out_root (default: model/ in "
                        "the repository)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs side by side, each with cores/jobs threads (on 2 CPU cores two "
                        "one-thread runs make 1.6x the iterations of one two-thread run, "
                        "docs/PERFORMANCE.md); pending runs start in seed-major order: the "
                        "first seed of every selected row before any second seed")
    p.add_argument("--status", action="store_true",
                   help="run and write nothing: list the planned runs of the selected rows "
                        "not finished yet (running, part-trained, not started) with the time "
                        "left at each row's measured wall time (a row whose seeds were all "
                        "resumed: their time scaled to a whole run; a row with none yet: at a "
                        "measured row's of the same method)")
    p.add_argument("--collect", nargs="*", metavar="JSON", default=None,
                   help="run nothing: write the table of the runs already finished, adding "
                        "those recorded in the JSON files named (results.json files, or "
                        "reports of scripts/gpu_benchmark.py; default: run the pending rows)")
    add_debug(p)
    return p


def selected_rows(spec: dict[str, Any], names: list[str] | None) -> list[dict[str, Any]]:
    """The spec's rows named in ``names`` (all of them for ``None``), in the spec's order."""
    rows = [r for r in spec["rows"] if names is None or r["name"] in names]
    if names and len(rows) != len(names):
        known = ", ".join(r["name"] for r in spec["rows"])
        raise ConfigError(f"--rows: unknown row name(s); the spec has: {known}")
    return rows


def registration_command(reg: dict[str, Any]) -> list[str]:
    """The command that makes a spec's coarse labels: ``code/utils/registration.py`` with
    the flags of the ``registration`` block's ``args`` and its ``out_dir``."""
    return [sys.executable, str(CODE / "utils" / "registration.py"),
            *cli_flags(reg["args"]), "--out_dir", reg["out_dir"]]


def ensure_registration(spec: dict[str, Any], rows: list[dict[str, Any]], out: Path,
                        run: bool) -> None:
    """Record the spec's registration command in it, and (``run``) make the coarse labels
    once when some of ``rows`` trains on them and they are not there yet."""
    reg = spec.get("registration")
    if not reg:
        return
    reg_cmd = registration_command(reg)
    reg["command"] = _short(reg_cmd)
    if run and uses_coarse(spec, rows) and not (REPO_ROOT / reg["out_dir"] / "summary.json").exists():
        print(f"registration -> {reg['out_dir']}", flush=True)
        _run(reg_cmd, out / "logs" / "registration.log")


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


def _other_commands(result: dict[str, Any], train: list[str], test: list[str]) -> str:
    """``"training"``, ``"test"`` or ``"training and test"``: which of a recorded result's
    commands differ from the ones the spec makes now; ``""`` when both are the same."""
    other = [name for name, key, cmd in (("training", "train_command", train),
                                         ("test", "test_command", test))
             if result.get(key) != _short(cmd)]
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
                entry["seeds"].append(_with_curve(result))
            elif row["name"] in selected and seed in wanted and collect:
                print(f"{exp}: not finished, left out", flush=True)
            elif row["name"] in selected and seed in wanted:
                pending.append((entry, seed, exp, train, test, run_dir))
    return results, pending


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    spec_path = Path(a.spec)
    spec = read_spec(spec_path)
    rows = selected_rows(spec, a.rows)
    model_dir, out = Path(a.model_dir), Path(a.out)
    command = "python code/benchmark.py " + " ".join(
        shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))

    def finished() -> list[dict[str, Any]]:
        """Every finished run, read again: those another benchmark.py on the same
        ``--out_dir`` finished meanwhile too (its run folders, its results.json)."""
        with contextlib.redirect_stdout(io.StringIO()):  # the per-run lines of the scan
            return table_state(spec, set(), a.seeds, model_dir,
                               known_results(out, a.collect), True)[0]

    if a.status:
        with contextlib.redirect_stdout(io.StringIO()):
            every, pending = table_state(spec, {r["name"] for r in rows}, a.seeds, model_dir,
                                         known_results(out, a.collect), False)
        print_status(pending, every, "the selected rows" if a.rows else "the table")
        return 0
    if a.collect is None:  # a table that runs something keeps its scored list untouched
        check_isolation(spec, rows, f"--spec {spec_path}")
    not_held_out = isolation_problem(spec)  # the table holds every row: it says so, if any
    ensure_registration(spec, rows, out, run=a.collect is None)
    _, pending = table_state(spec, {r["name"] for r in rows}, a.seeds, model_dir,
                             known_results(out, a.collect), a.collect is not None)
    run_pending(pending, sorted({p[1] for p in pending}), a.jobs,
                lambda: write_outputs(spec, finished(), out, command, not_held_out), out,
                bool(spec.get("test_teacher")) or spec.get("headline") == "teacher")
    write_outputs(spec, finished(), out, command, not_held_out)
    print(f"wrote {out / 'results.md'}")
    return 0
