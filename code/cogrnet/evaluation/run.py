"""A checkpoint (or saved predictions) scored on a dataset split, with the report files:
:func:`evaluate_split`, the library behind ``code/test.py``."""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..data.dataset import CaseStore, find_list
from ..data.nifti import MASK_SUFFIX, read_prediction, write_prediction
from ..errors import ConfigError, DataError
from ..fileio import lock_folder
from ..inference.model import checkpoint_patch, load_model
from ..inference.settings import inference_preset, inference_strides
from ..inference.sliding_window import strides_from_overlap
from ..runtime import resolve_device
from .evaluate import error_text, evaluate_model, require_scorable, score_prediction
from .report import write_report


@dataclass(frozen=True)
class EvaluationResult:
    """One report row per case (``error`` where a case failed), the summary written to
    ``summary.json`` and the folder holding ``per_case.csv`` and ``summary.json``."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    out_dir: Path


def prediction_file(pred_dir: Path, case_id: str) -> Path:
    """``pred_dir/<ID>.nii.gz`` (test.py --save_nifti), else ``<ID>_mask.nii.gz``
    (predict.py); a :class:`DataError` naming every name looked for when neither exists."""
    names = {f"{case_id}.nii.gz": "test.py --save_nifti", case_id + MASK_SUFFIX: "predict.py"}
    for name in names:
        if (pred_dir / name).is_file():
            return pred_dir / name
    looked = " or ".join(f"{name} ({who})" for name, who in names.items())
    raise DataError(f"{pred_dir}: prediction file for case '{case_id}' not found (looked for "
                    f"{looked})")


def _check_arguments(checkpoint: str | None, pred_dir: str | None, sw_batch_size: int,
                     strides: dict[str, int | None], overlap: float | None,
                     spacing: Sequence[float] | None) -> None:
    if (checkpoint is None) == (pred_dir is None):
        raise ConfigError("give exactly one of --checkpoint and --pred_dir")
    if sw_batch_size < 1:
        raise ConfigError(f"--sw_batch_size {sw_batch_size}: must be >= 1")
    for name, value in strides.items():
        if value is not None and value < 1:
            raise ConfigError(f"--{name} {value}: must be >= 1")
    if overlap is not None and not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap {overlap}: must be in [0, 1)")
    if spacing is not None and min(spacing) <= 0:
        raise ConfigError(f"--spacing {spacing}: values must be > 0")
    if pred_dir is not None and not Path(pred_dir).is_dir():
        raise DataError(f"--pred_dir {pred_dir}: folder not found")


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


def evaluate_split(root_path: str | Path | None, split: str = "test", checkpoint: str | None = None,
                   pred_dir: str | None = None, lists_dir: str | None = None,
                   dataset: str | None = None, ema: bool = False,
                   stride_xy: int | None = None, stride_z: int | None = None,
                   overlap: float | None = None, mode: str = "constant",
                   sw_batch_size: int = 4, nms: bool = True,
                   spacing: Sequence[float] | None = None, save_nifti: bool = False,
                   save_png: bool = False, out_dir: str | Path | None = None,
                   device: str = "auto", amp: bool | None = None,
                   progress: bool = True) -> EvaluationResult:
    """Score ``checkpoint`` (sliding-window inference) or the saved predictions of
    ``pred_dir`` (exactly one of them) on the cases of ``split`` under ``root_path`` (``None``:
    the dataset preset's), and
    write ``per_case.csv`` and ``summary.json`` to ``out_dir`` (default:
    ``<checkpoint dir>/test_<split>``, or ``<pred_dir>/eval_<split>``). The arguments are
    ``test.py``'s flags (see its ``--help``). A failing case is a row with its ``error``;
    bad arguments, lists or checkpoints raise before any inference."""
    _check_arguments(checkpoint, pred_dir, sw_batch_size,
                     {"stride_xy": stride_xy, "stride_z": stride_z}, overlap, spacing)
    ckpt = None
    model = None
    dev = resolve_device(device)
    if checkpoint is not None:
        model, ckpt = load_model(checkpoint, ema=ema, device=dev)
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
    split_name = Path(split).stem if Path(split).suffix else split

    if out_dir is not None:
        out = Path(out_dir)
    elif checkpoint is not None:
        out = Path(checkpoint).resolve().parent / f"test_{split_name}"
    else:
        out = Path(pred_dir) / f"eval_{split_name}"  # type: ignore[arg-type]
    # one evaluation per folder; taken before the inference, not after it
    with lock_folder(out, "--out_dir"):
        mm = tuple(spacing) if spacing else None
        case_spacing = mm is None  # then each case's recorded spacing, where there is one

        settings: dict[str, Any] = {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "root_path": str(root_path), "split": split, "list_file": str(list_file),
            "dataset": preset.name, "num_classes": num_classes, "intensity": intensity,
            "spacing_mm": list(mm) if mm else "per case, where recorded",
            "distance_unit": "voxel (and mm in *_mm: from --spacing, else where the case "
                             "records its spacing)"}

        if pred_dir is not None:
            settings.update({"pred_dir": str(pred_dir), "postprocessing": "none (as saved)"})
            rows = _score_saved(store, ids, pred_dir, num_classes, mm, progress)
        else:
            assert model is not None and ckpt is not None and checkpoint is not None
            patch = checkpoint_patch(ckpt, checkpoint)
            strides = None if overlap is not None else inference_strides(
                ckpt["config"], preset, stride_xy, stride_z, dataset is not None)
            use_amp = (dev.type == "cuda") if amp is None else bool(amp)
            settings.update({
                "checkpoint": str(checkpoint), "weights": "ema" if ema else "student",
                "iteration": ckpt.get("iteration"), "stage": ckpt.get("stage"),
                "network": ckpt["config"]["network"], "patch_size": list(patch),
                "strides": list(strides or strides_from_overlap(patch, overlap)),
                "overlap": overlap,
                "protocol": "fast (overlap)" if strides is None else "paper (strides)",
                "mode": mode, "sw_batch_size": sw_batch_size, "nms": bool(nms),
                "device": str(dev), "amp": use_amp})

            def save(case, pred, prob) -> None:
                if save_nifti:
                    write_prediction(pred, out / "pred" / f"{case.case_id}.nii.gz", mm,
                                     case.geometry)
                if save_png:
                    from .figures import save_case_png

                    save_case_png(case.image, case.label, pred,
                                  out / "png" / f"{case.case_id}.png", title=case.case_id)

            rows = evaluate_model(model, store, ids, patch, strides, num_classes, device=dev,
                                  amp=use_amp, nms=bool(nms), mode=mode,
                                  sw_batch_size=sw_batch_size, overlap=overlap, spacing=mm,
                                  case_spacing=case_spacing, callback=save, catch_errors=True,
                                  progress=progress)

        summary = write_report(rows, out, settings)
        return EvaluationResult(rows, summary, out)
