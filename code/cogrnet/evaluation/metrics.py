"""Segmentation metrics with medpy's definitions, computed near the surfaces only.

All functions take two binary masks of the same shape (any number of dimensions, usually
``(X, Y, Z)``) and an optional ``spacing`` (one length per axis, e.g. mm per voxel). With
``spacing=None`` distances are in voxels (the LA literature's convention).

Definitions (identical to ``medpy.metric.binary``):

- Dice ``2|P&G| / (|P| + |G|)``, Jaccard ``|P&G| / |P|G|``.
- The *surface* of a mask is the mask minus its binary erosion with the
  ``connectivity``-structuring element (1 = faces, the medpy default); voxels on the array
  border count as surface (outside the array is background).
- ``asd(P, G)``: the mean over P's surface voxels of the Euclidean distance to the nearest
  surface voxel of G. It is *not* symmetric (medpy's ``asd``, not ``assd``).
- ``hd95``: the 95th percentile (numpy's linear interpolation) of both directed surface
  distance sets pooled.

Speed: the masks are cropped to the bounding box of their union plus a one-voxel margin
(clipped to the array), which changes no value: the erosion outside the crop sees background
either way and every surface voxel lies inside the crop. The distance from each surface
voxel to the other mask's surface is then an exact nearest-neighbour query on the surface
voxel coordinates (scaled by ``spacing``) in a k-d tree (``scipy.spatial.cKDTree``), the
same Euclidean distance medpy reads off a full-volume ``distance_transform_edt``. On LA
labels the tree is about 4x faster than a distance transform of the crop (28k surface
voxels: 30 ms against 100 ms) and the whole computation 10-15x faster than medpy.

Empty-mask policy (medpy raises instead): an empty prediction scores Dice 0 and Jaccard 0
and its distances are NaN (reported and counted by the caller, never skipped and never a 0
distance). An empty reference with a non-empty prediction scores likewise 0/0/NaN/NaN. Both
empty: Dice 1, Jaccard 1 (nothing to find, nothing found), distances NaN.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import DataError
from ..overlap import dice, dice_from_counts

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd")


def _as_bool_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise DataError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred.astype(bool, copy=False), ref.astype(bool, copy=False)


def _spacing(spacing: Sequence[float] | float | None, ndim: int) -> np.ndarray | None:
    if spacing is None:
        return None
    sp = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if sp.size == 1:
        sp = np.repeat(sp, ndim)
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise DataError(f"spacing {list(np.ravel(spacing))}: need {ndim} positive finite values")
    return sp


def union_bbox(a: np.ndarray, b: np.ndarray, margin: int = 1) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``a | b`` grown by ``margin`` voxels (clipped to the
    array); ``None`` when both are empty."""
    union = a | b
    box = []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        hits = np.flatnonzero(union.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0),
                         min(int(hits[-1]) + margin + 1, union.shape[axis])))
    return tuple(box)


def surface(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Surface voxels of a boolean mask: ``mask`` minus its erosion (medpy's border; the
    array border counts as background)."""
    if connectivity == 1:
        # Face-connected erosion by shifted ANDs: equal to ndimage.binary_erosion with
        # generate_binary_structure(ndim, 1) and border_value 0, about 5x faster.
        eroded = mask.copy()
        for axis in range(mask.ndim):
            lo = [slice(None)] * mask.ndim
            hi = [slice(None)] * mask.ndim
            lo[axis], hi[axis] = slice(1, None), slice(None, -1)
            eroded[tuple(lo)] &= mask[tuple(hi)]
            eroded[tuple(hi)] &= mask[tuple(lo)]
            edge = [slice(None)] * mask.ndim
            for idx in (0, -1):
                edge[axis] = idx
                eroded[tuple(edge)] = False
        return mask & ~eroded
    footprint = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask ^ ndimage.binary_erosion(mask, structure=footprint, iterations=1)


def _cropped_surfaces(p: np.ndarray, g: np.ndarray,
                      connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Surface masks of ``p`` and ``g`` (both non-empty) on their union's bounding box."""
    box = union_bbox(p, g, margin=1)
    assert box is not None
    return surface(p[box], connectivity), surface(g[box], connectivity)


def _directed(src: np.ndarray, dst: np.ndarray, sp: np.ndarray | None) -> np.ndarray:
    """For each ``True`` voxel of the surface mask ``src`` (in C order, like medpy's
    ``dt[border]``) the Euclidean distance to the nearest ``True`` voxel of ``dst``, in
    voxels scaled by ``sp`` when given. Voxels on both surfaces are 0 without a query."""
    from scipy.spatial import cKDTree

    dist = np.zeros(int(np.count_nonzero(src)), dtype=np.float64)
    away = (src & ~dst)[src]
    if away.any():
        a = np.argwhere(src & ~dst).astype(np.float64)
        b = np.argwhere(dst).astype(np.float64)
        if sp is not None:
            a *= sp
            b *= sp
        tree = cKDTree(b, leafsize=32, balanced_tree=False, compact_nodes=False)
        dist[away] = tree.query(a, k=1)[0]
    return dist


def surface_distances(pred: np.ndarray, ref: np.ndarray,
                      spacing: Sequence[float] | float | None = None,
                      connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``(pred -> ref, ref -> pred)``, float64 arrays in units
    of ``spacing`` (voxels when ``None``). Both masks must be non-empty (else DataError)."""
    p, g = _as_bool_pair(pred, ref)
    sp = _spacing(spacing, p.ndim)
    if not p.any() or not g.any():
        raise DataError("surface distances need two non-empty masks")
    ps, gs = _cropped_surfaces(p, g, connectivity)
    return _directed(ps, gs, sp), _directed(gs, ps, sp)


def _distance_summary(d_pg: np.ndarray, d_gp: np.ndarray) -> tuple[float, float]:
    """(hd95, asd) from the two directed distance sets, as medpy computes them."""
    return float(np.percentile(np.hstack((d_pg, d_gp)), 95)), float(d_pg.mean())


def dc(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient (medpy ``dc``); 0 when the prediction is empty, 1 when both are."""
    return dice(*_as_bool_pair(pred, ref))


def jc(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard index (medpy ``jc``); 1 when both masks are empty."""
    p, g = _as_bool_pair(pred, ref)
    union = int(np.count_nonzero(p | g))
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & g)) / float(union)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None,
         connectivity: int = 1) -> float:
    """95% Hausdorff distance (medpy ``hd95``); NaN when either mask is empty."""
    return binary_metrics(pred, ref, spacing, connectivity)["hd95"]


def asd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None,
        connectivity: int = 1) -> float:
    """Average surface distance pred -> ref (medpy ``asd``); NaN when either mask is empty."""
    return binary_metrics(pred, ref, spacing, connectivity)["asd"]


def binary_metrics(pred: np.ndarray, ref: np.ndarray,
                   spacing: Sequence[float] | float | None = None,
                   connectivity: int = 1, mm_spacing: Sequence[float] | None = None
                   ) -> dict[str, float]:
    """Dice, Jaccard, HD95 and ASD of one pair of binary masks from one crop and one pair of
    surfaces. Returns ``{"dice", "jaccard", "hd95", "asd"}`` (distances in units of
    ``spacing``, voxels when ``None``; NaN when either mask is empty). With ``mm_spacing``
    also ``hd95_mm``/``asd_mm`` computed with that spacing."""
    p, g = _as_bool_pair(pred, ref)
    sp = _spacing(spacing, p.ndim)
    mm = _spacing(mm_spacing, p.ndim) if mm_spacing is not None else None
    inter = int(np.count_nonzero(p & g))
    n_p, n_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    out: dict[str, float] = {}
    if n_p == 0 or n_g == 0:
        both_empty = n_p == 0 and n_g == 0
        out = {"dice": 1.0 if both_empty else 0.0, "jaccard": 1.0 if both_empty else 0.0,
               "hd95": math.nan, "asd": math.nan}
        if mm is not None:
            out["hd95_mm"] = out["asd_mm"] = math.nan
        return out
    ps, gs = _cropped_surfaces(p, g, connectivity)
    out = {"dice": dice_from_counts(inter, n_p - inter, n_g - inter),
           "jaccard": float(inter) / float(n_p + n_g - inter)}
    out["hd95"], out["asd"] = _distance_summary(_directed(ps, gs, sp), _directed(gs, ps, sp))
    if mm is not None:
        out["hd95_mm"], out["asd_mm"] = _distance_summary(_directed(ps, gs, mm),
                                                          _directed(gs, ps, mm))
    return out


def case_metrics(pred: np.ndarray, label: np.ndarray, num_classes: int = 2,
                 spacing: Sequence[float] | None = None,
                 connectivity: int = 1) -> dict[str, object]:
    """Metrics of one case from integer class maps ``pred`` and ``label`` (``(X, Y, Z)``).

    Two classes: the foreground metrics. More: the mean over foreground classes, with the
    per-class values under ``"per_class"``. Distances in voxels; with ``spacing`` (mm per
    voxel, one per axis) also ``hd95_mm``/``asd_mm``. ``empty_prediction`` is True when the
    prediction has no foreground (for several classes: when any class is missing)."""
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise DataError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
    rows = []
    for c in range(1, max(num_classes, 2)):
        m: dict = binary_metrics(pred == c, label == c, None, connectivity, spacing)
        m["empty_prediction"] = not bool(np.any(pred == c))
        rows.append(m)
    if len(rows) == 1:
        return rows[0]
    out: dict[str, object] = {}
    for key in rows[0]:
        if key == "empty_prediction":
            out[key] = any(r[key] for r in rows)
        else:
            vals = [r[key] for r in rows]
            out[key] = float(np.nanmean(vals)) if not all(map(math.isnan, vals)) else math.nan
    out["per_class"] = {str(c): r for c, r in enumerate(rows, start=1)}
    return out
