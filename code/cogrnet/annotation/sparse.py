"""Sparse label maps painted in a viewer (3D Slicer, ITK-SNAP): which two slices hold the
strokes, read from the map itself.

A user paints two orthogonal slices of a scan and saves the label map (NIfTI, NRRD, MHA)
on the scan's grid. :func:`find_planes` finds the two painted planes (array axes and
indices of the ``(X, Y, Z)`` volume) from the non-zero voxels; :func:`read_sparse_map`
reads such a file, checks its grid against the image's and returns the validated
:class:`~cogrnet.annotation.dpa.DPA`; :func:`read_user_dpa` reads a case's annotation in
either form the registration takes (such a map, or an h5 file with the slices' axes and
indices).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.image_io import Geometry
from ..errors import DataError
from .dpa import DPA, plane_slice, validate_dpa

#: a stroke this many slices or fewer away from a painted slice, on that slice's axis,
#: counts as the brush spilling over (a 3D brush) rather than as a third plane
SPILL = 2


def select_label(volume: np.ndarray, label_value: int | None, what: str) -> np.ndarray:
    """The bool mask of the strokes: voxels equal to ``label_value``, or every non-zero
    voxel when the map holds one value only; a :class:`DataError` naming ``what`` for a
    multi-label map without ``label_value``, or for non-integer values."""
    if np.issubdtype(volume.dtype, np.floating):
        if not np.isfinite(volume).all() or not np.all(volume == np.round(volume)):
            raise DataError(f"{what}: label map holds non-integer values")
    values = [v for v in np.unique(volume).tolist() if v != 0]
    if label_value is not None:
        if label_value not in values:
            raise DataError(f"{what}: no voxel has --label_value {label_value} (values: "
                            f"{', '.join(str(int(v)) for v in values[:8]) or 'none'})")
        return volume == label_value
    if len(values) > 1:
        raise DataError(f"{what}: multi-label map (values "
                        f"{', '.join(str(int(v)) for v in values[:8])}); choose the target "
                        "with --label_value")
    return volume != 0


def _plane_voxels(mask: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The bool volume of ``mask`` voxels on slice ``index`` along ``axis``."""
    out = np.zeros_like(mask)
    sl = plane_slice(mask.ndim, axis, index)
    out[sl] = mask[sl]
    return out


def _slice_counts(mask: np.ndarray) -> list[np.ndarray]:
    """Per axis, the number of ``mask`` voxels on each slice along it."""
    return [mask.sum(axis=tuple(k for k in range(3) if k != a)) for a in range(3)]


def find_planes(mask: np.ndarray, what: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two painted planes of a bool ``(X, Y, Z)`` stroke mask: ``(axes, indices)``,
    plane A on the higher axis (Z before Y before X, as the presets' ``axes (2, 1)``).

    Each axis's candidate is its slice with the most strokes; the pair of candidates on two
    different axes covering the most strokes is taken. A one-line :class:`DataError` naming
    ``what`` when nothing is painted, when one slice holds every stroke, when strokes lie
    next to a painted slice (a brush spilling over), or when a third plane is painted."""
    total = int(mask.sum())
    if total == 0:
        raise DataError(f"{what}: no painted slice (the label map is empty)")
    counts = _slice_counts(mask)
    best = [int(np.argmax(c)) for c in counts]
    for a in range(3):
        if int(counts[a][best[a]]) == total:
            raise DataError(f"{what}: only one painted plane (axis {a}, slice {best[a]}); "
                            "paint a second slice on another axis")
    pairs = [(a, b) for a in range(3) for b in range(a + 1, 3)]
    union = {p: _plane_voxels(mask, p[0], best[p[0]]) | _plane_voxels(mask, p[1], best[p[1]])
             for p in pairs}
    a, b = max(pairs, key=lambda p: (int(union[p].sum()), p))  # ties: the higher axes
    rest = mask & ~union[(a, b)]
    if rest.any():
        where = np.argwhere(rest)
        near = np.zeros(len(where), bool)
        for axis in (a, b):
            near |= np.abs(where[:, axis] - best[axis]) <= SPILL
        planes = f"axis {b} slice {best[b]} and axis {a} slice {best[a]}"
        if near.all():
            raise DataError(f"{what}: {len(where)} stroke voxel(s) outside the two painted "
                            f"slices ({planes}), on slices next to them: paint each plane "
                            "with a 2D brush")
        rest_counts = _slice_counts(rest)
        c = int(np.argmax([rc.max() for rc in rest_counts]))
        raise DataError(f"{what}: more than two painted planes ({planes}, and "
                        f"{len(where)} voxel(s) elsewhere, e.g. on axis {c} slice "
                        f"{int(np.argmax(rest_counts[c]))}); a dual-plane annotation has "
                        "exactly two")
    return (b, a), (best[b], best[a])


def dpa_from_mask(mask: np.ndarray, case_id: str, what: str) -> DPA:
    """The validated DPA of a bool stroke mask ``(X, Y, Z)``; errors name ``what``."""
    axes, indices = find_planes(mask, what)
    try:
        return validate_dpa(DPA(mask.astype(np.uint8), axes, indices), mask.shape, case_id)
    except DataError as err:
        raise DataError(f"{what}: {err}") from None


def read_painted_map(path: str | Path, case_id: str, shape: tuple[int, int, int],
                     geometry: Geometry | None = None, label_value: int | None = None,
                     segment: str | None = None) -> tuple[DPA, list[str]]:
    """Read a painted label map file: its DPA and the names of its segments (a 3D Slicer
    segmentation's; empty for other files).

    The map must lie on the image's grid: its size must equal ``shape`` (the image's
    ``(X, Y, Z)``) and, when ``geometry`` (the image's) is given, its spacing, origin and
    direction must match; a 3D Slicer ``.seg.nrrd`` cropped to its segments is placed back
    on that grid, and ``segment`` chooses its target by name
    (:func:`cogrnet.data.segmentation.read_label_map`). Errors are one line naming the file
    and the case."""
    from ..data.segmentation import read_label_map

    path = Path(path)
    what = f"{path} (case '{case_id}')"
    labels = read_label_map(path, what, "annotation", shape, geometry, label_value, segment)
    dpa = dpa_from_mask(select_label(labels.volume, labels.label_value, what), case_id, what)
    return dpa, labels.segment_names


def read_sparse_map(path: str | Path, case_id: str, shape: tuple[int, int, int],
                    geometry: Geometry | None = None, label_value: int | None = None,
                    segment: str | None = None) -> DPA:
    """The DPA of a painted label map file (:func:`read_painted_map`)."""
    return read_painted_map(path, case_id, shape, geometry, label_value, segment)[0]


def annotation_file(ann_dir: str | Path, case_id: str) -> Path:
    """The user's annotation of ``case_id`` in ``ann_dir``: ``<ID>.h5``, else a painted
    label map ``<ID>.nii.gz`` (``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``)."""
    from ..data.nifti import READABLE

    ann_dir = Path(ann_dir)
    for name in [f"{case_id}.h5"] + [f"{case_id}{ext}" for ext in READABLE]:
        if (ann_dir / name).is_file():
            return ann_dir / name
    raise DataError(f"case '{case_id}': annotation file {ann_dir / case_id}.h5 (or .nii.gz, "
                    ".nrrd, .mha) not found")


def read_user_dpa(ann_dir: str | Path, case_id: str, shape: Sequence[int],
                  geometry: Geometry | None = None, label_value: int | None = None,
                  segment: str | None = None) -> DPA:
    """Read and validate the user's annotation of ``case_id`` (see :func:`annotation_file`).

    ``<ID>.h5``: dataset ``annotation`` (sparse label volume of the image's shape) with
    attributes ``axes`` and ``indices`` (two ints each). A painted label map: the planes are
    found from its non-zero slices and its grid is checked against the image's ``shape``
    and ``geometry`` (:func:`read_sparse_map`; ``label_value``
    picks the target of a multi-label map, ``segment`` a 3D Slicer segment by name)."""
    import h5py

    path = annotation_file(ann_dir, case_id)
    if path.suffix != ".h5":
        return read_sparse_map(path, case_id, tuple(int(s) for s in shape),  # type: ignore[arg-type]
                               geometry, label_value, segment)
    try:
        with h5py.File(path, "r") as f:
            if "annotation" not in f:
                raise DataError(f"{path}: missing h5 key 'annotation'")
            ds = f["annotation"]
            missing = [k for k in ("axes", "indices") if k not in ds.attrs]
            if missing:
                raise DataError(f"{path}: 'annotation' lacks attribute(s) {', '.join(missing)}")
            sparse = np.asarray(ds[()])
            axes = [int(a) for a in np.ravel(ds.attrs["axes"])]
            indices = [int(i) for i in np.ravel(ds.attrs["indices"])]
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise DataError(f"{path}: corrupt or unreadable annotation file "
                        f"({type(err).__name__})") from None
    if not (np.issubdtype(sparse.dtype, np.integer) or sparse.dtype == bool):
        if not np.all(np.isfinite(sparse)) or not np.all(sparse == np.round(sparse)):
            raise DataError(f"{path}: annotation holds non-integer values")
    if len(axes) != 2 or len(indices) != 2:
        raise DataError(f"{path}: annotation needs two axes and two indices, got "
                        f"axes {axes}, indices {indices}")
    try:
        return validate_dpa(DPA(sparse, tuple(axes), tuple(indices)),  # type: ignore[arg-type]
                            shape, case_id)
    except DataError as err:  # name the annotation file too
        raise DataError(f"{path}: {err}") from None
