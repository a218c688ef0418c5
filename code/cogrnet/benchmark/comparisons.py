"""The pre-registered comparisons of a benchmark table: which model of a run is its
headline, and each comparison's paired difference of two rows over the scored cases
(:mod:`cogrnet.evaluation.compare`), target and verdict."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cogrnet.errors import ConfigError
from cogrnet.evaluation.compare import PairedDifference, case_differences, paired_difference
from cogrnet.methods.registry import has_teacher


def headline(method: str, teacher_first: bool) -> str:
    """The key of a row's headline scores: ``"teacher"`` for a teacher method's run when the
    spec's headline is the teacher (its scores ``mean_teacher`` / ``case_dice_teacher``),
    else ``""`` (``mean`` / ``case_dice``: the student, or the only model)."""
    return "teacher" if teacher_first and has_teacher(method) else ""


def scores(result: dict[str, Any], which: str) -> tuple[dict[str, float] | None,
                                                          dict[str, float] | None]:
    """``(mean metrics, Dice per case)`` of a run's ``which`` model (:func:`headline`)."""
    suffix = "_teacher" if which == "teacher" else ""
    return result.get("mean" + suffix), result.get("case_dice" + suffix)


@dataclass(frozen=True)
class Comparison:
    """One of a spec's ``comparisons``, as far as its rows are run: ``a - b`` with the
    pre-registered ``margin`` (``None``: secondary), the planned seeds scored case by case
    (``seeds``) and planned (``planned``) of each row, and, once both have a run, the
    paired difference ``diff`` of their headline models with its per-case differences
    ``cases``. ``judged`` False: the table's scored list is not held out, no verdict."""

    a: str
    b: str
    margin: float | None
    max_se: float | None
    seeds: tuple[int, int]
    planned: tuple[int, int]
    diff: PairedDifference | None = None
    cases: dict[str, float] = field(default_factory=dict)
    judged: bool = True

    @property
    def target(self) -> str:
        if self.margin is None:
            return "- (secondary)"
        return f"D ≥ {self.margin:+.2f}" + (f", SE ≤ {self.max_se}" if self.max_se else "")

    @property
    def verdict(self) -> str:
        """``not run yet``, ``open (...)`` until both rows have their planned seeds, then
        ``met`` or ``missed (...)`` naming the part missed (D below the target, SE above
        ``max_se``, or both); ``-`` for a secondary comparison."""
        if self.diff is None:
            return "not run yet"
        if self.margin is None:
            return "-"
        if not self.judged:
            return "no verdict (scored list not held out)"
        if short := self._seeds_short():
            return f"open ({', '.join(short)})"
        missed = self.shortfalls
        return f"missed ({'; '.join(missed)})" if missed else "met"

    def _seeds_short(self) -> list[str]:
        """``"row 2 of 5 seeds"`` for each row without all its planned seeds."""
        return [f"{name} {got} of {want} seeds" for name, got, want
                in zip((self.a, self.b), self.seeds, self.planned) if got < want]

    @property
    def shortfalls(self) -> list[str]:
        """What misses the target, each starting with ``D`` or ``SE`` (``"SE 0.0616 >
        0.012"``); empty unless the verdict is ``missed`` (met, secondary, not run, or open:
        nothing is judged before both rows have their planned seeds)."""
        d = self.diff
        if d is None or self.margin is None or not self.judged or self._seeds_short():
            return []
        if not np.isfinite(d.se) and self.max_se:  # e.g. one seed: the seed part is unknown
            se = (f"SE n/a > {self.max_se} (the seed part needs two seeds of each row)", True)
        else:
            se = (f"SE {d.se:.4f} > {self.max_se}", bool(self.max_se) and d.se > self.max_se)
        return [part for part, short_of in (
            (f"D {d.mean:+.4f} < {self.margin:+.2f}", not d.mean >= self.margin), se)
            if short_of]


def compare_rows(spec: dict[str, Any], results: list[dict[str, Any]],
                 judged: bool = True) -> list[Comparison]:
    """The spec's ``comparisons`` (``{"a": row, "b": row, "target": margin}``: the
    pre-registered target is mean(A - B) >= margin with a standard error of at most the
    spec's ``max_se``; ``"target": null`` for a secondary one) on the headline models of
    the finished runs (:mod:`cogrnet.evaluation.compare`); ``judged`` False: no verdicts
    (the scored list is not held out)."""
    teacher_first = spec.get("headline") == "teacher"
    by_name = {r["name"]: r for r in results}

    def planned(name: str) -> list[int]:
        row = next(r for r in spec["rows"] if r["name"] == name)
        return row.get("seeds", spec.get("seeds", [1337]))

    def runs(name: str) -> list[dict[str, float]]:
        """The per-case Dice of the row's headline model, one per planned seed that has
        it: a seed run beyond the plan never enters a pre-registered comparison."""
        r = by_name[name]  # the spec's rows (cogrnet.benchmark.spec checked the names)
        key = headline(r["method"], teacher_first)
        wanted = set(planned(name))
        return [c for c in (scores(s, key)[1] for s in r["seeds"] if s["seed"] in wanted) if c]

    out = []
    for c in spec.get("comparisons") or []:
        a, b = runs(c["a"]), runs(c["b"])
        diff, cases = None, {}
        if a and b:
            try:
                diff, cases = paired_difference(a, b), case_differences(a, b)
            except ValueError as err:
                raise ConfigError(f"comparison {c['a']} − {c['b']}: {err}") from None
        out.append(Comparison(c["a"], c["b"], c.get("target"), spec.get("max_se"),
                              (len(a), len(b)), (len(planned(c["a"])), len(planned(c["b"]))),
                              diff, cases, judged))
    return out


def comparison_table(comparisons: list[Comparison]) -> list[str]:
    """Markdown lines for the comparisons (:func:`compare_rows`): D, its standard error and
    its parts, the target and the verdict; empty without any."""
    if not comparisons:
        return []
    lines = ["", "Paired comparisons (pre-registered; headline models; *D* = mean over the "
             "scored cases of the per-case difference of the seed means, A − B; *SE* = "
             "sqrt(SE_cases² + SE_seeds²), SE_cases = sd of the per-case differences / "
             "sqrt(cases), SE_seeds² = var of A's per-seed means / seeds of A + the same for "
             "B; conservative, `cogrnet.evaluation.compare`):", "",
             "| A − B | cases | seeds A / B | D | SE | SE cases | SE seeds | target | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        d, name = c.diff, f"{c.a} − {c.b}"
        if d is None:
            lines.append(f"| {name} | - | {c.seeds[0]} / {c.seeds[1]} | - | - | - | - "
                         f"| {c.target} | {c.verdict} |")
            continue
        lines.append(f"| {name} | {d.cases} | {d.seeds_a} / {d.seeds_b} | {d.mean:+.4f} | "
                     f"{_num(d.se)} | {_num(d.se_cases)} | {_num(d.se_seeds)} | {c.target} "
                     f"| {c.verdict} |")
    return lines


def _num(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.4f}"
