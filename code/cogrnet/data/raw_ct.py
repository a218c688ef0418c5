"""Raw KiTS19/LiTS cases on disk: finding them, reading NIfTI, reorienting to ``(X, Y, Z)``.

SimpleITK's ``GetArrayFromImage`` returns ``(k, j, i)`` (slowest index axis first);
:func:`read_nifti` transposes it to index order ``(i, j, k)``, then
:func:`orientation_from_direction` and :func:`to_xyz` permute and flip the index axes with
the image direction so that output axis 0/1/2 runs along the patient's physical x/y/z axis
(LPS: towards Left, Posterior, Superior). Z (axis 2) is therefore always the axial slice
axis. This matters: KiTS19 stores the axial axis as the *first* NIfTI axis
(``(num_slices, 512, 512)``), LiTS as the last. :func:`load_raw_case` reads and checks one
case: float32 HU and uint8 raw classes ``(X, Y, Z)``, spacing in mm.

IDs follow the project's split lists: ``case_00012`` (KiTS19:
``<raw>/case_00012/imaging.nii.gz`` + ``segmentation.nii.gz``; ``<raw>`` may also be the
kits19 repository root holding ``data/``) and ``volume-12`` (LiTS: ``volume-12.nii`` +
``segmentation-12.nii`` anywhere below ``<raw>``, e.g. in the "Training Batch 1/2" folders;
``.nii.gz`` accepted too).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..presets import PreprocessPreset
from .image_io import image_array, read_image


# --------------------------------------------------------------------------------------
# locating raw files


@dataclass(frozen=True)
class RawCase:
    """Paths of one raw case; ``label`` is ``None`` when no segmentation file was found."""

    case_id: str
    image: Path
    label: Path | None


_KITS_ID = re.compile(r"^case_\d{5}$")
_LITS_ID = re.compile(r"^volume-(\d+)$")
_LITS_FILE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")


def _kits_base(raw_dir: Path) -> Path:
    """``raw_dir`` itself, or its ``data/`` folder when given the kits19 repository root."""
    if not any(raw_dir.glob("case_*")) and (raw_dir / "data").is_dir():
        return raw_dir / "data"
    return raw_dir


def _lits_index(raw_dir: Path) -> dict[tuple[str, str], Path]:
    """``(kind, number) -> path`` for every LiTS file below ``raw_dir`` (kind: volume or
    segmentation). A ``.nii`` file wins over a ``.nii.gz`` twin."""
    index: dict[tuple[str, str], Path] = {}
    for path in sorted(raw_dir.rglob("*.nii*")):
        m = _LITS_FILE.match(path.name)
        if not m:
            continue
        key = (m.group(1), str(int(m.group(2))))
        if key not in index or path.suffix == ".nii":
            index[key] = path
    return index


def find_raw_cases(raw_dir: str | Path, preset: PreprocessPreset,
                   ids: Iterable[str] | None = None) -> dict[str, RawCase]:
    """Raw cases under ``raw_dir``: all that have an image file, or exactly ``ids``.

    A requested ID without an image file is still returned (``image`` points where the file
    was expected) so that processing it reports the missing file. Raises
    :class:`DataError` when ``raw_dir`` is not a folder."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw data folder not found")
    wanted = list(ids) if ids is not None else None
    out: dict[str, RawCase] = {}
    if preset.name == "kits":
        base = _kits_base(raw_dir)
        if wanted is None:
            wanted = sorted(p.name for p in base.iterdir()
                            if p.is_dir() and _KITS_ID.match(p.name)
                            and (p / "imaging.nii.gz").exists())
        for cid in wanted:
            seg = base / cid / "segmentation.nii.gz"
            out[cid] = RawCase(cid, base / cid / "imaging.nii.gz", seg if seg.exists() else None)
    elif preset.name == "lits":
        index = _lits_index(raw_dir)
        if wanted is None:
            wanted = [f"volume-{n}" for n in sorted({k[1] for k in index if k[0] == "volume"},
                                                     key=int)]
        for cid in wanted:
            m = _LITS_ID.match(cid)
            num = str(int(m.group(1))) if m else cid
            out[cid] = RawCase(cid, index.get(("volume", num), raw_dir / f"{cid}.nii"),
                               index.get(("segmentation", num)))
    else:
        raise ConfigError(f"preset '{preset.name}': unknown raw layout")
    return out


# --------------------------------------------------------------------------------------
# reading and orientation


def read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a 3D NIfTI file with SimpleITK.

    Returns ``(array, direction, spacing)``: ``array`` in *index order* ``(i, j, k)`` (the
    transpose of ``GetArrayFromImage``'s ``(k, j, i)``), ``direction`` the 3x3 matrix whose
    column ``n`` is the physical (LPS) unit vector of index axis ``n``, ``spacing`` in mm per
    index axis. A 4D file with one time point is read as 3D. Raises :class:`DataError`
    naming the file when it is missing, unreadable, not 3D or not numeric."""
    img = read_image(path, "NIfTI")
    arr = image_array(img, path)  # (k, j, i)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: non-numeric voxel type {arr.dtype}")
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    return arr.transpose(2, 1, 0), direction, tuple(float(s) for s in img.GetSpacing())


def orientation_from_direction(direction: np.ndarray) -> tuple[tuple[int, int, int],
                                                                tuple[bool, bool, bool]]:
    """Index-axis permutation and flips that bring an index-order array to ``(X, Y, Z)``.

    ``direction``: 3x3, column ``n`` = physical unit vector of index axis ``n``. Returns
    ``(perm, flip)``: output axis ``p`` is index axis ``perm[p]``, reversed when ``flip[p]``,
    so that it runs towards +x/+y/+z (LPS: Left, Posterior, Superior). ``perm`` maximises
    the summed alignment, so oblique scans go to their closest physical axes."""
    d = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))
    perm = max(itertools.permutations(range(3)),
               key=lambda pm: sum(d[p, pm[p]] for p in range(3)))
    flip = tuple(bool(direction[p, perm[p]] < 0) for p in range(3))
    return tuple(perm), flip  # type: ignore[return-value]


def to_xyz(array_ijk: np.ndarray, perm: Sequence[int], flip: Sequence[bool]) -> np.ndarray:
    """Apply :func:`orientation_from_direction`'s ``(perm, flip)`` to an ``(i, j, k)``
    array; returns a (possibly non-contiguous) ``(X, Y, Z)`` view."""
    out = array_ijk.transpose(tuple(perm))
    for axis, f in enumerate(flip):
        if f:
            out = np.flip(out, axis=axis)
    return out


# --------------------------------------------------------------------------------------
# one raw case


def load_raw_case(raw: RawCase, preset: PreprocessPreset
                  ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read and check one raw case; returns ``(image_hu, label_raw, spacing)`` reoriented to
    ``(X, Y, Z)`` (float32 HU, uint8 raw classes, mm). Raises :class:`DataError` naming the
    file for a missing segmentation, unreadable file, grid mismatch, NaN or bad labels."""
    if raw.label is None:
        expected = (raw.image.parent / "segmentation.nii.gz" if preset.name == "kits"
                    else raw.image.with_name(raw.image.name.replace("volume", "segmentation", 1)))
        if not raw.image.is_file():
            raise DataError(f"{raw.image}: file not found")
        raise DataError(f"{expected}: segmentation file not found")
    img, direction, spacing = read_nifti(raw.image)
    seg, _, _ = read_nifti(raw.label)
    if img.shape != seg.shape:
        raise DataError(f"{raw.label}: segmentation shape {seg.shape} does not match image "
                        f"shape {img.shape} of {raw.image.name}")
    # Note: SimpleITK's NIfTI reader returns NaN voxels as 0, so this check only fires for
    # readers/formats that keep them; preprocess_arrays checks again.
    if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
        bad = int((~np.isfinite(img)).sum())
        raise DataError(f"{raw.image}: image holds {bad} NaN/inf voxel(s)")
    if np.issubdtype(seg.dtype, np.floating):
        if not np.isfinite(seg).all() or not np.all(seg == np.round(seg)):
            raise DataError(f"{raw.label}: segmentation holds non-integer values")
    lo, hi = (seg.min(), seg.max()) if seg.size else (0, 0)
    if lo < 0 or hi > preset.max_raw_label:
        values = np.unique(seg)
        bad = values[(values < 0) | (values > preset.max_raw_label)].tolist()[:5]
        raise DataError(f"{raw.label}: label values {bad} outside 0..{preset.max_raw_label}")
    perm, flip = orientation_from_direction(direction)
    image_hu = np.ascontiguousarray(to_xyz(img, perm, flip), dtype=np.float32)
    label_raw = np.ascontiguousarray(to_xyz(seg, perm, flip)).astype(np.uint8)
    spacing_xyz = tuple(float(spacing[p]) for p in perm)
    return image_hu, label_raw, spacing_xyz  # type: ignore[return-value]
