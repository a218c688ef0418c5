"""Paired comparisons of two table rows over the same scored cases, with a standard error
that counts both sources of noise: which cases were scored and which seeds were run.

A row is a list of runs (one per seed), each a ``case ID -> Dice`` mapping. For rows A and
B scored on the same cases ``c = 1..C``, with ``nA`` and ``nB`` seeds:

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
    """``(runs, cases)`` array of the Dice values."""
    return np.array([[float(run[c]) for c in cases] for run in runs], dtype=float)


def _var_over_n(values: np.ndarray) -> float:
    """``var(values, ddof=1) / n``; NaN for fewer than two values."""
    n = len(values)
    return float(np.var(values, ddof=1) / n) if n > 1 else math.nan


def common_cases(*rows: Sequence[Run]) -> list[str]:
    """The case IDs every run of every row scored, sorted."""
    sets = [set(run) for runs in rows for run in runs]
    return sorted(set.intersection(*sets)) if sets else []


def _common_matrices(a: Sequence[Run], b: Sequence[Run]) -> tuple[list[str], np.ndarray,
                                                                    np.ndarray]:
    """``(cases, A, B)``: the common cases and each row's ``(runs, cases)`` Dice; a
    ValueError when a row has no run or the rows share no case."""
    if not a or not b:
        raise ValueError("each row needs at least one run")
    cases = common_cases(a, b)
    if not cases:
        raise ValueError("the two rows share no scored case")
    return cases, _matrix(a, cases), _matrix(b, cases)


def case_differences(a: Sequence[Run], b: Sequence[Run]) -> dict[str, float]:
    """``d_c`` of the module docstring: for each common case, A's seed mean minus B's."""
    cases, ma, mb = _common_matrices(a, b)
    return dict(zip(cases, (ma.mean(0) - mb.mean(0)).tolist()))


def paired_difference(a: Sequence[Run], b: Sequence[Run]) -> PairedDifference:
    """Row A minus row B over their common cases (module docstring for the formulas).
    A ValueError when a row has no run or the rows share no case."""
    cases, ma, mb = _common_matrices(a, b)
    d = ma.mean(0) - mb.mean(0)
    var_cases = _var_over_n(d)
    var_seeds = _var_over_n(ma.mean(1)) + _var_over_n(mb.mean(1))
    return PairedDifference(float(d.mean()), math.sqrt(var_cases + var_seeds),
                            math.sqrt(var_cases), math.sqrt(var_seeds), len(cases),
                            len(a), len(b))


def seed_gap(first: Sequence[Run], second: Sequence[Run]) -> tuple[float, float, int]:
    """``(mean, se, n)`` of the per-seed difference ``first - second`` of the case means,
    for two scorings of the same runs (e.g. the EMA teacher and the student of each seed):
    the seeds are paired, ``se`` is over the seeds (NaN with one)."""
    if len(first) != len(second) or not first:
        raise ValueError("the two scorings need the same runs, at least one")
    gaps = np.array([np.mean(list(x.values())) - np.mean(list(y.values()))
                     for x, y in zip(first, second)])
    return float(gaps.mean()), math.sqrt(_var_over_n(gaps)), len(gaps)
