"""Segment your own 3D images (NIfTI, NRRD, MHA) with a trained checkpoint.

    python code/predict.py --checkpoint model/<exp>/best.pth --input scan.nii.gz \
        --output scan_mask.nii.gz

Each mask is written as NIfTI on the input's grid (same size, spacing, origin, direction).

Axis convention: SimpleITK's ``GetArrayFromImage`` gives ``(Z, Y, X)``; the networks were
trained on ``(X, Y, Z)`` arrays (the LA h5 files), so the image is transposed to
``(X, Y, Z)`` before inference and the mask transposed back before writing. The image should
look like the training data (same modality, orientation and roughly the same voxel size);
intensities are z-scored per volume as in the LA preprocessing (``--window LO HI`` first
clips and scales to [0, 1] for CT, as the KiTS/LiTS presets do).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cogrnet.errors import ConfigError, run_cli, writable_dir  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Segment 3D images with a CoGRNet checkpoint.")
    p.add_argument("--checkpoint", required=True, help="checkpoint .pth")
    p.add_argument("--input", required=True, nargs="+", help="image file(s): .nii(.gz), "
                   ".nrrd, .mha, .mhd")
    p.add_argument("--output", required=True,
                   help="output .nii.gz for one input, or a folder (<name>_mask.nii.gz each)")
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
    p.add_argument("--normalize", choices=("zscore", "none"), default="zscore",
                   help="intensity normalisation of the whole input scan (zscore: as the LA "
                        "h5 files were made, before their crop)")
    p.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="clip to [LO, HI] and scale to [0, 1] before normalising (CT)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA mixed precision (default: on for CUDA)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def _output_paths(inputs: list[str], output: str) -> list[Path]:
    out = Path(output)
    is_file = out.name.endswith((".nii.gz", ".nii")) and not output.endswith(("/", "\\"))
    if len(inputs) > 1 and is_file:
        raise ConfigError("--output must be a folder when several --input files are given")
    paths = [out] if is_file else []
    for src in [] if is_file else inputs:
        name = Path(src).name
        for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
            if name.endswith(ext):
                name = name[: -len(ext)]
                break
        paths.append(out / f"{name}_mask.nii.gz")
    if len(set(paths)) != len(paths):
        raise ConfigError("--input: two inputs share a name; give them separate runs")
    for path in paths:
        if path.is_dir():
            raise ConfigError(f"--output {path}: is a folder, not a mask file name")
    return paths


def normalize(image, mode: str, window: Sequence[float] | None):
    """``(X, Y, Z)`` float32 image -> the intensities the network was trained on."""
    import numpy as np

    image = image.astype(np.float32)
    if window is not None:
        lo, hi = window
        if hi <= lo:
            raise ConfigError(f"--window {lo} {hi}: HI must be above LO")
        image = (np.clip(image, lo, hi) - lo) / (hi - lo)
    from cogrnet.data.dataset import normalize_intensity

    return normalize_intensity(image.astype(np.float32), mode)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from cogrnet.config import get_preset
    from cogrnet.evaluation.evaluate import checkpoint_patch, load_model, segment_image
    from cogrnet.inference.nifti import read_image_xyz, write_mask_like
    from cogrnet.runtime import resolve_device

    if args.sw_batch_size < 1:
        raise ConfigError(f"--sw_batch_size {args.sw_batch_size}: must be >= 1")
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap {args.overlap}: must be in [0, 1)")
    outputs = _output_paths(args.input, args.output)
    for folder in dict.fromkeys(p.parent for p in outputs):  # before any work is done
        writable_dir(folder, "--output")
    device = resolve_device(args.device)
    model, ckpt = load_model(args.checkpoint, ema=args.ema, device=device)
    patch = checkpoint_patch(ckpt, args.checkpoint)
    ds = ckpt["config"].get("dataset")
    preset = get_preset(args.dataset or (ds.get("name") if isinstance(ds, dict) else ds)
                        or "la")
    sxy = args.stride_xy if args.stride_xy is not None else preset.stride_xy
    sz = args.stride_z if args.stride_z is not None else preset.stride_z
    strides = None if args.overlap is not None else (sxy, sxy, sz)
    amp = (device.type == "cuda") if args.amp is None else bool(args.amp)
    for src, dst in zip(args.input, outputs):
        image, ref = read_image_xyz(src)
        image = normalize(image, args.normalize, args.window)
        pred, _ = segment_image(model, image, patch, strides, args.overlap, device, amp,
                                bool(args.nms), args.mode, args.sw_batch_size)
        write_mask_like(pred, ref, dst)
        print(f"{src} -> {dst}  ({int((pred > 0).sum())} foreground voxels of {pred.size})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
