"""Per-case intensity statistics of a dataset split, to spot scans whose intensities are far
from the rest (a network trained on raw intensities can miss them entirely; see
``--intensity zscore`` of code/train.py).

    python code/utils/intensity_stats.py --root_path data/LA_half --lists_dir data/LA --split val

Prints one row per case: image mean and standard deviation, the mean inside and outside the
label, and the contrast ``(fg mean - bg mean) / std``; ``--json`` also writes them. A case is
flagged when its standard deviation is below half or above twice the split's median.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from cogrnet.data.dataset import CaseStore  # noqa: E402
from cogrnet.errors import run_cli  # noqa: E402
from cogrnet.fileio import write_json_atomic  # noqa: E402


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_path", required=True)
    p.add_argument("--split", default="train", help="split name or list file")
    p.add_argument("--lists_dir", default=None)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    a = p.parse_args(argv)
    store = CaseStore(a.root_path, cache=False)
    rows = []
    for case_id in store.split(a.split, a.lists_dir):
        case = store.get(case_id, with_label=True)
        rows.append({"case": case_id, **case_stats(case.image, case.label)})
    flags = flag_outliers([r["std"] for r in rows])
    print(f"{'case':<24}{'mean':>8}{'std':>8}{'fg mean':>9}{'bg mean':>9}{'contrast':>10}")
    for r, f in zip(rows, flags):
        r["outlier"] = f
        print(f"{r['case']:<24}{r['mean']:8.3f}{r['std']:8.3f}{r['fg_mean']:9.3f}"
              f"{r['bg_mean']:9.3f}{r['contrast']:10.2f}{'  <- std far from the median' if f else ''}")
    print(f"{len(rows)} case(s); median std {np.median([r['std'] for r in rows]):.3f}; "
          f"{sum(flags)} flagged")
    if a.json:
        write_json_atomic(a.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
