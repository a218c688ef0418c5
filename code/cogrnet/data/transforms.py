"""Volume and patch transforms: random parameters are sampled apart from the deterministic
ops; :func:`resize_volume` resamples a whole volume to a size (preprocessing, resampled
dataset copies).

All arrays are ``(X, Y, Z)`` (or ``(C, X, Y, Z)`` where noted); rotations act in the
``(X, Y)`` plane and flips on axis 0 or 1, as in the LA literature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class PatchParams:
    """Where to crop and how to rotate/flip one patch. ``start`` may be negative when the
    volume is smaller than the patch on that axis (the volume is then zero-padded)."""

    start: tuple[int, int, int]
    rot90_k: int = 0
    flip_axis: int | None = None


def sample_patch_params(rng: np.random.Generator, shape: Sequence[int], patch: Sequence[int],
                        augment: bool = True) -> PatchParams:
    """A uniform crop position (centred padding where the volume is smaller than the patch),
    rot90 ``k`` in 0..3 and a flip on axis 0 or 1 (or none) when ``augment``."""
    start = []
    for s, p in zip(shape, patch):
        if s >= p:
            start.append(int(rng.integers(0, s - p + 1)))
        else:
            start.append(-((p - s) // 2))
    if not augment:
        return PatchParams(tuple(start))  # type: ignore[arg-type]
    # odd quarter turns swap X and Y: only for square in-plane patches
    k = int(rng.integers(0, 4)) if patch[0] == patch[1] else 2 * int(rng.integers(0, 2))
    flip = int(rng.integers(0, 3))
    return PatchParams(tuple(start), k, None if flip == 2 else flip)  # type: ignore[arg-type]


def crop_pad(arr: np.ndarray, start: Sequence[int], patch: Sequence[int],
             fill: float = 0) -> np.ndarray:
    """The ``patch``-sized window of ``arr`` (last three axes) at ``start``; voxels outside
    the volume are ``fill``. Returns a new contiguous array."""
    spatial = arr.shape[-3:]
    out = np.full(arr.shape[:-3] + tuple(patch), fill, dtype=arr.dtype)
    src, dst = [], []
    for s, st, p in zip(spatial, start, patch):
        lo, hi = max(st, 0), min(st + p, s)
        src.append(slice(lo, hi))
        dst.append(slice(lo - st, hi - st))
    out[(..., *dst)] = arr[(..., *src)]
    return out


def rot_flip(arr: np.ndarray, k: int, flip_axis: int | None) -> np.ndarray:
    """Rotate by ``k`` quarter turns in the (X, Y) plane of the last three axes, then flip
    spatial axis ``flip_axis`` (0 or 1). Returns a contiguous array."""
    off = arr.ndim - 3
    if k:
        arr = np.rot90(arr, k, axes=(off, off + 1))
    if flip_axis is not None:
        arr = np.flip(arr, axis=off + flip_axis)
    return np.ascontiguousarray(arr)


def apply_patch_params(arr: np.ndarray, params: PatchParams, patch: Sequence[int],
                       fill: float = 0) -> np.ndarray:
    """Crop/pad then rotate/flip. rot90 with odd ``k`` swaps X and Y, so a non-square
    in-plane patch is cropped with swapped sides first and comes out ``patch``-shaped."""
    if params.rot90_k % 2 and patch[0] != patch[1]:
        raise ValueError("rot90 with odd k needs a square in-plane patch; disable augmentation")
    return rot_flip(crop_pad(arr, params.start, patch, fill), params.rot90_k, params.flip_axis)


def resize_volume(volume: np.ndarray, out_size: Sequence[int], order: int) -> np.ndarray:
    """Resize a 3D array to exactly ``out_size`` with spline ``order`` (1 linear for images,
    0 nearest for labels), voxel-area aligned (``grid_mode``), edge values extended.
    Keeps the dtype for order 0; float32 otherwise."""
    out_size = tuple(int(s) for s in out_size)
    if tuple(volume.shape) == out_size:
        return volume.copy() if order == 0 else volume.astype(np.float32)
    src = volume if order == 0 else volume.astype(np.float32, copy=False)
    zoom = [o / i for o, i in zip(out_size, volume.shape)]
    out = ndimage.zoom(src, zoom, order=order, mode="nearest", grid_mode=True, prefilter=False)
    if out.shape != out_size:  # guard against rounding of zoom * shape
        out = out[tuple(slice(0, s) for s in out_size)]
        pad = [(0, s - o) for s, o in zip(out_size, out.shape)]
        out = np.pad(out, pad, mode="edge")
    return out
