"""Image files in and masks out (SimpleITK), with the axis conventions spelled out.

Two conventions meet here:

- Our arrays are ``(X, Y, Z)`` (the LA h5 files, read from NRRD with pynrrd, keep this order).
- SimpleITK's ``GetArrayFromImage`` returns ``(Z, Y, X)`` and ``GetImageFromArray`` reads
  axis 0 of the array as the image's slowest (z) axis.

Users' images (:func:`read_image_xyz`, :func:`write_mask_like`) are transposed both ways, so
the written mask lies on the input's grid with its spacing, origin and direction.

Evaluation files (:func:`write_prediction`, :func:`read_prediction`) are written *without*
a transpose: ``GetArrayFromImage`` on them returns the array in the h5 ``label``'s axis
order ``(X, Y, Z)``, the form ``test.py --pred_dir`` reads back. Their sitk spacing is the
``(X, Y, Z)`` spacing reversed, to match.

SimpleITK is imported inside the functions (machines without it can still evaluate).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.image_io import image_array, read_image, sitk_module
from ..errors import DataError
from ..fileio import atomic_path

READABLE = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def read_image_xyz(path: str | Path) -> tuple[np.ndarray, Any]:
    """Read a 3D scalar image file; return (float32 array ``(X, Y, Z)``, the sitk image whose
    geometry the mask will copy)."""
    img = read_image(path)
    arr = np.transpose(image_array(img, path), (2, 1, 0)).astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: image holds NaN/inf voxels")
    return np.ascontiguousarray(arr), img


def _write_atomically(img: Any, path: Path) -> Path:
    """``sitk.WriteImage`` to a temporary file beside ``path`` (same extension, so the same
    format), then rename it over ``path``: an existing file is replaced whole or not at all.
    A failure is a :class:`DataError` naming ``path``."""
    sitk = sitk_module()
    ext = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    try:
        with atomic_path(path, suffix=f".tmp{ext}") as tmp:
            sitk.WriteImage(img, str(tmp), True)
    except OSError as err:
        raise DataError(f"{path}: cannot write the image ({err.strerror or type(err).__name__})"
                        ) from None
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln.split("ERROR:", 1)[-1].strip() for ln in lines if "ERROR:" in ln),
                      lines[-1] if lines else type(err).__name__)[:160]
        raise DataError(f"{path}: cannot write the image ({detail})") from None
    return path


def write_mask_like(mask_xyz: np.ndarray, reference: Any, path: str | Path) -> Path:
    """Write a uint8 mask ``(X, Y, Z)`` on the grid of the sitk image ``reference``
    (spacing, origin, direction copied)."""
    sitk = sitk_module()
    path = Path(path)
    size = tuple(reference.GetSize())
    if tuple(mask_xyz.shape) != size:
        raise DataError(f"{path}: mask shape {mask_xyz.shape} does not fit image size {size}")
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(mask_xyz.astype(np.uint8),
                                                                   (2, 1, 0))))
    out.CopyInformation(reference)
    return _write_atomically(out, path)


def write_prediction(pred: np.ndarray, path: str | Path,
                     spacing: Sequence[float] | None = None) -> Path:
    """Write an evaluation prediction ``(X, Y, Z)`` uint8 so that ``GetArrayFromImage``
    returns it unchanged; ``spacing`` is the ``(X, Y, Z)`` voxel size when known."""
    sitk = sitk_module()
    path = Path(path)
    img = sitk.GetImageFromArray(np.ascontiguousarray(pred.astype(np.uint8)))
    if spacing is not None:
        img.SetSpacing([float(s) for s in reversed(list(spacing))])
    return _write_atomically(img, path)


def read_prediction(path: str | Path, shape: Sequence[int], num_classes: int = 2) -> np.ndarray:
    """Read a file :func:`write_prediction` wrote; check its shape against the label's
    ``(X, Y, Z)`` and its values against the class range. Returns uint8 ``(X, Y, Z)``."""
    sitk = sitk_module()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prediction file not found")
    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError:
        raise DataError(f"{path}: cannot read prediction file") from None
    if tuple(arr.shape) != tuple(shape):
        hint = (" (axes reversed: was it written with a (Z, Y, X) array?)"
                if tuple(arr.shape) == tuple(shape)[::-1] else "")
        raise DataError(f"{path}: prediction shape {tuple(arr.shape)} does not match label "
                        f"shape {tuple(shape)}{hint}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes
                     or not np.all(arr == np.round(arr))):
        raise DataError(f"{path}: prediction values must be integers in 0..{num_classes - 1}")
    return arr.astype(np.uint8)
