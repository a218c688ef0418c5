"""Segment your own 3D images (NIfTI, NRRD, MHA) with a trained checkpoint.

    python code/predict.py --checkpoint model/<exp>/best.pth --input scan.nii.gz \
        --out_dir scan_mask.nii.gz   # one input: a mask file name
    python code/predict.py --checkpoint model/<exp>/best.pth --input DIR/imagesTs \
        --out_dir PRED               # a folder: PRED/<ID>_mask.nii.gz each

Each mask is written as NIfTI on the input's grid (same size, spacing, origin, direction),
in the one axis convention of :mod:`cogrnet.data.nifti`, so ``test.py --pred_dir PRED``
scores the masks directly. The scan gets the preprocessing the checkpoint records: the CT
window of KiTS/LiTS models, the normalisation the stored training images had (z-scored per
volume for LA/KiTS/LiTS, none for your own imported data), then the training run's
``--intensity``. The image should look like the training data (same modality and roughly
the same voxel size). The work is :func:`cogrnet.inference.predict`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cogrnet.cli import add_dataset, add_out_dir, add_run_switches, add_sliding_window
from cogrnet.cli import parser
from cogrnet.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    p = parser("Segment 3D images with a CoGRNet checkpoint.")
    p.add_argument("--checkpoint", required=True, help="checkpoint .pth")
    p.add_argument("--input", required=True, nargs="+",
                   help="image file(s) (.nii(.gz), .nrrd, .mha, .mhd) or folder(s) of them")
    add_out_dir(p, "output folder (<ID>_mask.nii.gz each, <ID> the file name without "
                   "extension and nnU-Net's _0000), or for one input the mask's .nii.gz",
                "--output", "--out", dest="output", required=True)
    p.add_argument("--ema", action="store_true", help="use the EMA teacher's weights")
    add_dataset(p, "preset for the default strides (default: the checkpoint's, else la)")
    add_sliding_window(
        p, stride_xy="in-plane stride in voxels (default: the checkpoint's, else the preset's)",
        stride_z="stride on Z in voxels (default: the checkpoint's, else the preset's)",
        overlap="window overlap fraction in [0,1); overrides strides (default: none, the "
                "strides)")
    p.add_argument("--normalize", choices=("zscore", "none"), default=None,
                   help="normalisation of the whole scan as the stored training images had "
                        "(default: the checkpoint's dataset: zscore for LA/KiTS/LiTS, none "
                        "for custom); the checkpoint's --intensity follows it")
    p.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="clip to [LO, HI] and scale to [0, 1] first (default: the KiTS/LiTS "
                        "models' Hounsfield window, none otherwise)")
    add_run_switches(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cogrnet.inference import InferenceFlags, predict

    predict(args.checkpoint, args.input, args.output, InferenceFlags.from_args(args),
            dataset=args.dataset, normalize=args.normalize, window=args.window,
            progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
