"""Dual-Plane Annotation: which two slices, simulated from a full label or read from a user.

A DPA is two annotated 2D slices of one ``(X, Y, Z)`` volume on two different axes: plane A
(``axes[0]``, slice ``indices[0]``) and plane B (``axes[1]``, slice ``indices[1]``). It is
stored as a *sparse label volume*: a uint8 array of the image's shape that is zero except on
the two annotated slices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError

POLICIES = ("middle", "largest")


@dataclass(frozen=True)
class DPA:
    """Two annotated slices. ``sparse``: uint8 ``(X, Y, Z)``, zero outside the two slices;
    ``axes``/``indices``: plane A first."""

    sparse: np.ndarray
    axes: tuple[int, int]
    indices: tuple[int, int]

    def slice_mask(self, plane: int) -> np.ndarray:
        """The bool 2D mask of plane ``plane`` (0 = A, 1 = B): the volume with that axis
        removed, remaining axes in their original order."""
        return np.take(self.sparse, self.indices[plane], axis=self.axes[plane]).astype(bool)


def check_axes(axes: Sequence[int], ndim: int = 3, where: str = "--axes") -> tuple[int, int]:
    """Two different axes in ``[0, ndim)``, or a :class:`ConfigError`."""
    axes = tuple(int(a) for a in axes)
    if len(axes) != 2 or axes[0] == axes[1] or any(a < 0 or a >= ndim for a in axes):
        raise ConfigError(f"{where}: need two different axes in 0..{ndim - 1}, got {list(axes)}")
    return axes  # type: ignore[return-value]


def choose_index(label: np.ndarray, axis: int, policy: str, plane: int) -> int:
    """The annotated slice index along ``axis`` of a full label ``(X, Y, Z)``.

    ``middle`` follows the LA reference: plane A at ``(n - 1) // 2`` (43 of 88), plane B at
    ``n // 2`` (``Y // 2``). ``largest``: the slice with the most foreground (lowest index
    on ties)."""
    n = label.shape[axis]
    if policy == "middle":
        return (n - 1) // 2 if plane == 0 else n // 2
    if policy == "largest":
        other = tuple(a for a in range(label.ndim) if a != axis)
        counts = (label > 0).sum(axis=other)
        return int(np.argmax(counts))
    raise ConfigError(f"--slice_policy: unknown policy '{policy}' (choose from "
                      f"{', '.join(POLICIES)})")


def plane_slice(ndim: int, axis: int, index: int) -> tuple[int | slice, ...]:
    """The index of slice ``index`` along ``axis`` of an ``ndim``-D array: ``volume[sl]``
    is that slice (the other axes whole), e.g. ``plane_slice(3, 2, 5)`` is ``[:, :, 5]``."""
    return tuple(index if k == axis else slice(None) for k in range(ndim))


def slices_mask(shape: Sequence[int], axes: Sequence[int],
                indices: Sequence[int]) -> np.ndarray:
    """Bool ``shape``: True on the annotated slices (``indices[k]`` along ``axes[k]``)."""
    mask = np.zeros(tuple(shape), dtype=bool)
    for axis, index in zip(axes, indices):
        mask[plane_slice(len(shape), axis, index)] = True
    return mask


def make_sparse(label: np.ndarray, axes: Sequence[int], indices: Sequence[int]) -> np.ndarray:
    """The sparse uint8 volume holding ``label`` on the two slices only."""
    sparse = np.zeros(label.shape, dtype=np.uint8)
    for axis, index in zip(axes, indices):
        sl = plane_slice(label.ndim, axis, index)
        sparse[sl] = (label[sl] > 0)
    return sparse


def simulate_dpa(label: np.ndarray, axes: Sequence[int], policy: str = "middle",
                 case_id: str = "?") -> DPA:
    """Simulate a DPA from a full label ``(X, Y, Z)`` and validate it (see :func:`validate_dpa`)."""
    axes = check_axes(axes)
    for axis in axes:
        if label.shape[axis] < 2:
            raise DataError(f"case '{case_id}': volume has {label.shape[axis]} slice(s) along "
                            f"annotated axis {axis}, need at least 2")
    indices = tuple(choose_index(label, a, policy, k) for k, a in enumerate(axes))
    dpa = DPA(make_sparse(label, axes, indices), axes, indices)  # type: ignore[arg-type]
    return validate_dpa(dpa, label.shape, case_id)


def validate_dpa(dpa: DPA, shape: Sequence[int], case_id: str = "?") -> DPA:
    """Check a DPA against its image shape; a :class:`DataError` naming the case otherwise.

    Checks: same shape, two different axes, each volume has >= 2 slices along an annotated
    axis, indices in range, values in {0, 1}, nothing outside the two slices, both slices
    non-empty."""
    shape = tuple(int(s) for s in shape)
    sparse = dpa.sparse
    if tuple(sparse.shape) != shape:
        raise DataError(f"case '{case_id}': annotation shape {tuple(sparse.shape)} does not "
                        f"match image shape {shape}")
    try:
        axes = check_axes(dpa.axes, len(shape), where=f"case '{case_id}': annotation axes")
    except ConfigError as err:
        raise DataError(str(err)) from None
    if len(dpa.indices) != 2:
        raise DataError(f"case '{case_id}': annotation needs two slice indices, got "
                        f"{list(dpa.indices)}")
    for axis, index in zip(axes, dpa.indices):
        n = shape[axis]
        if n < 2:
            raise DataError(f"case '{case_id}': volume has {n} slice(s) along annotated axis "
                            f"{axis}, need at least 2")
        if not 0 <= int(index) < n:
            raise DataError(f"case '{case_id}': annotated slice index {int(index)} out of range "
                            f"0..{n - 1} along axis {axis}")
    values = np.unique(sparse)
    if values.size and (values.min() < 0 or values.max() > 1):
        raise DataError(f"case '{case_id}': annotation values {values.tolist()[:5]} are not "
                        f"binary 0/1")
    indices = tuple(int(i) for i in dpa.indices)
    outside = int(sparse.astype(bool).sum() - make_sparse(sparse, axes, indices).sum())
    if outside:
        raise DataError(f"case '{case_id}': annotation holds {outside} foreground voxel(s) "
                        f"outside the two annotated slices")
    dpa = DPA(sparse.astype(np.uint8, copy=False), axes, indices)  # type: ignore[arg-type]
    for plane, name in enumerate("AB"):
        if not dpa.slice_mask(plane).any():
            raise DataError(f"case '{case_id}': annotated slice {name} (axis {axes[plane]}, "
                            f"index {indices[plane]}) is empty")
    return dpa
