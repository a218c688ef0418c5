"""A checkpoint (or saved predictions) scored on a dataset split, with the report files:
:func:`evaluate_split`, the library behind ``code/test.py``."""
from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..cli import (add_dataset, add_lists_dir, add_out_dir, add_root_path, add_run_switches,
                   add_sliding_window, parser)
from ..data.dataset import Case, CaseStore, find_list
from ..data.nifti import MASK_SUFFIX, read_prediction, write_prediction
from ..errors import ConfigError, DataError
from ..fileio import lock_folder
from ..inference.model import load_model
from ..inference.settings import InferenceFlags, InferenceSettings, inference_preset
from ..presets import DatasetPreset
from ..runtime import resolve_device
from .evaluate import (CaseCallback, error_text, evaluate_model, require_scorable,
                       score_prediction)
from .report import write_report


@dataclass(frozen=True)
class EvaluationResult:
    """One report row per case (``error`` where a case failed), the summary written to
    ``summary.json`` and the folder holding ``per_case.csv`` and ``summary.json``."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    out_dir: Path


@dataclass(frozen=True)
class EvaluationOutputs:
    """Where an evaluation writes ``per_case.csv`` and ``summary.json`` (``out_dir``;
    ``None``: ``<checkpoint dir>/test_<split>``, or ``<pred_dir>/eval_<split>``), and what
    it writes beside them: each case's prediction as NIfTI (``save_nifti``) and as a
    figure (``save_png``)."""

    out_dir: str | Path | None = None
    save_nifti: bool = False
    save_png: bool = False


@dataclass(frozen=True)
class _SplitCases:
    """The cases of a split and what the report says about them."""

    preset: DatasetPreset
    root_path: str | Path
    split: str
    store: CaseStore
    ids: list[str]
    list_file: Path
    num_classes: int
    intensity: str


def saved_prediction(folder: Path, case_id: str) -> Path:
    """``folder/<ID>.nii.gz``: a case's prediction as ``test.py --save_nifti`` writes it."""
    return folder / f"{case_id}.nii.gz"


def prediction_file(pred_dir: Path, case_id: str) -> Path:
    """``pred_dir/<ID>.nii.gz`` (test.py --save_nifti), else ``<ID>_mask.nii.gz``
    (predict.py); a :class:`DataError` naming every name looked for when neither exists."""
    names = {saved_prediction(pred_dir, case_id).name: "test.py --save_nifti",
             case_id + MASK_SUFFIX: "predict.py"}
    for name in names:
        if (pred_dir / name).is_file():
            return pred_dir / name
    looked = " or ".join(f"{name} ({who})" for name, who in names.items())
    raise DataError(f"{pred_dir}: prediction file for case '{case_id}' not found (looked for "
                    f"{looked})")


def _check_arguments(checkpoint: str | None, pred_dir: str | None,
                     spacing: Sequence[float] | None) -> None:
    if (checkpoint is None) == (pred_dir is None):
        raise ConfigError("give exactly one of --checkpoint and --pred_dir")
    if spacing is not None and min(spacing) <= 0:
        raise ConfigError(f"--spacing {spacing}: values must be > 0")
    if pred_dir is not None and not Path(pred_dir).is_dir():
        raise DataError(f"--pred_dir {pred_dir}: folder not found")


def _open_cases(ckpt: dict[str, Any] | None, dataset: str | None,
                root_path: str | Path | None, split: str,
                lists_dir: str | None) -> _SplitCases:
    """The cases of ``split``: the preset (``dataset``, else the checkpoint's), its root and
    lists where they are not given, the checkpoint's classes and intensity normalisation."""
    preset = inference_preset(ckpt["config"] if ckpt is not None else None, dataset, root_path)
    root_path = root_path or preset.root_path
    if not root_path:
        raise ConfigError(f"--root_path is required with dataset {preset.name} (the folder "
                          "code/import_dataset.py wrote)")
    num_classes = (int(ckpt["config"]["network"].get("num_classes", preset.num_classes))
                   if ckpt is not None else preset.num_classes)
    lists_dir = lists_dir if lists_dir is not None else preset.lists_dir
    # the checkpoint's intensity normalisation; predictions scored from files need none
    intensity = ckpt["config"].get("intensity", "none") if ckpt is not None else "none"
    store = CaseStore(root_path, num_classes=num_classes, intensity=intensity)
    ids = store.split(split, lists_dir)
    list_file = find_list(root_path, split, lists_dir)
    return _SplitCases(preset, root_path, split, store, ids, list_file, num_classes,
                       intensity)


def _out_folder(out_dir: str | Path | None, checkpoint: str | None, pred_dir: str | None,
                split: str) -> Path:
    """``out_dir``, else ``<checkpoint dir>/test_<split>``, else ``<pred_dir>/eval_<split>``
    (``<split>``: the list file's stem when ``split`` is a file)."""
    split_name = Path(split).stem if Path(split).suffix else split
    if out_dir is not None:
        return Path(out_dir)
    if checkpoint is not None:
        return Path(checkpoint).resolve().parent / f"test_{split_name}"
    return Path(pred_dir) / f"eval_{split_name}"  # type: ignore[arg-type]


def _report_settings(cases: _SplitCases, spacing_mm: tuple[float, ...] | None) -> dict[str, Any]:
    """The settings every report records, whatever it scores."""
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "root_path": str(cases.root_path), "split": cases.split,
        "list_file": str(cases.list_file), "dataset": cases.preset.name,
        "num_classes": cases.num_classes, "intensity": cases.intensity,
        "spacing_mm": list(spacing_mm) if spacing_mm else "per case, where recorded",
        "distance_unit": "voxel (and mm in *_mm: from --spacing, else where the case "
                         "records its spacing)"}


def _checkpoint_record(checkpoint: str, ckpt: dict[str, Any], ema: bool) -> dict[str, Any]:
    """What a report records of the checkpoint it scores."""
    return {"checkpoint": str(checkpoint), "weights": "ema" if ema else "student",
            "iteration": ckpt.get("iteration"), "stage": ckpt.get("stage"),
            "network": ckpt["config"]["network"]}


def _case_writer(out: Path, outputs: EvaluationOutputs,
                 spacing_mm: tuple[float, ...] | None) -> CaseCallback:
    """The callback writing a case's prediction under ``out`` as ``outputs`` asks."""
    def save(case: Case, pred: np.ndarray, prob: np.ndarray) -> None:
        if outputs.save_nifti:
            write_prediction(pred, saved_prediction(out / "pred", case.case_id), spacing_mm,
                             case.geometry)
        if outputs.save_png:
            from .figures import save_case_png

            save_case_png(case.image, case.label, pred,
                          out / "png" / f"{case.case_id}.png", title=case.case_id)

    return save


def _score_saved(store: CaseStore, ids: list[str], pred_dir: str, num_classes: int,
                 spacing: tuple[float, ...] | None, progress: bool) -> list[dict[str, Any]]:
    """Rows for the saved predictions ``pred_dir/<ID>`` (:func:`prediction_file`)."""
    rows = []
    iterator: Any = ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(ids, desc="cases", unit="case", dynamic_ncols=True)
    for case_id in iterator:
        try:
            case = store.get(case_id, with_label=True)
            require_scorable(case)
            pred = read_prediction(prediction_file(Path(pred_dir), case_id),
                                   case.label.shape, num_classes, case.geometry)
            rows.append(score_prediction(case_id, pred, case.label, num_classes,
                                         spacing if spacing is not None else case.spacing))
        except Exception as err:  # noqa: BLE001 - one bad case must not stop the rest
            rows.append({"case": case_id, "error": error_text(err)})
    return rows


def evaluate_split(root_path: str | Path | None, split: str = "test",
                   checkpoint: str | None = None, pred_dir: str | None = None,
                   lists_dir: str | None = None, dataset: str | None = None,
                   inference: InferenceFlags = InferenceFlags(),
                   spacing: Sequence[float] | None = None,
                   outputs: EvaluationOutputs = EvaluationOutputs(),
                   progress: bool = True) -> EvaluationResult:
    """Score ``checkpoint`` (sliding-window inference as ``inference`` asks) or the saved
    predictions of ``pred_dir`` (exactly one of them) on the cases of ``split`` under
    ``root_path`` (``None``: the dataset preset's), and write ``per_case.csv`` and
    ``summary.json`` (and what else ``outputs`` asks) to ``outputs.out_dir``. The arguments
    are ``test.py``'s flags (see its ``--help``). A failing case is a row with its
    ``error``; bad arguments, lists or checkpoints raise before any inference."""
    _check_arguments(checkpoint, pred_dir, spacing)
    ckpt = None
    model = None
    dev = resolve_device(inference.device)
    if checkpoint is not None:
        model, ckpt = load_model(checkpoint, ema=inference.ema, device=dev)
    cases = _open_cases(ckpt, dataset, root_path, split, lists_dir)
    out = _out_folder(outputs.out_dir, checkpoint, pred_dir, split)
    spacing_mm = tuple(spacing) if spacing else None
    settings = None  # checked before the output folder is made
    if ckpt is not None and checkpoint is not None:
        settings = InferenceSettings.from_checkpoint(ckpt, checkpoint, inference, cases.preset,
                                                     dataset is not None, dev)
    # one evaluation per folder; taken before the inference, not after it
    with lock_folder(out, "--out_dir"):
        report = _report_settings(cases, spacing_mm)
        if pred_dir is not None:
            report.update({"pred_dir": str(pred_dir), "postprocessing": "none (as saved)"})
            rows = _score_saved(cases.store, cases.ids, pred_dir, cases.num_classes,
                                spacing_mm, progress)
        else:
            assert model is not None and ckpt is not None and settings is not None
            report.update(_checkpoint_record(checkpoint, ckpt, inference.ema))
            report.update(settings.record())
            rows = evaluate_model(model, cases.store, cases.ids, settings, cases.num_classes,
                                  spacing=spacing_mm, case_spacing=spacing_mm is None,
                                  callback=_case_writer(out, outputs, spacing_mm),
                                  catch_errors=True, progress=progress)
        summary = write_report(rows, out, report)
        return EvaluationResult(rows, summary, out)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``code/test.py`` (one place: the script and the benchmark spec checker
    read them here)."""
    p = parser("Sliding-window evaluation of a CoGRNet checkpoint on a dataset split.")
    add_root_path(p, "dataset root (h5 cases and lists) (default: the dataset preset's, e.g. "
                     "data/LA)")
    p.add_argument("--split", default="test", help="split name (test, val, ...) or list file")
    add_lists_dir(p, "folder with <split>.list when it is not under --root_path (default: the "
                     "dataset preset's)")
    add_dataset(p, "dataset preset (la, kits, lits, phantom, custom); default: the "
                   "checkpoint's, else custom for a root made by code/import_dataset.py, "
                   "else la")
    p.add_argument("--checkpoint", default=None, help="checkpoint .pth (not with --pred_dir)")
    p.add_argument("--pred_dir", default=None,
                   help="evaluate saved DIR/<ID>.nii.gz (as --save_nifti writes them) or "
                        "DIR/<ID>_mask.nii.gz (as predict.py does) against the labels, with "
                        "no model")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA teacher's weights")
    add_sliding_window(
        p, stride_xy="in-plane stride in voxels (default: the checkpoint's, else the preset's: "
                     "18 for LA)",
        stride_z="stride on axis 2 in voxels (default: the checkpoint's, else the preset's: 4 "
                 "for LA)",
        overlap="fast protocol: window overlap fraction in [0,1); overrides strides")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), default=None,
                   help="voxel size in mm of the (X, Y, Z) axes: also report HD95/ASD in mm "
                        "(LA: 0.625 0.625 0.625); default: each case's own, when its file "
                        "records one (code/import_dataset.py, code/preprocess.py)")
    p.add_argument("--save_nifti", action="store_true",
                   help="write <out_dir>/pred/<ID>.nii.gz on the case's grid (readable by "
                        "--pred_dir)")
    p.add_argument("--save_png", action="store_true",
                   help="write <out_dir>/png/<ID>.png: three slices with contours")
    add_out_dir(p, default=None, help="output folder (default: <checkpoint dir>/test_<split>, or "
                        "<pred_dir>/eval_<split>)")
    add_run_switches(p)
    return p
