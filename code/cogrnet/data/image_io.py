"""Reading image files (NIfTI, NRRD, MHA, ...) with SimpleITK: one validated reader.

SimpleITK is imported when a file is read, so machines without it can still train and
evaluate h5 datasets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError


def sitk_module() -> Any:
    """The SimpleITK module, or a clear error when it is not installed."""
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - depends on the machine
        raise DataError("SimpleITK is not installed: it is needed to read/write NIfTI, NRRD "
                        "and MHA files (pip install SimpleITK)") from None
    return sitk


def read_image(path: str | Path, what: str = "image") -> Any:
    """A 3D scalar ``SimpleITK.Image`` read from ``path`` (a 4D file with one time point is
    read as 3D). Raises :class:`DataError` naming the file when it is missing, unreadable,
    not 3D or not one value per voxel."""
    sitk = sitk_module()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        detail = next((ln.strip() for ln in str(err).splitlines()
                       if ln.strip() and "sitk::ERROR" in ln), "")
        detail = detail.split("sitk::ERROR:", 1)[-1].strip() or type(err).__name__
        raise DataError(f"{path}: corrupt or unreadable {what} file ({detail[:160]})") from None
    dim, size = img.GetDimension(), tuple(img.GetSize())
    if dim == 4 and size[3] == 1:
        img = img[:, :, :, 0]
        dim, size = 3, size[:3]
    if dim != 3:
        raise DataError(f"{path}: {what} must be 3D, got {dim}D of size {size}")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: {what} must hold one value per voxel, got "
                        f"{img.GetNumberOfComponentsPerPixel()} (vector image)")
    return img


def image_array(img: Any, path: str | Path) -> Any:
    """``GetArrayFromImage`` (``(k, j, i)`` order) with a one-line error for bad voxel data."""
    sitk = sitk_module()
    try:
        return sitk.GetArrayFromImage(img)
    except RuntimeError as err:
        raise DataError(f"{path}: corrupt voxel data ({type(err).__name__})") from None
