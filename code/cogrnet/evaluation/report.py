"""Per-case rows -> console table, ``per_case.csv`` and ``summary.json``.

A row is a dict from :func:`cogrnet.evaluation.evaluate.score_prediction` (``case``,
``dice``, ``jaccard``, ``hd95``, ``asd``, maybe ``hd95_mm``/``asd_mm``,
``empty_prediction``) or a failed case ``{"case", "error"}``.

Summary policy: Dice/Jaccard means include every scored case (an empty prediction counts as
0). HD95/ASD are undefined (NaN) for an empty prediction; their means are over the cases
where they are defined, and ``empty_predictions`` says how many were left out. Standard
deviations are population ones (``ddof=0``). Failed cases are listed under ``failed`` and
are in no mean. NaN is written as ``null`` in JSON and as ``nan`` in the CSV.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..fileio import atomic_path, write_json_atomic
from .metrics import METRIC_NAMES

MM_NAMES = ("hd95_mm", "asd_mm")


def _metric_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    keys = list(METRIC_NAMES)
    if any(k in r for r in rows for k in MM_NAMES):
        keys += list(MM_NAMES)
    return keys


def _stat(values: list[float], fn) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(fn(vals)) if vals else None


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def summarize(rows: Sequence[dict[str, Any]], settings: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """The ``summary.json`` dict: ``mean``, ``std``, ``cases``, ``settings``,
    ``empty_predictions``, ``n_cases`` (scored), ``failed`` (list of ``{case, error}``)."""
    scored = [r for r in rows if "error" not in r]
    keys = _metric_keys(scored)
    mean = {k: _stat([r.get(k, math.nan) for r in scored], np.mean) for k in keys}
    std = {k: _stat([r.get(k, math.nan) for r in scored], np.std) for k in keys}
    return _clean({"mean": mean, "std": std, "cases": list(rows),
                   "settings": settings or {},
                   "empty_predictions": sum(bool(r.get("empty_prediction")) for r in scored),
                   "n_cases": len(scored),
                   "failed": [{"case": r["case"], "error": r["error"]}
                              for r in rows if "error" in r]})


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]], summary: dict[str, Any] | None = None) -> str:
    """A fixed-width table: one line per case, then mean and std lines."""
    summary = summary or summarize(rows)
    keys = _metric_keys([r for r in rows if "error" not in r])
    width = max([len("case")] + [len(str(r["case"])) for r in rows] + [4])
    head = f"{'case':<{width}}  " + "  ".join(f"{k:>9}" for k in keys)
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<{width}}  FAILED: {r['error']}")
            continue
        flag = "  (empty prediction)" if r.get("empty_prediction") else ""
        lines.append(f"{r['case']:<{width}}  "
                     + "  ".join(f"{_fmt(r.get(k)):>9}" for k in keys) + flag)
    lines.append("-" * len(head))
    for name in ("mean", "std"):
        lines.append(f"{name:<{width}}  "
                     + "  ".join(f"{_fmt(summary[name].get(k)):>9}" for k in keys))
    units = "Dice/Jaccard as fractions; hd95/asd in voxels" + (
        ", *_mm in mm" if any(k.endswith("_mm") for k in keys) else "")
    extra = [f"{summary['n_cases']} case(s)", units]
    if summary["empty_predictions"]:
        extra.append(f"{summary['empty_predictions']} empty prediction(s): Dice 0, "
                     "distances NaN (left out of the distance means)")
    if summary["failed"]:
        extra.append(f"{len(summary['failed'])} failed case(s)")
    lines.append("; ".join(extra))
    return "\n".join(lines)


def write_report(rows: Sequence[dict[str, Any]], out_dir: str | Path,
                 settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``per_case.csv`` and ``summary.json`` under ``out_dir`` (each atomically);
    return the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, settings)
    keys = _metric_keys([r for r in rows if "error" not in r])
    fields = ["case"] + keys + ["empty_prediction", "seconds", "error"]
    with atomic_path(out_dir / "per_case.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (_fmt(r[k], 6) if isinstance(r.get(k), float) else r.get(k, ""))
                             for k in fields})
    write_json_atomic(out_dir / "summary.json", summary)
    return summary
