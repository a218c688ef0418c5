"""Per-case intensity statistics of a dataset split, to spot scans whose intensities are far
from the rest: the library behind ``code/utils/intensity_stats.py``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .dataset import CaseStore


def case_stats(image: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Mean/std of ``image``, its mean inside/outside ``label > 0`` and their contrast in std
    units (NaN where the label is empty or full)."""
    fg, bg = label > 0, label == 0
    std = float(image.std())
    fg_mean = float(image[fg].mean()) if fg.any() else float("nan")
    bg_mean = float(image[bg].mean()) if bg.any() else float("nan")
    return {"mean": float(image.mean()), "std": std, "fg_mean": fg_mean, "bg_mean": bg_mean,
            "contrast": (fg_mean - bg_mean) / std if std > 0 else float("nan")}


def flag_outliers(stds: list[float], low: float = 0.5, high: float = 2.0) -> list[bool]:
    """True where a standard deviation is below ``low`` or above ``high`` times the median."""
    med = float(np.median(stds))
    return [s < low * med or s > high * med for s in stds]


def split_intensity_stats(root_path: str | Path, split: str = "train",
                          lists_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per case of ``split``: ``case`` and :func:`case_stats`, plus ``outlier``
    (:func:`flag_outliers` over the split's standard deviations)."""
    store = CaseStore(root_path, cache=False)
    rows = []
    for case_id in store.split(split, lists_dir):
        case = store.get(case_id, with_label=True)
        rows.append({"case": case_id, **case_stats(case.image, case.label)})
    for r, f in zip(rows, flag_outliers([r["std"] for r in rows])):
        r["outlier"] = f
    return rows
