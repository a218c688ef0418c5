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

try:
    import cogrnet  # noqa: F401  (nothing else: a script outside code/ needs the install)
except ImportError:
    sys.exit("cogrnet is not installed: run `make setup` or `pip install -e .`")
import numpy as np  # noqa: E402

# case_stats and flag_outliers: the per-case numbers and the flag, importable from here too
from cogrnet.data.intensity_stats import (case_stats, flag_outliers,  # noqa: E402,F401
                                          split_intensity_stats)
from cogrnet.cli import add_debug, parser  # noqa: E402
from cogrnet.errors import run_cli  # noqa: E402
from cogrnet.fileio import write_json_atomic  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--root_path", required=True, help="dataset root (h5 cases and lists)")
    p.add_argument("--split", default="train", help="split name or list file")
    p.add_argument("--lists_dir", default=None,
                   help="extra folder with <split>.list (default: none, the root's)")
    p.add_argument("--json", default=None,
                   help="also write the rows to this JSON file (default: none)")
    add_debug(p)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    rows = split_intensity_stats(a.root_path, a.split, a.lists_dir)
    flags = [r["outlier"] for r in rows]
    print(f"{'case':<24}{'mean':>8}{'std':>8}{'fg mean':>9}{'bg mean':>9}{'contrast':>10}")
    for r, f in zip(rows, flags):
        print(f"{r['case']:<24}{r['mean']:8.3f}{r['std']:8.3f}{r['fg_mean']:9.3f}"
              f"{r['bg_mean']:9.3f}{r['contrast']:10.2f}{'  <- std far from the median' if f else ''}")
    print(f"{len(rows)} case(s); median std {np.median([r['std'] for r in rows]):.3f}; "
          f"{sum(flags)} flagged")
    if a.json:
        write_json_atomic(a.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
