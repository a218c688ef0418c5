"""Evaluate a checkpoint (or saved predictions) on a split: sliding-window inference,
Dice / Jaccard / HD95 / ASD per case, a console table, per_case.csv and summary.json.

    python code/test.py --root_path ROOT --split test --checkpoint model/<exp>/best.pth
    python code/test.py --root_path ROOT --split test --pred_dir DIR   # no model

See docs/EVALUATION.md for the protocol, the empty-prediction policy and timings. The work
is :func:`cogrnet.evaluation.evaluate_split`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from cogrnet.errors import run_cli
from cogrnet.evaluation.run import build_parser


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
