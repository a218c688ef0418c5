"""Evaluate a model (or saved predictions) case by case: the loop shared by ``test.py`` and
the training stage's validation."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from ..data.dataset import Case, CaseStore, require_foreground
from ..errors import CoGRNetError
from ..inference.segment import segment_image
from ..inference.settings import InferenceSettings
from .metrics import case_metrics

# (case, prediction (X, Y, Z) uint8, probabilities (K, X, Y, Z) float32) -> None
CaseCallback = Callable[[Case, np.ndarray, np.ndarray], None]


def error_text(err: BaseException) -> str:
    """One line for a failed case: a CoGRNetError's own message (it names the file), else the
    exception type and the first line of its message."""
    if isinstance(err, CoGRNetError):
        return str(err)
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else 'no detail'}"


def require_scorable(case: Case) -> None:
    """A reference label with no foreground voxel cannot be scored (Dice is 0 or 1 by
    convention only, distances undefined): a :class:`DataError` naming the file."""
    if case.label is not None:
        require_foreground(case.label, case.path,
                           why="Dice, HD95 and ASD are undefined against an empty reference")


def evaluate_model(model: torch.nn.Module, store: CaseStore, ids: Iterable[str],
                   settings: InferenceSettings, num_classes: int,
                   spacing: Sequence[float] | None = None, case_spacing: bool = False,
                   callback: CaseCallback | None = None, catch_errors: bool = False,
                   progress: bool = False) -> list[dict[str, Any]]:
    """Segment and score each case of ``ids`` (images and labels from ``store``) with the
    sliding windows of ``settings``.

    Returns one dict per case: ``case``, ``dice``, ``jaccard``, ``hd95``, ``asd`` (voxels),
    ``hd95_mm``/``asd_mm`` when ``spacing`` (mm per voxel) is given (or, with
    ``case_spacing`` and no ``spacing``, when the case records its own), ``empty_prediction``,
    ``shape``, ``seconds`` (inference + metrics). The model's train/eval mode is restored.
    With ``catch_errors`` a failing case gives ``{"case", "error"}`` and the loop goes on;
    otherwise the exception propagates. A case whose label is empty is an error (see
    :func:`require_scorable`). ``callback`` sees each case's prediction."""
    rows: list[dict[str, Any]] = []
    ids = list(ids)
    iterator: Iterable[str] = ids
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(ids, desc="cases", unit="case", dynamic_ncols=True)
        iterator = bar
    for case_id in iterator:
        t0 = time.perf_counter()
        try:
            case = store.get(case_id, with_label=True)
            require_scorable(case)
            pred, prob = segment_image(model, case.image, settings)
            row = score_prediction(case_id, pred, case.label, num_classes,
                                   case.spacing if spacing is None and case_spacing else spacing)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            if callback is not None:
                callback(case, pred, prob)
        except Exception as err:  # noqa: BLE001 - reported per case when asked to
            if not catch_errors:
                raise
            row = {"case": case_id, "error": error_text(err)}
        rows.append(row)
        if bar is not None and "dice" in row:
            bar.set_postfix(dice=f"{row['dice']:.4f}")
    return rows


def validation_dice(model: torch.nn.Module, store: CaseStore, ids: Iterable[str],
                    patch: Sequence[int], num_classes: int,
                    device: torch.device | str = "cpu", amp: bool = False,
                    overlap: float | None = None) -> dict[str, float]:
    """Dice per case (``case_id -> dice``) of :func:`evaluate_model` with the largest
    component kept: the training stage's validation."""
    settings = InferenceSettings(tuple(patch), overlap=overlap, keep_largest=True,
                                 device=torch.device(device), amp=amp)
    rows = evaluate_model(model, store, ids, settings, num_classes)
    return {r["case"]: float(r["dice"]) for r in rows}


def score_prediction(case_id: str, pred: np.ndarray, label: np.ndarray, num_classes: int = 2,
                     spacing: Sequence[float] | None = None) -> dict[str, Any]:
    """One report row from a class map and its label (both ``(X, Y, Z)``)."""
    m = case_metrics(pred, label, num_classes=num_classes, spacing=spacing)
    row: dict[str, Any] = {"case": case_id}
    row.update(m)
    row["shape"] = list(pred.shape)
    return row
