"""The per-case coarse-label file ``<coarse_dir>/<ID>.h5`` written by the registration stage.

Datasets: ``label`` (uint8 fused coarse label), ``label_a``/``label_b`` (uint8 per-plane
propagated labels), ``weight`` (float32 confidence in [0, 1]) and ``annotation`` (uint8
sparse volume holding the two annotated slices; attributes ``axes`` and ``indices``), all
``(X, Y, Z)``. Files are written atomically and without timestamps, so equal arrays give
byte-identical files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path

KEYS = ("label", "label_a", "label_b", "weight", "annotation")


@dataclass
class CoarseLabel:
    """One case's coarse labels; arrays ``(X, Y, Z)``: ``label``/``label_a``/``label_b``
    uint8 {0,1}, ``weight`` float32 [0,1]; ``axes``/``indices`` of planes A and B."""

    label: np.ndarray
    label_a: np.ndarray
    label_b: np.ndarray
    weight: np.ndarray
    axes: tuple[int, int]
    indices: tuple[int, int]
    annotation: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.label.shape)  # type: ignore[return-value]


def coarse_path(coarse_dir: str | Path, case_id: str) -> Path:
    return Path(coarse_dir) / f"{case_id}.h5"


def write_coarse_label(coarse_dir: str | Path, case_id: str, coarse: CoarseLabel) -> Path:
    """Write ``<coarse_dir>/<case_id>.h5`` atomically (gzip, no timestamps)."""
    import h5py

    path = coarse_path(coarse_dir, case_id)
    annotation = coarse.annotation if coarse.annotation is not None else np.zeros_like(coarse.label)
    arrays = {"label": coarse.label.astype(np.uint8), "label_a": coarse.label_a.astype(np.uint8),
              "label_b": coarse.label_b.astype(np.uint8),
              "weight": coarse.weight.astype(np.float32),
              "annotation": annotation.astype(np.uint8)}
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as f:
        for key in KEYS:
            f.create_dataset(key, data=arrays[key], compression="gzip", compression_opts=4,
                             track_times=False)
        f["annotation"].attrs["axes"] = np.asarray(coarse.axes, dtype=np.int64)
        f["annotation"].attrs["indices"] = np.asarray(coarse.indices, dtype=np.int64)
    return path


def read_coarse_label(coarse_dir: str | Path, case_id: str,
                      expected_shape: Sequence[int] | None = None) -> CoarseLabel:
    """Read and check ``<coarse_dir>/<case_id>.h5``. Raises :class:`DataError` naming the
    file when it is missing, corrupt, lacks a key, or its shape differs from
    ``expected_shape`` (the image's ``(X, Y, Z)``)."""
    import h5py

    path = coarse_path(coarse_dir, case_id)
    if not path.is_file():
        raise DataError(f"{path}: coarse label file not found (run code/utils/registration.py "
                        f"for case '{case_id}')")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in KEYS if k not in f]
            if missing:
                raise DataError(f"{path}: missing h5 key(s) {', '.join(missing)}")
            arrays = {k: np.asarray(f[k][()]) for k in KEYS}
            attrs = f["annotation"].attrs
            if "axes" not in attrs or "indices" not in attrs:
                raise DataError(f"{path}: 'annotation' lacks its axes/indices attributes")
            axes = tuple(int(a) for a in np.ravel(attrs["axes"]))
            indices = tuple(int(i) for i in np.ravel(attrs["indices"]))
    except DataError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
        raise DataError(f"{path}: corrupt or unreadable coarse label file "
                        f"({type(err).__name__})") from None
    shape = arrays["label"].shape
    if len(shape) != 3:
        raise DataError(f"{path}: label must be 3D, got shape {tuple(shape)}")
    bad = [k for k in KEYS if arrays[k].shape != shape]
    if bad:
        raise DataError(f"{path}: array(s) {', '.join(bad)} do not have the label's shape "
                        f"{tuple(shape)}")
    if expected_shape is not None and tuple(shape) != tuple(int(s) for s in expected_shape):
        raise DataError(f"{path}: coarse label shape {tuple(shape)} does not match image shape "
                        f"{tuple(int(s) for s in expected_shape)}")
    if len(axes) != 2 or len(indices) != 2:
        raise DataError(f"{path}: annotation axes/indices must hold two values each")
    for k in ("label", "label_a", "label_b"):
        if arrays[k].size and arrays[k].max() > 1:
            raise DataError(f"{path}: '{k}' holds values other than 0/1")
    w = arrays["weight"].astype(np.float32, copy=False)
    if w.size and (not np.isfinite(w).all() or w.min() < 0 or w.max() > 1):
        raise DataError(f"{path}: 'weight' must lie in [0, 1]")
    return CoarseLabel(arrays["label"].astype(np.uint8), arrays["label_a"].astype(np.uint8),
                       arrays["label_b"].astype(np.uint8), w, axes, indices,  # type: ignore[arg-type]
                       arrays["annotation"].astype(np.uint8))
