"""Dual-Plane Annotation -> 3D coarse labels for the labeled cases of a split: the run behind
``code/utils/registration.py``. It picks the cases and settings (flags, else the import
record, else the dataset preset), runs :func:`cogrnet.annotation.process_case` on each
(worker processes), and writes ``summary.json`` and the Dice-by-distance picture.
See docs/REGISTRATION.md."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..annotation import (POLICIES, CaseTask, FusionParams, PropagationParams, RefineParams,
                          check_axes, pool_quality, process_case)
from ..annotation.figures import save_distance_png
from ..annotation.fuse import FUSIONS
from ..annotation.propagate import parse_propagation
from ..annotation.quality import calibration_text
from ..annotation.refine import REFINEMENTS, check_refine
from ..cli import (add_dataset, add_labelnum, add_lists_dir, add_out_dir, add_root_path,
                   add_run_switches, add_switch, add_workers, parser)
from ..data.dataset import CaseStore, find_list, read_list
from ..errors import ConfigError, DataError
from ..fileio import lock_folder, write_json_atomic
from ..parallel import run_cases
from ..presets import IMPORT_RECORD, PRESETS, dataset_for_root, get_preset
from .import_nifti import map_target, read_import_record

#: one case's work: a :class:`CaseTask` -> its record in ``summary.json`` (never raises)
CaseFunction = Callable[[CaseTask], dict[str, Any]]


@dataclass(frozen=True)
class RegistrationRequest:
    """What ``code/utils/registration.py``'s flags ask for (``None``: the import record's
    value, else the preset's; see its ``--help``). ``ids``: these cases instead of the
    split's first ``labelnum``; ``annotations``: a folder of user annotations instead of
    simulating them with ``slice_policy``; ``propagation``: ``NAME=VALUE`` items."""

    out_dir: str | Path
    dataset: str | None = None
    root_path: str | None = None
    split: str = "train"
    lists_dir: str | None = None
    labelnum: int | None = None
    ids: Sequence[str] | None = None
    workers: int = 1
    slice_policy: str = "middle"
    axes: Sequence[int] | None = None
    annotations: str | None = None
    label_value: int | None = None
    segment: str | None = None
    previews: bool = True
    fusion: str = "sdf"
    refine: str | None = None
    propagation: Sequence[str] = ()
    cross_plane: bool = True
    seed: int = 1337
    progress: bool = True


@dataclass(frozen=True)
class RegistrationPlan:
    """A request resolved against its preset and the import record: the dataset, its root,
    the annotated axes, the target of painted maps, and the case IDs to register."""

    dataset: str
    root: str | Path
    axes: tuple[int, int]
    labelnum: int
    label_value: int | None
    segment: str | None
    ids: list[str]
    preset_refine: str


@dataclass(frozen=True)
class MethodParams:
    """The per-case settings: slice-chain propagation, plane fusion, refinement."""

    prop: PropagationParams
    fusion: FusionParams
    refine: RefineParams


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 6) if vals else None


def failed_case(task: CaseTask, reason: str) -> dict[str, Any]:
    """The record of a case whose worker failed (:func:`process_case` itself never raises)."""
    return {"id": task.case_id, "dice": None, "dice_a": None, "dice_b": None, "seconds": None,
            "cpu_seconds": None, "status": "failed", "reason": f"case '{task.case_id}': {reason}"}


def labeled_ids(request: RegistrationRequest, root: str | Path, lists_dir: str | None,
                labelnum: int) -> list[str]:
    """``request.ids`` (deduplicated), else the first ``labelnum`` IDs of its split."""
    if request.ids:
        return list(dict.fromkeys(request.ids))
    ids = read_list(find_list(root, request.split, lists_dir))
    if labelnum < 1:
        raise ConfigError(f"--labelnum must be >= 1, got {labelnum}")
    if labelnum > len(ids):
        raise ConfigError(f"--labelnum {labelnum} is larger than split '{request.split}' "
                          f"({len(ids)} IDs)")
    return ids[:labelnum]


def plan_registration(request: RegistrationRequest) -> RegistrationPlan:
    """Check ``request`` and fill its defaults; one-line errors, before anything is written."""
    dataset = dataset_for_root(request.dataset, request.root_path, "la")
    preset = get_preset(dataset)
    root = request.root_path or preset.root_path
    if not root:
        raise ConfigError(f"--root_path is required with --dataset {dataset}")
    axes = check_axes(request.axes if request.axes is not None else preset.axes)
    if request.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {request.workers}")
    if request.annotations and not Path(request.annotations).is_dir():
        raise DataError(f"--annotations: folder {request.annotations} not found")
    CaseStore(root)  # the root must exist
    record = read_import_record(root) or {}  # what code/import_dataset.py found
    labelnum = (request.labelnum if request.labelnum is not None
                else record.get("labelnum") or preset.labelnum)
    label_value, segment = map_target(record, request.label_value, request.segment)
    painted = record.get("labelnum")
    if (request.annotations and not request.ids and painted is not None
            and labelnum > painted):
        raise ConfigError(f"--labelnum {labelnum}: the import recorded {painted} annotated "
                          f"scan(s) leading train.list ({Path(root) / IMPORT_RECORD}); use "
                          f"--labelnum {painted} or paint more scans and import again")
    ids = labeled_ids(request, root, request.lists_dir or preset.lists_dir, labelnum)
    return RegistrationPlan(dataset=dataset, root=root, axes=axes, labelnum=labelnum,
                            label_value=label_value, segment=segment, ids=ids,
                            preset_refine=preset.refine)


def method_params(request: RegistrationRequest, preset_refine: str) -> MethodParams:
    """The request's propagation, fusion and refinement, checked together; the preset's
    refinement needs the sdf fusion, so another ``fusion`` without ``refine`` means none."""
    prop, fusion = parse_propagation(request.propagation), FusionParams(method=request.fusion)
    refine = RefineParams(method=request.refine or (preset_refine if fusion.method == "sdf"
                                                    else "none"))
    check_refine(refine, fusion)
    return MethodParams(prop, fusion, refine)


def settings_record(request: RegistrationRequest, plan: RegistrationPlan,
                    params: MethodParams) -> dict[str, Any]:
    """The ``settings`` block of ``summary.json``: what this run used."""
    return {"dataset": plan.dataset, "root_path": str(plan.root), "split": request.split,
            "labelnum": None if request.ids else plan.labelnum, "ids": request.ids,
            "slice_policy": None if request.annotations else request.slice_policy,
            "axes": "from annotations" if request.annotations else list(plan.axes),
            "annotations": request.annotations, "label_value": plan.label_value,
            "segment": plan.segment,
            "workers": request.workers, "seed": request.seed,
            "cross_plane": request.cross_plane, "propagation": params.prop.to_dict(),
            "fusion": params.fusion.to_dict(), "refine": params.refine.to_dict()}


def case_tasks(request: RegistrationRequest, plan: RegistrationPlan, out_dir: Path,
               params: MethodParams) -> list[CaseTask]:
    """One :class:`CaseTask` per case of ``plan``, writing into ``out_dir``."""
    return [CaseTask(case_id=i, root=str(plan.root), out_dir=str(out_dir), axes=plan.axes,
                     policy=request.slice_policy, annotations=request.annotations,
                     prop=params.prop, fusion=params.fusion, refine=params.refine,
                     use_cross=request.cross_plane, seed=request.seed,
                     label_value=plan.label_value, previews=request.previews,
                     segment=plan.segment)
            for i in plan.ids]


def summarize(cases: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """``summary.json``: the case records, the means over the cases that worked (Dice,
    seconds and CPU seconds per case), the pooled quality, and ``settings``."""
    ok = [c for c in cases if c["status"] == "ok"]
    return {"cases": cases,
            "mean_dice": _mean([c["dice"] for c in ok]),
            "mean_dice_a": _mean([c["dice_a"] for c in ok]),
            "mean_dice_b": _mean([c["dice_b"] for c in ok]),
            "seconds_per_case": _mean([c["seconds"] for c in ok]),
            "cpu_seconds_per_case": _mean([c.get("cpu_seconds") for c in ok]),
            "quality": pool_quality([c.get("quality") for c in ok]),
            "settings": settings}


def register_dataset(request: RegistrationRequest,
                     case_fn: CaseFunction = process_case) -> dict[str, Any]:
    """Coarse labels for the cases ``request`` names, in ``request.out_dir`` (held by this
    process alone meanwhile): ``<ID>.h5`` per case (``case_fn`` makes them), then
    ``summary.json`` and ``dice_vs_distance.png``. Returns the summary; a failed case is
    recorded in it and does not stop the others."""
    plan = plan_registration(request)
    with lock_folder(request.out_dir, "--out_dir") as out_dir:  # one registration per folder
        params = method_params(request, plan.preset_refine)
        settings = settings_record(request, plan, params)
        results = run_cases(case_fn, case_tasks(request, plan, out_dir, params),
                            request.workers, "registration", key=lambda t: t.case_id,
                            failure=failed_case, progress=request.progress)
        summary = summarize([results[i] for i in plan.ids], settings)
        write_json_atomic(out_dir / "summary.json", summary)
        if summary["quality"] is not None:
            ok = sum(c["status"] == "ok" for c in summary["cases"])
            save_distance_png(summary["quality"], out_dir / "dice_vs_distance.png",
                              f"{ok} case(s) of {plan.root}: Dice by distance from the annotation")
    return summary


def report_registration(summary: dict[str, Any], out_dir: str | Path) -> int:
    """Print the calibration table and a one-line result of ``summary`` (stdout), each
    failed case's error (stderr); the exit status: 1 when a case failed, else 0."""
    out_dir = Path(out_dir)
    cases = summary["cases"]
    ok = [c for c in cases if c["status"] == "ok"]
    if summary["quality"] is not None:
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
        print(f"error: {len(failed)} of {len(cases)} case(s) failed "
              f"(see {out_dir / 'summary.json'})", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``code/utils/registration.py`` (one place: the script and the benchmark
    spec checker read them here)."""
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
    p.add_argument("--fusion", default="sdf", choices=FUSIONS, help="plane fusion")
    p.add_argument("--refine", default=None, choices=REFINEMENTS,
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


def request_from_args(args: argparse.Namespace) -> RegistrationRequest:
    """The library's request for the parsed flags."""
    return RegistrationRequest(
        out_dir=args.out_dir, dataset=args.dataset, root_path=args.root_path, split=args.split,
        lists_dir=args.lists_dir, labelnum=args.labelnum, ids=args.ids, workers=args.workers,
        slice_policy=args.slice_policy, axes=args.axes, annotations=args.annotations,
        label_value=args.label_value, segment=args.segment, previews=args.previews,
        fusion=args.fusion, refine=args.refine, propagation=args.propagation,
        cross_plane=not args.no_cross, seed=args.seed, progress=not args.no_progress)
