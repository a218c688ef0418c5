"""Dual-Plane Annotation -> 3D coarse labels for the labeled cases of a split.

    python code/utils/registration.py --root_path ROOT --split train --labelnum N --out_dir DIR

Writes ``DIR/<ID>.h5`` (label, label_a, label_b, weight, annotation) per case, the fused
label also as ``DIR/<ID>.nii.gz`` on the image's grid and a picture ``DIR/png/<ID>.png``,
and ``DIR/summary.json``. ``--annotations`` reads ``<ID>.h5`` files or painted label maps
(``<ID>.nii.gz``, ``.nrrd``, ``.mha``: the two planes are found from the painted slices).
See docs/REGISTRATION.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

try:
    import cogrnet  # noqa: F401  (nothing else: a script outside code/ needs the install)
except ImportError:
    sys.exit("cogrnet is not installed: run `make setup` or `pip install -e .`")

import numpy as np  # noqa: E402

from cogrnet.annotation import (POLICIES, CaseTask, FusionParams,  # noqa: E402
                                RefineParams, check_axes, pool_quality,
                                process_case)
from cogrnet.annotation.propagate import parse_propagation  # noqa: E402
from cogrnet.annotation.refine import METHODS as REFINE_METHODS, check_refine  # noqa: E402
from cogrnet.annotation.figures import save_distance_png  # noqa: E402
from cogrnet.annotation.quality import calibration_text  # noqa: E402
from cogrnet.annotation.fuse import METHODS  # noqa: E402
from cogrnet.config import IMPORT_RECORD, PRESETS, dataset_for_root, get_preset  # noqa: E402
from cogrnet.data.dataset import CaseStore, find_list, read_list  # noqa: E402
from cogrnet.prepare.import_nifti import map_target, read_import_record  # noqa: E402
from cogrnet.errors import ConfigError, DataError, run_cli  # noqa: E402
from cogrnet.fileio import lock_folder, write_json_atomic  # noqa: E402
from cogrnet.parallel import run_cases  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from cogrnet.cli import (add_dataset, add_labelnum, add_lists_dir, add_out_dir,
                             add_root_path, add_run_switches, add_switch, add_workers, parser)

    p = parser("Turn two annotated orthogonal slices per labeled volume into 3D coarse "
               "labels (slice-chain registration of each plane, corrected by the other "
               "plane, then fused).")
    add_dataset(p, "preset giving the default root_path and axes (default: custom when "
                   "--root_path holds code/import_dataset.py's import.json, else la)",
                choices=sorted(PRESETS))
    add_root_path(p, "dataset root (default: the preset's)")
    p.add_argument("--split", default="train", help="split name or list-file path")
    add_lists_dir(p, "extra folder to look for <split>.list (default: the preset's)")
    add_labelnum(p, "the first N IDs of the split are labeled (default: the annotated cases "
                    "code/import_dataset.py recorded, else the preset's)")
    p.add_argument("--ids", nargs="+", default=None,
                   help="process these IDs instead (default: the split's labeled IDs)")
    add_out_dir(p, "output folder for <ID>.h5 + summary.json", required=True)
    add_workers(p, "processes over volumes")
    p.add_argument("--slice_policy", default="middle", choices=POLICIES,
                   help="simulated DPA: which slices (middle = LA reference, largest)")
    p.add_argument("--axes", type=int, nargs=2, default=None, metavar=("A", "B"),
                   help="annotated axes of planes A and B (default: the preset's, LA 2 1)")
    p.add_argument("--annotations", default=None,
                   help="folder of user annotations instead of simulating them from full "
                        "labels: painted label maps <ID>.nii.gz (.nrrd, .mha) on the image's "
                        "grid, or <ID>.h5 (key 'annotation' + attrs axes/indices) (default: "
                        "none, simulate)")
    p.add_argument("--label_value", type=int, default=None,
                   help="target value in multi-label painted maps (default: the one "
                        "code/import_dataset.py recorded, else the map's one non-zero value)")
    p.add_argument("--segment", default=None, metavar="NAME",
                   help="instead of --label_value: the target segment's name in 3D Slicer "
                        ".seg.nrrd maps (default: the one code/import_dataset.py recorded, "
                        "else a file's only segment)")
    add_switch(p, "previews", True, "also write <ID>.nii.gz (coarse label on the image's "
               "grid) and png/<ID>.png")
    p.add_argument("--fusion", default="sdf", choices=METHODS, help="plane fusion")
    p.add_argument("--refine", default=None, choices=REFINE_METHODS,
                   help="image-driven refinement of the fused label near its boundary: none, "
                        "or intensity (histograms of the annotated slices; docs/REGISTRATION.md)"
                        " (default: the preset's; la and phantom: intensity, others: none)")
    p.add_argument("--propagation", nargs="+", default=[], metavar="NAME=VALUE",
                   help="slice-chain settings (PropagationParams in "
                        "cogrnet/annotation/propagate.py), e.g. demons=diffeomorphic levels=2 "
                        "iterations=80 (default: as documented in docs/REGISTRATION.md)")
    p.add_argument("--no_cross", action="store_true",
                   help="ablation: do not correct/stop a plane with the other plane")
    p.add_argument("--seed", type=int, default=1337,
                   help="recorded; the pipeline itself has no randomness")
    add_run_switches(p, device=False, amp=False)
    return p


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 6) if vals else None


def _failed_case(task: CaseTask, reason: str) -> dict[str, Any]:
    """The record of a case whose worker failed (:func:`process_case` itself never raises)."""
    return {"id": task.case_id, "dice": None, "dice_a": None, "dice_b": None, "seconds": None,
            "cpu_seconds": None, "status": "failed", "reason": f"case '{task.case_id}': {reason}"}


def labeled_ids(args: argparse.Namespace, root: str, lists_dir: str | None,
                labelnum: int) -> list[str]:
    if args.ids:
        return list(dict.fromkeys(args.ids))
    ids = read_list(find_list(root, args.split, lists_dir))
    if labelnum < 1:
        raise ConfigError(f"--labelnum must be >= 1, got {labelnum}")
    if labelnum > len(ids):
        raise ConfigError(f"--labelnum {labelnum} is larger than split '{args.split}' "
                          f"({len(ids)} IDs)")
    return ids[:labelnum]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dataset = dataset_for_root(args.dataset, args.root_path, "la")
    preset = get_preset(dataset)
    root = args.root_path or preset.root_path
    if not root:
        raise ConfigError(f"--root_path is required with --dataset {dataset}")
    lists_dir = args.lists_dir or preset.lists_dir
    axes = check_axes(args.axes if args.axes is not None else preset.axes)
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.annotations and not Path(args.annotations).is_dir():
        raise DataError(f"--annotations: folder {args.annotations} not found")
    CaseStore(root)  # the root must exist
    record = read_import_record(root) or {}  # what code/import_dataset.py found
    labelnum = (args.labelnum if args.labelnum is not None
                else record.get("labelnum") or preset.labelnum)
    label_value, segment = map_target(record, args.label_value, args.segment)
    painted = record.get("labelnum")
    if args.annotations and not args.ids and painted is not None and labelnum > painted:
        raise ConfigError(f"--labelnum {labelnum}: the import recorded {painted} annotated "
                          f"scan(s) leading train.list ({Path(root) / IMPORT_RECORD}); use "
                          f"--labelnum {painted} or paint more scans and import again")
    ids = labeled_ids(args, root, lists_dir, labelnum)
    with lock_folder(args.out_dir, "--out_dir") as out_dir:  # one registration per folder
        prop, fusion = parse_propagation(args.propagation), FusionParams(method=args.fusion)
        # the preset's refinement needs the sdf fusion; another --fusion without --refine: none
        refine = RefineParams(method=args.refine or (preset.refine if fusion.method == "sdf"
                                                     else "none"))
        check_refine(refine, fusion)
        settings = {"dataset": dataset, "root_path": str(root), "split": args.split,
                    "labelnum": None if args.ids else labelnum, "ids": args.ids,
                    "slice_policy": None if args.annotations else args.slice_policy,
                    "axes": "from annotations" if args.annotations else list(axes),
                    "annotations": args.annotations, "label_value": label_value,
                    "segment": segment,
                    "workers": args.workers, "seed": args.seed,
                    "cross_plane": not args.no_cross, "propagation": prop.to_dict(),
                    "fusion": fusion.to_dict(), "refine": refine.to_dict()}
        tasks = [CaseTask(case_id=i, root=str(root), out_dir=str(out_dir), axes=axes,
                          policy=args.slice_policy, annotations=args.annotations, prop=prop,
                          fusion=fusion, refine=refine, use_cross=not args.no_cross, seed=args.seed,
                          label_value=label_value, previews=args.previews, segment=segment)
                 for i in ids]

        results = run_cases(process_case, tasks, args.workers, "registration",
                            key=lambda t: t.case_id, failure=_failed_case,
                            progress=not args.no_progress)

        cases = [results[i] for i in ids]
        ok = [c for c in cases if c["status"] == "ok"]
        summary = {"cases": cases,
                   "mean_dice": _mean([c["dice"] for c in ok]),
                   "mean_dice_a": _mean([c["dice_a"] for c in ok]),
                   "mean_dice_b": _mean([c["dice_b"] for c in ok]),
                   "seconds_per_case": _mean([c["seconds"] for c in ok]),
                   "cpu_seconds_per_case": _mean([c.get("cpu_seconds") for c in ok]),
                   "quality": pool_quality([c.get("quality") for c in ok]),
                   "settings": settings}
        write_json_atomic(out_dir / "summary.json", summary)
        if summary["quality"] is not None:
            save_distance_png(summary["quality"], out_dir / "dice_vs_distance.png",
                              f"{len(ok)} case(s) of {root}: Dice by distance from the annotation")
            print(calibration_text(summary["quality"]))
        scored = ("no dense labels to score against" if summary["mean_dice"] is None
                  else f"mean Dice against the dense labels {summary['mean_dice']}")
        print(f"{len(ok)}/{len(cases)} case(s) ok; {scored}; "
              f"{summary['seconds_per_case']} s per case ({summary['cpu_seconds_per_case']} CPU s) "
              f"-> {out_dir / 'summary.json'}")
        failed = [c for c in cases if c["status"] != "ok"]
        for c in failed:
            print(f"error: {c['reason']}", file=sys.stderr)
        if failed:
            print(f"error: {len(failed)} of {len(cases)} case(s) failed (see {out_dir / 'summary.json'})",
                  file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
