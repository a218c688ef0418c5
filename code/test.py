"""Evaluate a checkpoint (or saved predictions) on a split: sliding-window inference,
Dice / Jaccard / HD95 / ASD per case, a console table, per_case.csv and summary.json.

    python code/test.py --root_path ROOT --split test --checkpoint model/<exp>/best.pth
    python code/test.py --root_path ROOT --split test --pred_dir DIR   # no model

See docs/EVALUATION.md for the protocol, the empty-prediction policy and timings.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cogrnet.errors import ConfigError, DataError, run_cli, writable_dir  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Sliding-window evaluation of a CoGRNet checkpoint on a dataset split.")
    p.add_argument("--root_path", required=True, help="dataset root (h5 cases and lists)")
    p.add_argument("--split", default="test", help="split name (test, val, ...) or list file")
    p.add_argument("--lists_dir", default=None,
                   help="folder with <split>.list when it is not under --root_path "
                        "(default: the dataset preset's)")
    p.add_argument("--dataset", default=None,
                   help="dataset preset (la, kits, lits, phantom, custom); default: the "
                        "checkpoint's, else la")
    p.add_argument("--checkpoint", default=None, help="checkpoint .pth (not with --pred_dir)")
    p.add_argument("--pred_dir", default=None,
                   help="evaluate saved DIR/<ID>.nii.gz (as --save_nifti writes them) or "
                        "DIR/<ID>_mask.nii.gz (as predict.py does) against the labels, with "
                        "no model")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA teacher's weights")
    p.add_argument("--stride_xy", type=int, default=None,
                   help="in-plane stride in voxels (default: the checkpoint's, else the "
                        "preset's: 18 for LA)")
    p.add_argument("--stride_z", type=int, default=None,
                   help="stride on axis 2 in voxels (default: the checkpoint's, else the "
                        "preset's: 4 for LA)")
    p.add_argument("--overlap", type=float, default=None,
                   help="fast protocol: window overlap fraction in [0,1); overrides strides")
    p.add_argument("--mode", choices=("constant", "gaussian"), default="constant",
                   help="window weighting (constant = the paper's plain average)")
    p.add_argument("--sw_batch_size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--nms", type=int, choices=(0, 1), default=1,
                   help="keep the largest connected component (1, default) or not (0)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), default=None,
                   help="voxel size in mm of the (X, Y, Z) axes: also report HD95/ASD in mm "
                        "(LA: 0.625 0.625 0.625); default: each case's own, when its file "
                        "records one (code/import_dataset.py, code/preprocess.py)")
    p.add_argument("--save_nifti", action="store_true",
                   help="write <out_dir>/pred/<ID>.nii.gz on the case's grid (readable by "
                        "--pred_dir)")
    p.add_argument("--save_png", action="store_true",
                   help="write <out_dir>/png/<ID>.png: three slices with contours")
    p.add_argument("--out_dir", default=None,
                   help="output folder (default: <checkpoint dir>/test_<split>, or "
                        "<pred_dir>/eval_<split>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="CUDA mixed precision (default: on for CUDA)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def prediction_file(pred_dir: Path, case_id: str) -> Path:
    """``pred_dir/<ID>.nii.gz`` (test.py --save_nifti), else ``<ID>_mask.nii.gz``
    (predict.py); the first name when neither exists (its reader reports it missing)."""
    first = pred_dir / f"{case_id}.nii.gz"
    second = pred_dir / f"{case_id}_mask.nii.gz"
    return second if not first.is_file() and second.is_file() else first


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from cogrnet.data.dataset import CaseStore, find_list
    from cogrnet.evaluation import evaluate_model, format_table, score_prediction, write_report
    from cogrnet.evaluation.evaluate import checkpoint_patch, load_model
    from cogrnet.inference import strides_from_overlap
    from cogrnet.inference.settings import inference_preset, inference_strides
    from cogrnet.runtime import resolve_device

    if (args.checkpoint is None) == (args.pred_dir is None):
        raise ConfigError("give exactly one of --checkpoint and --pred_dir")
    if args.sw_batch_size < 1:
        raise ConfigError(f"--sw_batch_size {args.sw_batch_size}: must be >= 1")
    for name in ("stride_xy", "stride_z"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name} {getattr(args, name)}: must be >= 1")
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap {args.overlap}: must be in [0, 1)")
    if args.spacing is not None and min(args.spacing) <= 0:
        raise ConfigError(f"--spacing {args.spacing}: values must be > 0")
    if args.pred_dir is not None and not Path(args.pred_dir).is_dir():
        raise DataError(f"--pred_dir {args.pred_dir}: folder not found")

    ckpt = None
    model = None
    device = resolve_device(args.device)
    if args.checkpoint is not None:
        model, ckpt = load_model(args.checkpoint, ema=args.ema, device=device)
    preset = inference_preset(ckpt["config"] if ckpt is not None else None, args.dataset)
    num_classes = (int(ckpt["config"]["network"].get("num_classes", preset.num_classes))
                   if ckpt is not None else preset.num_classes)
    lists_dir = args.lists_dir if args.lists_dir is not None else preset.lists_dir
    # the checkpoint's intensity normalisation; predictions scored from files need none
    intensity = ckpt["config"].get("intensity", "none") if ckpt is not None else "none"
    store = CaseStore(args.root_path, num_classes=num_classes, intensity=intensity)
    ids = store.split(args.split, lists_dir)
    list_file = find_list(args.root_path, args.split, lists_dir)
    split_name = Path(args.split).stem if Path(args.split).suffix else args.split

    if args.out_dir is not None:
        out_dir = Path(args.out_dir)
    elif args.checkpoint is not None:
        out_dir = Path(args.checkpoint).resolve().parent / f"test_{split_name}"
    else:
        out_dir = Path(args.pred_dir) / f"eval_{split_name}"
    writable_dir(out_dir, "--out_dir")  # before the inference, not after it
    spacing = tuple(args.spacing) if args.spacing else None
    case_spacing = spacing is None  # then each case's recorded spacing, where there is one

    def mm_spacing(case):
        return spacing if spacing is not None else case.spacing

    settings = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                "root_path": str(args.root_path), "split": args.split,
                "list_file": str(list_file), "dataset": preset.name,
                "num_classes": num_classes, "intensity": intensity,
                "spacing_mm": list(spacing) if spacing else "per case, where recorded",
                "distance_unit": "voxel (and mm in *_mm: from --spacing, else where the case "
                                 "records its spacing)"}

    if args.pred_dir is not None:
        from cogrnet.evaluation.evaluate import error_text, require_scorable
        from cogrnet.inference.nifti import read_prediction

        settings.update({"pred_dir": str(args.pred_dir), "postprocessing": "none (as saved)"})
        rows = []
        iterator = ids
        if not args.no_progress:
            from tqdm import tqdm

            iterator = tqdm(ids, desc="cases", unit="case", dynamic_ncols=True)
        for case_id in iterator:
            try:
                case = store.get(case_id, with_label=True)
                require_scorable(case)
                pred = read_prediction(prediction_file(Path(args.pred_dir), case_id),
                                       case.label.shape, num_classes, case.geometry)
                rows.append(score_prediction(case_id, pred, case.label, num_classes,
                                             mm_spacing(case)))
            except Exception as err:  # noqa: BLE001 - one bad case must not stop the rest
                rows.append({"case": case_id, "error": error_text(err)})
    else:
        assert model is not None and ckpt is not None
        patch = checkpoint_patch(ckpt, args.checkpoint)
        strides = None if args.overlap is not None else inference_strides(
            ckpt["config"], preset, args.stride_xy, args.stride_z, args.dataset is not None)
        amp = (device.type == "cuda") if args.amp is None else bool(args.amp)
        settings.update({
            "checkpoint": str(args.checkpoint), "weights": "ema" if args.ema else "student",
            "iteration": ckpt.get("iteration"), "stage": ckpt.get("stage"),
            "network": ckpt["config"]["network"], "patch_size": list(patch),
            "strides": list(strides or strides_from_overlap(patch, args.overlap)),
            "overlap": args.overlap,
            "protocol": "fast (overlap)" if strides is None else "paper (strides)",
            "mode": args.mode, "sw_batch_size": args.sw_batch_size, "nms": bool(args.nms),
            "device": str(device), "amp": amp})

        def save(case, pred, prob) -> None:
            if args.save_nifti:
                from cogrnet.inference.nifti import write_prediction

                write_prediction(pred, out_dir / "pred" / f"{case.case_id}.nii.gz", spacing,
                                 case.geometry)
            if args.save_png:
                from cogrnet.evaluation.figures import save_case_png

                save_case_png(case.image, case.label, pred,
                              out_dir / "png" / f"{case.case_id}.png", title=case.case_id)

        rows = evaluate_model(model, store, ids, patch, strides, num_classes, device=device,
                              amp=amp, nms=bool(args.nms), mode=args.mode,
                              sw_batch_size=args.sw_batch_size, overlap=args.overlap,
                              spacing=spacing, case_spacing=case_spacing, callback=save,
                              catch_errors=True,
                              progress=not args.no_progress)

    summary = write_report(rows, out_dir, settings)
    print(format_table(rows, summary))
    print(f"wrote {out_dir / 'per_case.csv'} and {out_dir / 'summary.json'}")
    failed = summary["failed"]
    if failed:
        for f in failed:
            print(f"error: case {f['case']}: {f['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
