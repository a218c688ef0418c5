"""The benchmark's outputs: ``results.md`` (the table, the comparisons, the Dice per case,
the commands), ``results.json`` and the pictures (:func:`write_outputs`)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from cogrnet.benchmark.comparisons import compare_rows, comparison_table, headline, scores
from cogrnet.benchmark.figures import plot_case_dice, plot_comparisons, plot_val_curves
from cogrnet.benchmark.results import missing_seeds, wall_minutes
from cogrnet.errors import ConfigError
from cogrnet.evaluation.compare import seed_gap
from cogrnet.evaluation.metrics import METRIC_NAMES
from cogrnet.fileio import write_json_atomic, write_text_atomic

def _summary(values: list[float]) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return "n/a"
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def _main_table(results: list[dict[str, Any]], teacher_first: bool) -> list[str]:
    """The table's rows: the headline model's metrics (:func:`~.comparisons.headline`), the
    per-seed Dice, the other model's Dice and, for teacher-first tables, the teacher-student
    gap."""
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
        walls = wall_minutes(r)
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
             "the CPU a run is bit-reproducible only at the same count, on the same kind of "
             "machine):", "",
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
