"""Segment your own 3D images (NIfTI, NRRD, MHA) with a trained checkpoint.

    python code/predict.py --checkpoint model/<exp>/best.pth --input scan.nii.gz \
        --output scan_mask.nii.gz
    python code/predict.py --checkpoint model/<exp>/best.pth --input DIR/imagesTs \
        --output PRED            # a folder: PRED/<ID>_mask.nii.gz each

Each mask is written as NIfTI on the input's grid (same size, spacing, origin, direction),
in the one axis convention of :mod:`cogrnet.inference.nifti`, so ``test.py --pred_dir PRED``
scores the masks directly. The scan gets the preprocessing the checkpoint records: the CT
window of KiTS/LiTS models, the normalisation the stored training images had (z-scored per
volume for LA/KiTS/LiTS, none for your own imported data), then the training run's
``--intensity``. The image should look like the training data (same modality and roughly
the same voxel size).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cogrnet.errors import ConfigError, DataError, run_cli, writable_dir  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Segment 3D images with a CoGRNet checkpoint.")
    p.add_argument("--checkpoint", required=True, help="checkpoint .pth")
    p.add_argument("--input", required=True, nargs="+",
                   help="image file(s) (.nii(.gz), .nrrd, .mha, .mhd) or folder(s) of them")
    p.add_argument("--output", required=True,
                   help="output .nii.gz for one input, or a folder (<ID>_mask.nii.gz each, "
                        "<ID> the file name without extension and nnU-Net's _0000)")
    p.add_argument("--ema", action="store_true", help="use the EMA teacher's weights")
    p.add_argument("--dataset", default=None,
                   help="preset for the default strides (default: the checkpoint's, else la)")
    p.add_argument("--stride_xy", type=int, default=None, help="in-plane stride (voxels)")
    p.add_argument("--stride_z", type=int, default=None, help="stride on Z (voxels)")
    p.add_argument("--overlap", type=float, default=None,
                   help="window overlap fraction in [0,1); overrides strides")
    p.add_argument("--mode", choices=("constant", "gaussian"), default="constant")
    p.add_argument("--sw_batch_size", type=int, default=4)
    p.add_argument("--nms", type=int, choices=(0, 1), default=1,
                   help="keep the largest connected component")
    p.add_argument("--normalize", choices=("zscore", "none"), default=None,
                   help="normalisation of the whole scan as the stored training images had "
                        "(default: the checkpoint's dataset: zscore for LA/KiTS/LiTS, none "
                        "for custom); the checkpoint's --intensity follows it")
    p.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="clip to [LO, HI] and scale to [0, 1] first (default: the KiTS/LiTS "
                        "models' Hounsfield window, none otherwise)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA mixed precision (default: on for CUDA)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """The image files of ``--input``: files as given, folders as their image files."""
    from cogrnet.data.import_nifti import image_files

    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = image_files(path)
            if not found:
                raise DataError(f"--input {path}: folder holds no image file (.nii.gz, .nii, "
                                ".nrrd, .mha)")
            files += found
        else:
            files.append(path)
    return files


def _output_paths(inputs: list[Path], output: str) -> list[Path]:
    from cogrnet.data.import_nifti import case_ids

    out = Path(output)
    is_file = out.name.endswith((".nii.gz", ".nii")) and not output.endswith(("/", "\\"))
    if len(inputs) > 1 and is_file:
        raise ConfigError("--output must be a folder when several --input files are given")
    paths = [out] if is_file else [out / f"{i}_mask.nii.gz" for i in case_ids(inputs)]
    if len(set(paths)) != len(paths):
        raise ConfigError("--input: two inputs share a name; give them separate runs")
    for path in paths:
        if path.is_dir():
            raise ConfigError(f"--output {path}: is a folder, not a mask file name")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from cogrnet.evaluation.evaluate import checkpoint_patch, load_model, segment_image
    from cogrnet.inference.nifti import read_image_xyz, write_mask_like
    from cogrnet.inference.settings import (inference_preset, inference_strides,
                                            scan_preprocessing)
    from cogrnet.runtime import resolve_device

    if args.sw_batch_size < 1:
        raise ConfigError(f"--sw_batch_size {args.sw_batch_size}: must be >= 1")
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap {args.overlap}: must be in [0, 1)")
    if args.window is not None and args.window[1] <= args.window[0]:
        raise ConfigError(f"--window {args.window[0]} {args.window[1]}: HI must be above LO")
    inputs = expand_inputs(args.input)
    outputs = _output_paths(inputs, args.output)
    for folder in dict.fromkeys(p.parent for p in outputs):  # before any work is done
        writable_dir(folder, "--output")
    device = resolve_device(args.device)
    model, ckpt = load_model(args.checkpoint, ema=args.ema, device=device)
    patch = checkpoint_patch(ckpt, args.checkpoint)
    preset = inference_preset(ckpt["config"], args.dataset)
    strides = None if args.overlap is not None else inference_strides(
        ckpt["config"], preset, args.stride_xy, args.stride_z, args.dataset is not None)
    prep = scan_preprocessing(ckpt["config"], preset, args.window, args.normalize)
    print(f"preprocessing: {prep.describe()}")
    amp = (device.type == "cuda") if args.amp is None else bool(args.amp)
    for src, dst in zip(inputs, outputs):
        image, ref = read_image_xyz(src)
        image = prep.apply(image)
        pred, _ = segment_image(model, image, patch, strides, args.overlap, device, amp,
                                bool(args.nms), args.mode, args.sw_batch_size)
        write_mask_like(pred, ref, dst)
        print(f"{src} -> {dst}  ({int((pred > 0).sum())} foreground voxels of {pred.size})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
