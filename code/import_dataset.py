"""Import your own scans (NIfTI, NRRD, MHA) into the project's h5 dataset layout.

    python code/import_dataset.py --input_dir DIR --out_dir ROOT

DIR holds ``imagesTr/`` (``<ID>.nii.gz`` or nnU-Net's ``<ID>_0000.nii.gz``) and optionally
``labelsTr/`` (dense labels), ``annotationsTr/`` (label maps with two painted slices),
``imagesTs/`` and ``labelsTs/``. Writes ``ROOT/<ID>.h5`` (grid kept in its attributes),
``train.list`` (annotated cases first), ``test.list`` and ``import.json``. Nothing is
resampled unless ``--resample`` is given. A bad case is reported at the end and does not
stop the others; then no list is written and the exit status is 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from cogrnet.cli import add_debug, add_out_dir, parser
from cogrnet.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--input_dir", required=True,
                   help="folder holding imagesTr/ (+ labelsTr/, annotationsTr/, imagesTs/, "
                        "labelsTs/)")
    add_out_dir(p, "dataset root to write (h5 cases + lists)", required=True)
    p.add_argument("--label_value", type=int, default=None,
                   help="target value in multi-label maps (labels and annotations); default: "
                        "the one non-zero value of each map")
    p.add_argument("--segment", default=None, metavar="NAME",
                   help="instead of --label_value: the target segment's name in 3D Slicer "
                        ".seg.nrrd maps (default: a file's only segment)")
    p.add_argument("--resample", type=float, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
                   help="resample to this voxel size in mm (default: keep every grid as it is)")
    add_debug(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cogrnet.prepare.import_nifti import RECORD, import_dataset

    def report(rec: dict) -> None:
        if "error" in rec:
            return
        planes = (f"; painted planes axes {rec['axes']} at slices {rec['indices']}"
                  if rec.get("annotation") else "")
        print(f"{rec['split']} {rec['id']}: {tuple(rec['shape'])} voxels of "
              f"{', '.join(f'{s:g}' for s in rec['spacing'])} mm"
              f"{', dense label' if rec['label'] else ''}{planes}")

    summary = import_dataset(args.input_dir, args.out_dir, args.label_value, args.resample,
                             on_case=report, segment=args.segment)
    out = Path(args.out_dir)
    failed = summary["failed"]
    if failed:
        for rec in failed:
            print(f"error: {rec['error']}", file=sys.stderr)
        print(f"error: {len(failed)} of {len(summary['cases'])} case(s) failed; no list "
              f"written (see {out / RECORD})", file=sys.stderr)
        return 1
    cases = summary["cases"]
    n_train = sum(c["split"] == "train" for c in cases)
    print(f"imported {n_train} training and {len(cases) - n_train} test case(s) into {out}; "
          f"{summary['labelnum']} annotated case(s) lead train.list: use --labelnum "
          f"{summary['labelnum']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
