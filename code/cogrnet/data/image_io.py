"""Reading image files (NIfTI, NRRD, MHA, ...) with SimpleITK: one validated reader.

SimpleITK is imported when a file is read, so machines without it can still train and
evaluate h5 datasets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import DataError


def sitk_module() -> Any:
    """The SimpleITK module, or a clear error when it is not installed."""
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - depends on the machine
        raise DataError("SimpleITK is not installed: it is needed to read/write NIfTI, NRRD "
                        "and MHA files (pip install SimpleITK)") from None
    return sitk


def read_image(path: str | Path, what: str = "image", components: bool = False) -> Any:
    """A 3D scalar ``SimpleITK.Image`` read from ``path`` (a 4D file with one time point is
    read as 3D); with ``components``, several values per voxel are allowed (the layers of a
    3D Slicer segmentation). Raises :class:`DataError` naming the file when it is missing,
    unreadable, not 3D or (without ``components``) not one value per voxel."""
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
    if img.GetNumberOfComponentsPerPixel() != 1 and not components:
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


#: attribute names of a case's grid in its h5 file (the importer writes them)
GEOMETRY_ATTRS = ("spacing", "origin", "direction")


@dataclass(frozen=True)
class Geometry:
    """Where an ``(X, Y, Z)`` array lies in patient space, in SimpleITK's terms.

    ``spacing``: mm per voxel along array axes 0, 1, 2 (= the image's index axes i, j, k);
    ``origin``: mm, the centre of voxel (0, 0, 0); ``direction``: the 3x3 direction cosines,
    row-major, as ``GetDirection`` gives them. ``origin``/``direction`` are ``None`` when
    only the voxel size is known."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] | None = None
    direction: tuple[float, ...] | None = None

    @classmethod
    def of_image(cls, img: Any) -> "Geometry":
        """The grid of a 3D ``SimpleITK.Image``."""
        return cls(tuple(float(v) for v in img.GetSpacing()),  # type: ignore[arg-type]
                   tuple(float(v) for v in img.GetOrigin()),  # type: ignore[arg-type]
                   tuple(float(v) for v in img.GetDirection()))

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> "Geometry | None":
        """The stored grid of an h5 case from its attributes, ``None`` when none is recorded.
        ``spacing_resized`` (code/preprocess.py: the stored grid's voxel size, its
        ``spacing`` being the original one) wins over ``spacing``."""
        key = "spacing_resized" if "spacing_resized" in attrs else "spacing"
        if key not in attrs:
            return None

        def floats(name: str, n: int) -> tuple[float, ...] | None:
            if name not in attrs:
                return None
            values = tuple(float(v) for v in np.ravel(attrs[name]))
            return values if len(values) == n else None

        spacing = floats(key, 3)
        if spacing is None:
            return None
        if key == "spacing_resized":  # reoriented and resized: no origin/direction kept
            return cls(spacing)  # type: ignore[arg-type]
        return cls(spacing, floats("origin", 3), floats("direction", 9))  # type: ignore[arg-type]

    def to_attrs(self) -> dict[str, np.ndarray]:
        """The h5 attributes :meth:`from_attrs` reads back (float64 arrays)."""
        out = {"spacing": np.asarray(self.spacing, np.float64)}
        if self.origin is not None:
            out["origin"] = np.asarray(self.origin, np.float64)
        if self.direction is not None:
            out["direction"] = np.asarray(self.direction, np.float64)
        return out

    def apply(self, img: Any) -> Any:
        """Set this grid on the sitk image ``img`` (the parts that are known); returns it."""
        img.SetSpacing([float(v) for v in self.spacing])
        if self.origin is not None:
            img.SetOrigin([float(v) for v in self.origin])
        if self.direction is not None:
            img.SetDirection([float(v) for v in self.direction])
        return img

    def difference(self, other: "Geometry", tol: float = 1e-4) -> str | None:
        """``None`` when both grids agree (on the parts both know, within ``tol``: mm for
        spacing and origin, cosine for direction), else what differs, e.g.
        ``"spacing (1, 1, 2) vs (1, 1, 2.5)"``."""
        for name in GEOMETRY_ATTRS:
            a, b = getattr(self, name), getattr(other, name)
            if a is None or b is None:
                continue
            if not np.allclose(a, b, rtol=0.0, atol=tol):
                fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
                return f"{name} {fmt(a)} vs {fmt(b)}"
        return None


def require_same_grid(img: Any, reference: Geometry | None, where: str, what: str,
                      other: str, size: tuple[int, ...] | None = None) -> None:
    """A one-line :class:`DataError` (``"<where>: <what> size/grid differs from the
    <other>'s (...)"``) when the sitk image ``img`` is not of ``size`` (when given) or not
    on ``reference``'s grid (when given): e.g. a label map saved on another grid than its
    scan."""
    got = tuple(int(s) for s in img.GetSize())
    if size is not None and got != tuple(size):
        raise DataError(f"{where}: {what} size {got} differs from the {other}'s {tuple(size)}")
    diff = Geometry.of_image(img).difference(reference) if reference is not None else None
    if diff is not None:
        raise DataError(f"{where}: {what} grid differs from the {other}'s ({diff}, {what} vs "
                        f"{other})")
