"""The deterministic CT array transforms of the raw-release conversion
(:mod:`cogrnet.data.preprocess`), on reoriented ``(X, Y, Z)`` arrays (Z axial, Hounsfield
units in): the HU window to ``[0, 1]`` (:func:`window_unit`), the per-slice body mask and
its in-plane crop box (:func:`body_mask`, :func:`body_crop_box`), and one whole case --
crop, resize, z-score -- (:func:`preprocess_arrays` -> :class:`ProcessedCase`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, DataError
from ..presets import PreprocessPreset
from .transforms import resize_volume


def window_unit(image_hu: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """Clip Hounsfield units to ``window_hu = (low, high)`` and scale to ``[0, 1]``
    (float32, same shape)."""
    lo, hi = float(window_hu[0]), float(window_hu[1])
    if not hi > lo:
        raise ConfigError(f"window {window_hu}: high must exceed low")
    out = np.clip(image_hu.astype(np.float32, copy=False), lo, hi)
    return (out - np.float32(lo)) / np.float32(hi - lo)


def body_mask(image_hu: np.ndarray, threshold_hu: float = -500.0,
              fill_holes: bool = True) -> np.ndarray:
    """Per axial slice (axis 2 of ``(X, Y, Z)``): ``HU > threshold_hu``, the largest 2D
    8-connected component, holes filled (``fill_holes``; a bounding box does not need it).
    Returns bool ``(X, Y, Z)``; slices without any voxel above the threshold stay empty."""
    fg = image_hu > threshold_hu
    out = np.zeros(fg.shape, dtype=bool)
    struct = np.ones((3, 3), dtype=bool)
    for z in range(fg.shape[2]):
        sl = fg[:, :, z]
        if not sl.any():
            continue
        lab, n = ndimage.label(sl, structure=struct)
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            sl = lab == int(np.argmax(sizes))
        out[:, :, z] = ndimage.binary_fill_holes(sl) if fill_holes else sl
    return out


def body_crop_box(mask: np.ndarray, margin: int) -> tuple[tuple[int, int], ...]:
    """In-plane bounding box of ``mask`` (bool ``(X, Y, Z)``, union over slices) grown by
    ``margin`` voxels and clipped to the volume; Z is always kept whole. Returns half-open
    ``((x0, x1), (y0, y1), (0, Z))``. An empty mask gives the whole volume."""
    shape = mask.shape
    box: list[tuple[int, int]] = []
    for axis in (0, 1):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            box.append((0, shape[axis]))
        else:
            box.append((max(0, int(hit[0]) - margin), min(shape[axis], int(hit[-1]) + 1 + margin)))
    box.append((0, shape[2]))
    return tuple(box)


@dataclass
class ProcessedCase:
    """The result of :func:`preprocess_arrays`, ready to write.

    ``image``: float32 ``(X, Y, Z)`` z-scored; ``label``: uint8 binary target;
    ``label_raw``: uint8 raw classes; ``attrs``: h5 attributes (see :mod:`cogrnet.data.preprocess`)."""

    image: np.ndarray
    label: np.ndarray | None
    label_raw: np.ndarray | None
    attrs: dict = field(default_factory=dict)


def preprocess_arrays(image_hu: np.ndarray, label_raw: np.ndarray | None,
                      preset: PreprocessPreset,
                      spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> ProcessedCase:
    """Window, crop to the body box, resize and z-score one reoriented case.

    ``image_hu``: ``(X, Y, Z)`` Hounsfield units, Z axial; ``label_raw``: integer
    ``(X, Y, Z)`` raw classes or ``None``; ``spacing``: mm per axis of the input. The crop
    box comes from the image alone; the label is only resized (and counted for the
    ``label_voxels_outside_crop`` quality attribute)."""
    if image_hu.ndim != 3:
        raise DataError(f"image must be 3D (X, Y, Z), got shape {tuple(image_hu.shape)}")
    if label_raw is not None and label_raw.shape != image_hu.shape:
        raise DataError(f"label shape {tuple(label_raw.shape)} does not match image shape "
                        f"{tuple(image_hu.shape)}")
    if not np.isfinite(image_hu).all():
        raise DataError(f"image holds {int((~np.isfinite(image_hu)).sum())} NaN/inf voxel(s)")
    # hole filling cannot change a bounding box: skipped here for speed
    box = body_crop_box(body_mask(image_hu, preset.body_threshold_hu, fill_holes=False),
                        preset.margin)
    crop = tuple(slice(a, b) for a, b in box)
    unit = window_unit(image_hu[crop], preset.window_hu)
    resized = resize_volume(unit, preset.out_size, order=1)
    mean, std = float(resized.mean()), float(resized.std())
    if not std > 1e-6:
        raise DataError("image is constant inside the HU window "
                        f"{list(preset.window_hu)} (nothing to normalise)")
    image = ((resized - mean) / std).astype(np.float32)
    crop_shape = [b - a for a, b in box]
    attrs = {
        "preset": preset.name,
        "window_hu": np.asarray(preset.window_hu, dtype=np.float64),
        "spacing": np.asarray(spacing, dtype=np.float64),
        "spacing_resized": np.asarray([s * c / o for s, c, o in
                                       zip(spacing, crop_shape, preset.out_size)]),
        "original_shape": np.asarray(image_hu.shape, dtype=np.int64),
        "crop_box": np.asarray(box, dtype=np.int64),
        "zscore_mean": mean,
        "zscore_std": std,
        "target_values": np.asarray(preset.target_values, dtype=np.int64),
        "axes": "X, Y, Z (LPS-oriented; Z = axial slice axis)",
    }
    label = raw_small = None
    if label_raw is not None:
        raw_u8 = label_raw.astype(np.uint8, copy=False)
        inside = int(np.count_nonzero(raw_u8[crop]))
        attrs["label_voxels_outside_crop"] = int(np.count_nonzero(raw_u8)) - inside
        raw_small = np.ascontiguousarray(resize_volume(raw_u8[crop], preset.out_size, order=0))
        label = np.isin(raw_small, preset.target_values).astype(np.uint8)
    return ProcessedCase(image, label, raw_small, attrs)
