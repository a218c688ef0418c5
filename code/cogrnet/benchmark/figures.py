"""The pictures of a benchmark table: validation Dice over iterations, the Dice of each
scored case for every row, and the pre-registered comparisons (per-case differences, D and
its standard error against the target)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cogrnet.benchmark.comparisons import Comparison, headline
from cogrnet.plotting import figure, save_figure


def mean_curve(curves: Sequence[dict[str, list]]) -> tuple[list[int], list[float]]:
    """``(iterations, mean Dice)`` over the seeds' curves (``{"iterations", "dice"}``) at
    the iterations every one of them recorded; empty lists when they share none."""
    by_seed = [dict(zip(c["iterations"], c["dice"])) for c in curves]
    shared = sorted(set.intersection(*(set(d) for d in by_seed))) if by_seed else []
    return shared, [float(np.mean([d[i] for d in by_seed])) for i in shared]


def plot_val_curves(curves: dict[str, list[dict[str, list]]], path: Path) -> Path:
    """One colour per row: each seed's validation Dice (the trainer's fast protocol) over
    iterations as a thin line, the mean over the seeds (:func:`mean_curve`) as a thick one,
    so a seed that drifts away from the others shows."""
    fig, ax = figure(1, (7.0, 4.2))
    for colour, (name, seeds) in zip(row_colours(len(curves)), curves.items()):
        for curve in seeds:
            ax.plot(curve["iterations"], curve["dice"], color=colour, alpha=0.35,
                    linewidth=0.8)
        its, dice = mean_curve(seeds)
        ax.plot(its, dice, color=colour, linewidth=2.0, marker=".",
                label=f"{name} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation Dice, student (fast protocol)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, "validation Dice during training: thin = each seed, "
                       "thick = mean over seeds", dpi=120)


def row_colours(n: int) -> list[Any]:
    """``n`` matplotlib colours, one per table row (tab10, tab20 beyond ten rows)."""
    import matplotlib.pyplot as plt  # callers made a figure(): the Agg backend is set

    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(k % cmap.N) for k in range(n)]


def seed_label(name: str, with_cases: int, seeds: int) -> str:
    """``"row (3 seeds)"``, or ``"row (2 of 3 seeds)"`` when some seeds have no per-case record."""
    counted = f"{with_cases} of {seeds}" if with_cases < seeds else str(seeds)
    return f"{name} ({counted} seed{'s' * (seeds > 1)})"


def _case_keys(method: str, teacher_first: bool) -> tuple[str, str]:
    """``(headline, other)``: the keys of a run's per-case Dice drawn filled and open."""
    if headline(method, teacher_first) == "teacher":
        return "case_dice_teacher", "case_dice"
    return "case_dice", "case_dice_teacher"


def plot_case_dice(results: list[dict[str, Any]], path: Path,
                   teacher_first: bool = False) -> Path:
    """Dice of each scored case (x) for each row, side by side within a case: a filled
    marker for the headline model's mean over the seeds (the EMA teacher of a teacher method
    when ``teacher_first``, else the student or the only model), small dots for its single
    seeds, an open diamond for the other model's mean where it was scored."""
    ids = sorted({c for r in results for s in r["seeds"] for key in ("case_dice",
                  "case_dice_teacher") for c in s.get(key) or {}})
    fig, ax = figure(1, (max(7.0, 1.1 * len(ids) + 3.0), 4.6))
    width = 0.8 / len(results)
    for k, (r, colour) in enumerate(zip(results, row_colours(len(results)))):
        x = np.arange(len(ids)) - 0.4 + width * (k + 0.5)
        main, other = _case_keys(r["method"], teacher_first)
        for key, filled in ((main, True), (other, False)):
            runs = [s[key] for s in r["seeds"] if s.get(key)]
            if not runs:
                continue
            per_seed = np.array([[run.get(c, np.nan) for c in ids] for run in runs])
            if filled:
                for values in per_seed:
                    ax.plot(x, values, ".", color=colour, alpha=0.45, markersize=4)
            ax.plot(x, np.nanmean(per_seed, axis=0), "o" if filled else "D", markersize=6,
                    color=colour, markerfacecolor=colour if filled else "none",
                    label=seed_label(r["name"], len(runs), len(r["seeds"])) if filled else None)
    ax.set_xticks(np.arange(len(ids)), [c[:6] for c in ids], fontsize=8)
    ax.set_xlim(-0.5, len(ids) - 0.5)
    for edge in np.arange(len(ids) - 1) + 0.5:
        ax.axvline(edge, color="0.85", linewidth=0.8)
    ax.set_ylabel("Dice")
    ax.set_xlabel("scored case (first 6 characters of its ID)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    title = ("Dice per case: filled = headline (a teacher method's EMA teacher), mean over "
             "seeds; dots = its single seeds; open diamond = the student, mean over seeds"
             if teacher_first else
             "Dice per case: filled = student, mean over seeds; dots = single seeds; open "
             "diamond = EMA teacher, mean over seeds")
    return save_figure(fig, path, title, dpi=120)


def _short_verdict(c: Comparison) -> str:
    """A comparison's verdict in a few words: ``met``, ``missed: SE``, ``open``."""
    if c.shortfalls:
        return "missed: " + ", ".join(part.split()[0] for part in c.shortfalls)
    return c.verdict.split(" (")[0]


def plot_comparisons(comparisons: Sequence[Comparison], path: Path) -> Path:
    """One line per comparison that has runs: the per-case differences A − B of the seed
    means (grey dots), their mean *D* (black) with ±1 and ±2 standard errors (thick and
    thin bars; the case part alone where the seed part is unknown, with one seed), zero,
    and the pre-registered margin (red tick) of a primary comparison."""
    shown = [c for c in comparisons if c.diff is not None]
    fig, ax = figure(1, (8.0, 0.75 * len(shown) + 1.6))
    for i, c in enumerate(shown):
        y = len(shown) - 1 - i
        d = np.array(sorted(c.cases.values()))
        ax.plot(d, y + np.linspace(-0.22, 0.22, len(d)), ".", color="0.55", markersize=4)
        se = c.diff.se if np.isfinite(c.diff.se) else c.diff.se_cases
        ax.errorbar(c.diff.mean, y, xerr=2 * se, fmt="none", ecolor="black", linewidth=0.8,
                    capsize=3)
        ax.errorbar(c.diff.mean, y, xerr=se, fmt="o", color="black", linewidth=2.5,
                    markersize=6)
        if c.margin is not None:
            ax.plot([c.margin, c.margin], [y - 0.35, y + 0.35], color="tab:red", linewidth=2)
    ax.axvline(0.0, color="0.6", linewidth=0.8)
    labels = [f"{c.a} − {c.b}\n{c.seeds[0]} / {c.seeds[1]} seeds"
              + ("" if np.isfinite(c.diff.se) else ", SE of cases only")
              + (f"; {_short_verdict(c)}" if c.margin is not None else "; secondary")
              for c in shown]
    ax.set_yticks(np.arange(len(shown))[::-1], labels, fontsize=8)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xlabel("Dice difference A − B (headline models)")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path, "Paired comparisons: grey = per case, black = D ± 1 SE "
                       "(thick) and ± 2 SE (thin), red = pre-registered margin", dpi=120)
