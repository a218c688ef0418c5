"""Paired comparisons of two table rows over the same scored cases, with a standard error
that counts both sources of noise: which cases were scored and which seeds were run.

A row is a list of runs (one per seed), each a ``case ID -> Dice`` mapping. For rows A and
B scored on the same cases ``c = 1..C`` (every run of both: a comparison refuses runs
that scored different cases, or a case without a Dice), with ``nA`` and ``nB`` seeds:

- ``d_c = mean_s A[s, c] - mean_s B[s, c]`` (the per-case difference of the seed means) and
  the estimate ``D = mean_c d_c``;
- ``se_cases^2 = var_c(d_c) / C`` (sample variance, ddof 1): how much ``D`` would move with
  other cases;
- ``se_seeds^2 = var_s(a_s) / nA + var_s(b_s) / nB`` with ``a_s`` the mean over the cases
  of run ``s``: how much it would move with other seeds (undefined with one seed);
- ``se = sqrt(se_cases^2 + se_seeds^2)``. The case-by-seed noise enters both terms, so
  ``se`` errs on the large side (conservative).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

Run = Mapping[str, float]  # case ID -> Dice of one seed


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` = D (A minus B), its ``se`` and the two parts (NaN where undefined)."""

    mean: float
    se: float
    se_cases: float
    se_seeds: float
    cases: int
    seeds_a: int
    seeds_b: int


def _matrix(runs: Sequence[Run], cases: list[str]) -> np.ndarray:
    """``(runs, cases)`` array of the Dice values; a ValueError naming the case when one is
    not a number (a case a run failed to score must not drop out of a comparison)."""
    out = np.full((len(runs), len(cases)), np.nan)
    for i, run in enumerate(runs):
        for j, case in enumerate(cases):
            value = run[case]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value):
                raise ValueError(f"case {case} has no Dice ({value!r}) in run {i + 1}")
            out[i, j] = value
    return out


def _var_over_n(values: np.ndarray) -> float:
    """``var(values, ddof=1) / n``; NaN for fewer than two values."""
    n = len(values)
    return float(np.var(values, ddof=1) / n) if n > 1 else math.nan


def scored_cases(*rows: Sequence[Run]) -> list[str]:
    """The case IDs that every run of every row scored, sorted; a ValueError naming a case
    when the runs did not all score the same cases (comparing on the cases they share would
    drop, unseen, the cases some run lacks)."""
    sets = [(set(run), k, i) for k, runs in enumerate(rows) for i, run in enumerate(runs)]
    if not sets:
        return []
    every = set.union(*(s for s, _, _ in sets))
    for cases, k, i in sets:
        if missing := sorted(every - cases):
            raise ValueError(f"run {i + 1} of row {'AB'[k] if len(rows) == 2 else k + 1} "
                             f"did not score {len(missing)} case(s) the others did (e.g. "
                             f"{missing[0]}): the runs must score the same cases")
    return sorted(every)


def _case_matrices(a: Sequence[Run], b: Sequence[Run]) -> tuple[list[str], np.ndarray,
                                                                  np.ndarray]:
    """``(cases, A, B)``: the scored cases (:func:`scored_cases`) and each row's
    ``(runs, cases)`` Dice; a ValueError when a row has no run, the runs scored different
    cases or none, or a Dice is missing."""
    if not a or not b:
        raise ValueError("each row needs at least one run")
    cases = scored_cases(a, b)
    if not cases:
        raise ValueError("the two rows scored no case")
    return cases, _matrix(a, cases), _matrix(b, cases)


def case_differences(a: Sequence[Run], b: Sequence[Run]) -> dict[str, float]:
    """``d_c`` of the module docstring: for each scored case, A's seed mean minus B's."""
    cases, ma, mb = _case_matrices(a, b)
    return dict(zip(cases, (ma.mean(0) - mb.mean(0)).tolist()))


def paired_difference(a: Sequence[Run], b: Sequence[Run]) -> PairedDifference:
    """Row A minus row B over their scored cases (module docstring for the formulas).
    A ValueError when a row has no run, the runs did not all score the same cases, or a
    Dice is missing."""
    cases, ma, mb = _case_matrices(a, b)
    d = ma.mean(0) - mb.mean(0)
    var_cases = _var_over_n(d)
    var_seeds = _var_over_n(ma.mean(1)) + _var_over_n(mb.mean(1))
    return PairedDifference(float(d.mean()), math.sqrt(var_cases + var_seeds),
                            math.sqrt(var_cases), math.sqrt(var_seeds), len(cases),
                            len(a), len(b))


def seed_gap(first: Sequence[Run], second: Sequence[Run]) -> tuple[float, float, int]:
    """``(mean, se, n)`` of the per-seed difference ``first - second`` of the case means,
    for two scorings of the same runs (e.g. the EMA teacher and the student of each seed):
    the seeds are paired, ``se`` is over the seeds (NaN with one). A ValueError when the
    scorings differ in runs or in cases, or a Dice is missing."""
    if len(first) != len(second) or not first:
        raise ValueError("the two scorings need the same runs, at least one")
    cases = scored_cases(first, second)
    gaps = _matrix(first, cases).mean(1) - _matrix(second, cases).mean(1)
    return float(gaps.mean()), math.sqrt(_var_over_n(gaps)), len(gaps)
