"""The overlap of two binary masks: the one Dice of the library (the registration's scores,
its calibration table and the evaluation metrics all count it here)."""
from __future__ import annotations

import numpy as np


def dice_from_counts(tp: int, fp: int, fn: int) -> float | None:
    """``2 TP / (2 TP + FP + FN)`` from voxel counts; ``None`` when neither mask has a
    voxel (the caller says what that means for it)."""
    denom = 2 * tp + fp + fn
    return None if denom == 0 else 2.0 * tp / denom


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary volumes of one shape (any non-zero voxel counts); 1.0 when both
    are empty, 0.0 when only one is (medpy's ``dc``)."""
    p, t = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    tp = int(np.count_nonzero(p & t))
    n_p, n_t = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    value = dice_from_counts(tp, n_p - tp, n_t - tp)
    return 1.0 if value is None else value
