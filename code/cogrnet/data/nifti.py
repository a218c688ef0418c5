"""Image files in and masks out (SimpleITK): one axis convention for every file.

Our arrays are ``(X, Y, Z)``: array axis 0, 1, 2 is the image's index axis i, j, k (the LA
h5 files, read from NRRD with pynrrd, are in this order; so are the cases that
``code/import_dataset.py`` writes). SimpleITK's ``GetArrayFromImage`` returns ``(k, j, i)``
and ``GetImageFromArray`` reads axis 0 of an array as the slowest (k) axis, so every reader
here transposes ``(k, j, i) -> (i, j, k)`` and every writer transposes back. A file written
here therefore has the array's shape as its image size, and opens in a viewer on the grid
(spacing, origin, direction) it was given: ``predict.py``'s masks, ``test.py --save_nifti``
and the registration stage's coarse labels are all such files, and ``test.py --pred_dir``
reads any of them.

SimpleITK is imported inside the functions (machines without it can still evaluate h5 data).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path
from .image_io import Geometry, image_array, read_image, require_same_grid, sitk_module

#: image file endings; ``.seg.nrrd`` (a 3D Slicer segmentation) before ``.nrrd``, so that
#: ``<ID>.seg.nrrd`` names case ``<ID>``
READABLE = (".nii", ".nii.gz", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")
_CHANNEL = re.compile(r"^(?P<id>.+)_(?P<channel>\d{4})$")


def image_stem(path: str | Path) -> str:
    """A file name without its image extension (``scan.nii.gz`` -> ``scan``)."""
    name = Path(path).name
    for ext in READABLE:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` names a file in one of the :data:`READABLE` formats."""
    return Path(path).name.endswith(READABLE) and not Path(path).name.startswith(".")


def case_ids(paths: Sequence[Path]) -> list[str]:
    """The case IDs of image files: their names without the extension, and without the
    ``_0000`` channel suffix when every name carries one (nnU-Net's naming). Several
    channels of one case (``_0000`` and ``_0001``) are a :class:`DataError`: only
    single-channel images are supported."""
    stems = [image_stem(p) for p in paths]
    matches = [_CHANNEL.match(s) for s in stems]
    if not stems or not all(matches):
        return stems
    ids = [m.group("id") for m in matches]  # type: ignore[union-attr]
    channels = [m.group("channel") for m in matches]  # type: ignore[union-attr]
    if set(channels) == {"0000"}:
        return ids
    if "0000" in channels and len(set(ids)) < len(ids):
        k = next(k for k, c in enumerate(channels) if c != "0000")
        raise DataError(f"{paths[k]}: channel {channels[k]} of case '{ids[k]}': only "
                        "single-channel images are supported")
    return stems


def image_files(folder: Path) -> list[Path]:
    """The image files (:data:`READABLE`) directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def read_volume_xyz(path: str | Path, what: str = "image") -> tuple[np.ndarray, Any]:
    """Read a 3D scalar image file; return (its voxels ``(X, Y, Z)`` in the file's dtype,
    the sitk image, whose grid a written volume can copy)."""
    img = read_image(path, what)
    return np.ascontiguousarray(np.transpose(image_array(img, path), (2, 1, 0))), img


def read_image_xyz(path: str | Path) -> tuple[np.ndarray, Any]:
    """:func:`read_volume_xyz` as finite float32 (an image, not a label map)."""
    arr, img = read_volume_xyz(path)
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: image holds NaN/inf voxels")
    return arr, img


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


def write_volume_xyz(array: np.ndarray, path: str | Path,
                     geometry: Geometry | None = None) -> Path:
    """Write an ``(X, Y, Z)`` array (its dtype kept) as an image of size ``(X, Y, Z)`` on
    ``geometry``'s grid (unit spacing at the origin when ``None``), atomically."""
    sitk = sitk_module()
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    if geometry is not None:
        geometry.apply(img)
    return _write_atomically(img, Path(path))


#: the name predict.py gives the mask of scan ``<ID>``: ``<ID>`` + this
MASK_SUFFIX = "_mask.nii.gz"


def write_mask_like(mask_xyz: np.ndarray, reference: Any, path: str | Path) -> Path:
    """Write a uint8 mask ``(X, Y, Z)`` on the grid of the sitk image ``reference``
    (spacing, origin, direction copied)."""
    size = tuple(reference.GetSize())
    if tuple(mask_xyz.shape) != size:
        raise DataError(f"{path}: mask shape {mask_xyz.shape} does not fit image size {size}")
    return write_volume_xyz(mask_xyz.astype(np.uint8), path, Geometry.of_image(reference))


def write_prediction(pred: np.ndarray, path: str | Path,
                     spacing: Sequence[float] | None = None,
                     geometry: Geometry | None = None) -> Path:
    """Write an evaluation prediction ``(X, Y, Z)`` as uint8 on the case's grid:
    ``geometry`` when the case records one, else unit spacing or ``spacing`` (mm along
    ``(X, Y, Z)``)."""
    if geometry is None and spacing is not None:
        geometry = Geometry(tuple(float(s) for s in spacing))  # type: ignore[arg-type]
    return write_volume_xyz(pred.astype(np.uint8), path, geometry)


def read_prediction(path: str | Path, shape: Sequence[int], num_classes: int = 2,
                    geometry: Geometry | None = None) -> np.ndarray:
    """Read a mask file written here (or by any tool, on the case's grid); check its size
    against the label's ``(X, Y, Z)`` shape, its grid against ``geometry`` (the case's, when
    recorded) and its values against the class range. Returns uint8 ``(X, Y, Z)``.
    Errors name the file and the problem (``prediction file not found``, ``corrupt or
    unreadable prediction file``, ...)."""
    path = Path(path)
    arr, img = read_volume_xyz(path, "prediction")
    if tuple(arr.shape) != tuple(shape):
        hint = (" (axes reversed: written in the (Z, Y, X) order of an older test.py "
                "--save_nifti?)" if tuple(arr.shape) == tuple(shape)[::-1] else "")
        raise DataError(f"{path}: prediction shape {tuple(arr.shape)} does not match label "
                        f"shape {tuple(shape)}{hint}")
    require_same_grid(img, geometry, str(path), "prediction", "case")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes
                     or not np.all(arr == np.round(arr))):
        raise DataError(f"{path}: prediction values must be integers in 0..{num_classes - 1}")
    return np.ascontiguousarray(arr.astype(np.uint8))
