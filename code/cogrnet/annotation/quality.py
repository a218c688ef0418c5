"""How good a coarse label is, where a full label exists: Dice by distance from the annotated
slices, and Dice of the voxels above / below confidence thresholds (calibration).

Everything is kept as additive voxel counts ``(TP, FP, FN)`` per bin so that cases pool by
summation (:func:`pool_quality`); a pooled Dice is ``2 TP / (2 TP + FP + FN)``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..overlap import dice_from_counts

#: slice-distance bin edges (in slices of the annotated axis; the last bin is open)
DISTANCE_EDGES: tuple[int, ...] = (0, 1, 3, 5, 8, 12, 16, 20, 30)
#: confidence thresholds of the calibration table
CONFIDENCE_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)


def slice_distance(shape: Sequence[int], axis: int, index: int) -> np.ndarray:
    """``|i - index|`` along ``axis`` (slices), broadcastable to ``shape`` (int64)."""
    view = [1] * len(shape)
    view[axis] = int(shape[axis])
    return np.abs(np.arange(shape[axis]) - index).reshape(view)


def _binned_counts(pred: np.ndarray, truth: np.ndarray, bins: np.ndarray,
                   n_bins: int) -> np.ndarray:
    """``(n_bins, 3)`` int64: ``[TP, FP, FN]`` of the voxels in each bin; ``bins`` (ints in
    ``[0, n_bins)``) holds every voxel's bin, broadcastable to ``pred``. The axes along which
    ``bins`` is constant are summed first, so a slice-distance bin costs one pass."""
    bins = np.asarray(bins)
    bins = bins.reshape((1,) * (pred.ndim - bins.ndim) + bins.shape)
    flat = tuple(k for k in range(pred.ndim) if bins.shape[k] == 1 and pred.shape[k] != 1)
    out = np.zeros((n_bins, 3), dtype=np.int64)
    for j, hit in enumerate((pred & truth, pred & ~truth, ~pred & truth)):
        if flat:  # voxel counts per remaining position, then per bin
            per = hit.sum(axis=flat, keepdims=True)
            out[:, j] = np.bincount(np.broadcast_to(bins, per.shape).ravel(),
                                    weights=per.ravel(), minlength=n_bins).astype(np.int64)
        else:
            out[:, j] = np.bincount(np.broadcast_to(bins, hit.shape)[hit], minlength=n_bins)
    return out


def distance_counts(pred: np.ndarray, truth: np.ndarray, distance: np.ndarray,
                    edges: Sequence[int] = DISTANCE_EDGES) -> list[list[int]]:
    """``[TP, FP, FN]`` of bool ``pred`` vs ``truth`` ``(X, Y, Z)`` for the voxels whose
    ``distance`` (>= ``edges[0]``) lies in ``[edges[k], edges[k+1])`` (the last bin:
    ``>= edges[-1]``)."""
    bins = np.digitize(distance, edges) - 1
    return _binned_counts(pred, truth, bins, len(edges)).tolist()


def confidence_counts(pred: np.ndarray, truth: np.ndarray, weight: np.ndarray,
                      thresholds: Sequence[float] = CONFIDENCE_THRESHOLDS
                      ) -> dict[str, list[list[int]]]:
    """For each threshold ``t`` (ascending): ``[TP, FP, FN]`` of the voxels with
    ``weight >= t`` (``above``) and with ``weight < t`` (``below``)."""
    t = np.asarray(thresholds, dtype=weight.dtype)  # compare in the weight's precision
    per_bin = _binned_counts(pred, truth, np.digitize(weight, t), len(t) + 1)
    below = np.cumsum(per_bin, axis=0)[:-1]  # bin j holds the voxels with j thresholds <= w
    above = per_bin.sum(axis=0) - below
    return {"above": above.tolist(), "below": below.tolist()}


def case_quality(label: np.ndarray, label_a: np.ndarray, label_b: np.ndarray,
                 weight: np.ndarray, truth: np.ndarray, axes: Sequence[int],
                 indices: Sequence[int]) -> dict[str, Any]:
    """Counts of one case (arrays ``(X, Y, Z)``): each plane's label by its distance from its
    own annotated slice, the fused label by the distance from the nearer one, and the fused
    label's calibration against ``weight``."""
    truth = truth.astype(bool)
    shape = truth.shape
    d_a = slice_distance(shape, axes[0], indices[0])
    d_b = slice_distance(shape, axes[1], indices[1])
    fused = label.astype(bool)
    return {"distance": {"a": distance_counts(label_a.astype(bool), truth, d_a),
                         "b": distance_counts(label_b.astype(bool), truth, d_b),
                         "fused": distance_counts(fused, truth, np.minimum(d_a, d_b))},
            "confidence": confidence_counts(fused, truth, weight)}


def _dice(c: Sequence[int]) -> float | None:
    value = dice_from_counts(*c)
    return None if value is None else round(value, 4)


def pool_quality(cases: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Sum the counts of :func:`case_quality` over cases and turn them into Dice per bin:
    ``{"distance": {"edges", "a", "b", "fused", "foreground_voxels"}, "confidence":
    {"thresholds", "dice_above", "dice_below", "errors_below", "voxels_below"}}``: a Dice is
    ``None`` where a bin holds no foreground; ``errors_below`` is the share of the wrong voxels
    (FP + FN) whose confidence is below the threshold, ``voxels_below`` the same share of the
    voxels of label or truth (TP + FP + FN). ``None`` when no case has counts."""
    cases = [c for c in cases if c]
    if not cases:
        return None

    def total(path: tuple[str, str]) -> np.ndarray:
        return np.sum([np.asarray(c[path[0]][path[1]], dtype=np.int64) for c in cases], axis=0)

    dist = {k: total(("distance", k)) for k in ("a", "b", "fused")}
    above, below = total(("confidence", "above")), total(("confidence", "below"))
    err_below = below[:, 1:].sum(axis=1)
    err_all = err_below + above[:, 1:].sum(axis=1)
    vox_below = below.sum(axis=1)
    vox_all = vox_below + above.sum(axis=1)
    return {
        "distance": {"edges": list(DISTANCE_EDGES),
                     **{k: [_dice(row) for row in v] for k, v in dist.items()},
                     "foreground_voxels": [int(r[0] + r[2]) for r in dist["fused"]]},
        "confidence": {"thresholds": list(CONFIDENCE_THRESHOLDS),
                       "dice_above": [_dice(row) for row in above],
                       "dice_below": [_dice(row) for row in below],
                       "errors_below": [round(float(e) / max(1, int(a)), 4)
                                        for e, a in zip(err_below, err_all)],
                       "voxels_below": [round(float(v) / max(1, int(a)), 4)
                                        for v, a in zip(vox_below, vox_all)]},
    }


def bin_labels(edges: Sequence[int] = DISTANCE_EDGES) -> list[str]:
    """``["0", "1-2", ..., ">=30"]`` for the distance bins."""
    out = []
    for lo, hi in zip(edges, list(edges[1:]) + [None]):
        out.append(f">={lo}" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}"))
    return out


def calibration_text(pooled: dict[str, Any]) -> str:
    """The calibration part of :func:`pool_quality` as a few printable lines."""
    c = pooled["confidence"]
    lines = ["How far the coarse labels' confidence (`weight`) can be trusted, scored against "
             "the dense labels of these cases:",
             "confidence t | Dice (weight >= t) | Dice (weight < t) | errors below t | "
             "label/truth voxels below t"]
    for t, up, low, e, v in zip(c["thresholds"], c["dice_above"], c["dice_below"],
                                c["errors_below"], c["voxels_below"]):
        lines.append(f"{t:>12} | {up if up is not None else '-':>18} | "
                     f"{low if low is not None else '-':>17} | {e:>14.1%} | {v:>9.1%}")
    return "\n".join(lines)
