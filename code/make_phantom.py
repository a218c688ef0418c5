"""Generate the synthetic phantom dataset (the demo's and the tests' data).

    python code/make_phantom.py --out_dir data/phantom --n_train 16 --n_test 4 --seed 0
    python code/make_phantom.py --layout nifti --out_dir data/my_scans   # scans as a user brings them

``--layout nifti`` writes imagesTr/ (nnU-Net names), annotationsTr/ (two painted slices of
the first --n_annotated scans), labelsTr/ (one dense label), imagesTs/ and labelsTs/ as
NIfTI with anisotropic voxels and a non-identity direction, for code/import_dataset.py.
"""
from __future__ import annotations

import argparse
import sys

from cogrnet.cli import add_debug, add_out_dir, parser
from cogrnet.errors import run_cli
from cogrnet.prepare.phantom import make_phantom_set


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    add_out_dir(p, "output root folder", "--out", dest="out", default="data/phantom")
    p.add_argument("--n_train", type=int, default=16, help="training cases")
    p.add_argument("--n_test", type=int, default=4, help="test cases")
    p.add_argument("--shape", type=int, nargs=3, default=(72, 64, 40), metavar=("X", "Y", "Z"),
                   help="base shape")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--layout", choices=("uamt", "flat", "nifti"), default="uamt",
                   help="uamt: the UA-MT folders (<ID>/mri_norm2.h5), flat: <ID>.h5, "
                        "nifti: scans as a user brings them")
    p.add_argument("--n_annotated", type=int, default=3,
                   help="--layout nifti: training scans with two painted slices")
    add_debug(p)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.layout == "nifti":
        from cogrnet.prepare.phantom import make_nifti_set

        ids = make_nifti_set(a.out, a.n_train, a.n_annotated, 1, a.n_test, a.shape, seed=a.seed)
        print(f"wrote {len(ids)} phantom scans as NIfTI to {a.out} ({a.n_train} train, "
              f"{a.n_annotated} of them annotated, {a.n_test} test)")
        return 0
    ids = make_phantom_set(a.out, a.n_train, a.n_test, a.shape, seed=a.seed, layout=a.layout)
    print(f"wrote {len(ids)} phantom cases to {a.out} ({a.n_train} train, {a.n_test} test)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
