"""Dual-Plane Annotation -> 3D coarse labels (the registration stage).

``dpa``: which two slices (simulated from a full label, or read from a user file);
``propagate``: slice-chain registration of one plane, corrected by the other plane;
``fuse``: two planes -> coarse label + confidence; ``io``: the per-case output file.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CoGRNetError
from ..overlap import dice

from .dpa import DPA, POLICIES, check_axes, simulate_dpa, validate_dpa
from .fuse import FusionParams, fuse_planes, fusion_score, label_from_score
from .io import CoarseLabel, read_coarse_label, write_coarse_label
from .propagate import PropagationParams, propagate_dpa, propagate_plane
from .quality import case_quality, pool_quality
from .refine import RefineParams, check_refine, refine_label, refine_score
from .sparse import read_user_dpa


def coarse_from_dpa(image: np.ndarray, dpa: DPA, prop: PropagationParams | None = None,
                    fusion: FusionParams | None = None, use_cross: bool = True,
                    refine: RefineParams | None = None,
                    spacing: tuple[float, float, float] | None = None) -> CoarseLabel:
    """Propagate both planes of ``dpa`` through ``image`` ``(X, Y, Z)``, fuse them, and
    (``refine.method == "intensity"``, ``sdf`` fusion only) refine the fused label with the
    image (:mod:`.refine`, ``spacing`` in mm along X, Y, Z; the fused label is kept when the
    slices give nothing to learn)."""
    fusion = fusion or FusionParams()
    label_a, label_b = propagate_dpa(image, dpa.sparse, dpa.axes, dpa.indices, prop, use_cross)
    if refine is not None and refine.method != "none":
        check_refine(refine, fusion)
        score = fusion_score(label_a, label_b, dpa, fusion)
        label, weight = (refine_score(image, score, dpa, refine, spacing, fusion.tau)
                         or label_from_score(score, dpa, fusion.tau))
    else:
        label, weight = fuse_planes(label_a, label_b, dpa, fusion)
    return CoarseLabel(label, label_a.astype(np.uint8), label_b.astype(np.uint8), weight,
                       dpa.axes, dpa.indices, dpa.sparse.astype(np.uint8))


@dataclass(frozen=True)
class CaseTask:
    """One case for :func:`process_case` (picklable, for process pools).

    ``annotations``: folder of user DPA files, or ``None`` to simulate the DPA from the full
    label with ``axes``/``policy``; ``label_value``: the target of multi-label painted maps,
    ``segment``: of 3D Slicer segmentations, by name;
    ``previews``: also write the coarse label as NIfTI and a PNG (:func:`write_previews`)."""

    case_id: str
    root: str
    out_dir: str
    axes: tuple[int, int] = (2, 1)
    policy: str = "middle"
    annotations: str | None = None
    prop: PropagationParams = PropagationParams()
    fusion: FusionParams = FusionParams()
    refine: RefineParams = RefineParams()
    use_cross: bool = True
    seed: int = 1337
    label_value: int | None = None
    previews: bool = True
    segment: str | None = None


def write_previews(out_dir: str | Path, case: Any, coarse: CoarseLabel) -> None:
    """``<out_dir>/<ID>.nii.gz`` (the fused coarse label on the case's grid, to open over the
    scan in a viewer) and ``<out_dir>/png/<ID>.png`` (:func:`save_coarse_png`)."""
    from ..data.nifti import write_volume_xyz
    from .figures import save_coarse_png

    write_volume_xyz(coarse.label.astype(np.uint8), Path(out_dir) / f"{case.case_id}.nii.gz",
                     case.geometry)
    save_coarse_png(case.image, coarse, Path(out_dir) / "png" / f"{case.case_id}.png",
                    title=case.case_id, spacing=case.spacing)


def process_case(task: CaseTask) -> dict[str, Any]:
    """Read one case, get its DPA, propagate, fuse, write ``<out_dir>/<ID>.h5`` (and the
    previews).

    Never raises: returns ``{"id", "dice", "dice_a", "dice_b", "seconds", "status"}`` (Dice
    ``None`` without a full label; ``seconds``: wall time of reading, both planes, fusion,
    refinement and writing, not the scoring; ``cpu_seconds``: the same in this process's CPU
    time) plus ``axes``/``indices`` and, with a full label, the counts of
    :func:`~cogrnet.annotation.quality.case_quality` under ``quality``; or ``status:
    failed`` with a one-line ``reason``. Unlabeled data is never touched; a label is read only to simulate
    the DPA or to score it."""
    import SimpleITK as sitk

    from ..data.dataset import CaseStore, require_foreground

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, task.prop.threads))
    np.random.seed(task.seed % (2 ** 32))  # nothing here is random; kept for future stages
    t0, c0 = time.perf_counter(), time.process_time()
    result: dict[str, Any] = {"id": task.case_id, "dice": None, "dice_a": None,
                              "dice_b": None, "seconds": None, "cpu_seconds": None,
                              "status": "ok"}
    try:
        store = CaseStore(task.root, cache=False)
        if task.annotations:
            case = store.get(task.case_id, with_label=store.has_label(task.case_id))
            dpa = read_user_dpa(task.annotations, task.case_id, case.shape, case.geometry,
                                task.label_value, task.segment)
        else:
            case = store.get(task.case_id, with_label=True)
            assert case.label is not None
            require_foreground(case.label, case.path, why="there is no slice to annotate")
            dpa = simulate_dpa(case.label, task.axes, task.policy, task.case_id)
        coarse = coarse_from_dpa(case.image, dpa, task.prop, task.fusion, task.use_cross,
                                 task.refine, case.spacing)
        write_coarse_label(task.out_dir, task.case_id, coarse)
        if task.previews:
            write_previews(task.out_dir, case, coarse)
        # scoring is not counted; CPU seconds stay honest on a machine shared with other jobs
        result["seconds"] = round(time.perf_counter() - t0, 3)
        result["cpu_seconds"] = round(time.process_time() - c0, 3)
        if case.label is not None:
            result["dice"] = round(dice(coarse.label, case.label), 6)
            result["dice_a"] = round(dice(coarse.label_a, case.label), 6)
            result["dice_b"] = round(dice(coarse.label_b, case.label), 6)
            result["quality"] = case_quality(coarse.label, coarse.label_a, coarse.label_b,
                                             coarse.weight, case.label, dpa.axes, dpa.indices)
        result["axes"], result["indices"] = list(dpa.axes), list(dpa.indices)
    except CoGRNetError as err:
        result.update(status="failed", reason=str(err))
    except Exception as err:  # noqa: BLE001 -- one broken case must not stop the others
        msg = str(err).splitlines()[0] if str(err) else "no detail"
        result.update(status="failed",
                      reason=f"case '{task.case_id}': {type(err).__name__}: {msg}")
    if result["seconds"] is None or result["status"] != "ok":
        result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


__all__ = ["DPA", "POLICIES", "CaseTask", "CoarseLabel", "FusionParams", "PropagationParams",
           "RefineParams", "case_quality", "check_axes", "coarse_from_dpa", "dice",
           "fuse_planes", "fusion_score", "label_from_score", "pool_quality", "process_case",
           "propagate_dpa", "propagate_plane", "read_coarse_label", "read_user_dpa",
           "refine_label", "refine_score", "simulate_dpa",
           "validate_dpa", "write_coarse_label", "write_previews"]
