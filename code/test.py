"""Evaluate a checkpoint (or saved predictions) on a split: sliding-window inference,
Dice / Jaccard / HD95 / ASD per case, a console table, per_case.csv and summary.json.

    python code/test.py --root_path ROOT --split test --checkpoint model/<exp>/best.pth
    python code/test.py --root_path ROOT --split test --pred_dir DIR   # no model

See docs/EVALUATION.md for the protocol, the empty-prediction policy and timings. The work
is :func:`cogrnet.evaluation.evaluate_split`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cogrnet.cli import (add_dataset, add_lists_dir, add_out_dir, add_root_path,
                         add_run_switches, add_sliding_window, parser)
from cogrnet.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = parser("Sliding-window evaluation of a CoGRNet checkpoint on a dataset split.")
    add_root_path(p, "dataset root (h5 cases and lists) (default: the dataset preset's, e.g. "
                     "data/LA)")
    p.add_argument("--split", default="test", help="split name (test, val, ...) or list file")
    add_lists_dir(p, "folder with <split>.list when it is not under --root_path (default: the "
                     "dataset preset's)")
    add_dataset(p, "dataset preset (la, kits, lits, phantom, custom); default: the "
                   "checkpoint's, else custom for a root made by code/import_dataset.py, "
                   "else la")
    p.add_argument("--checkpoint", default=None, help="checkpoint .pth (not with --pred_dir)")
    p.add_argument("--pred_dir", default=None,
                   help="evaluate saved DIR/<ID>.nii.gz (as --save_nifti writes them) or "
                        "DIR/<ID>_mask.nii.gz (as predict.py does) against the labels, with "
                        "no model")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA teacher's weights")
    add_sliding_window(
        p, stride_xy="in-plane stride in voxels (default: the checkpoint's, else the preset's: "
                     "18 for LA)",
        stride_z="stride on axis 2 in voxels (default: the checkpoint's, else the preset's: 4 "
                 "for LA)",
        overlap="fast protocol: window overlap fraction in [0,1); overrides strides")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), default=None,
                   help="voxel size in mm of the (X, Y, Z) axes: also report HD95/ASD in mm "
                        "(LA: 0.625 0.625 0.625); default: each case's own, when its file "
                        "records one (code/import_dataset.py, code/preprocess.py)")
    p.add_argument("--save_nifti", action="store_true",
                   help="write <out_dir>/pred/<ID>.nii.gz on the case's grid (readable by "
                        "--pred_dir)")
    p.add_argument("--save_png", action="store_true",
                   help="write <out_dir>/png/<ID>.png: three slices with contours")
    add_out_dir(p, default=None, help="output folder (default: <checkpoint dir>/test_<split>, or "
                        "<pred_dir>/eval_<split>)")
    add_run_switches(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cogrnet.evaluation import evaluate_split, format_table
    from cogrnet.evaluation.run import EvaluationOutputs
    from cogrnet.inference import InferenceFlags

    result = evaluate_split(
        args.root_path, args.split, checkpoint=args.checkpoint, pred_dir=args.pred_dir,
        lists_dir=args.lists_dir, dataset=args.dataset,
        inference=InferenceFlags.from_args(args), spacing=args.spacing,
        outputs=EvaluationOutputs(args.out_dir, args.save_nifti, args.save_png),
        progress=not args.no_progress)
    out_dir, summary = result.out_dir, result.summary
    print(format_table(result.rows, summary))
    print(f"wrote {out_dir / 'per_case.csv'} and {out_dir / 'summary.json'}")
    failed = summary["failed"]
    if failed:
        for f in failed:
            print(f"error: case {f['case']}: {f['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
