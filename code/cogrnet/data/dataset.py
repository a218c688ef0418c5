"""The dataset contract, one implementation for every dataset.

A dataset is a root folder plus list files (one case ID per line):
``train.list``, ``test.list`` and optionally ``val.list``. A case is an h5 file holding
``image`` (float, ``(X, Y, Z)``) and ``label`` (integer classes, same shape), stored either in
the UA-MT layout ``<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` or flat as
``<root>/<ID>.h5``; the layout is detected per case.

Every problem with a file is raised as a :class:`~cogrnet.errors.DataError` whose one-line
message names the file and the problem.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..fileio import atomic_path
from .image_io import Geometry

UAMT_DIR = "2018LA_Seg_Training Set"
UAMT_FILE = "mri_norm2.h5"
LIST_SUFFIXES = (".list", ".txt")


@dataclass
class Case:
    """One loaded case. ``image``: float32 ``(X, Y, Z)``; ``label``: uint8 ``(X, Y, Z)`` or
    ``None`` when it was not asked for (unlabeled data is never read); ``geometry``: the
    grid recorded in the file's attributes (spacing in mm, origin, direction), if any."""

    case_id: str
    path: Path
    image: np.ndarray
    label: np.ndarray | None = None
    geometry: Geometry | None = None

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        """mm per voxel along ``(X, Y, Z)`` when the file records it."""
        return self.geometry.spacing if self.geometry is not None else None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]


def read_list(path: str | Path) -> list[str]:
    """Read a list file: one ID per line, blank lines and ``#`` comments ignored.
    Duplicated IDs and empty lists are errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    ids: list[str] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line)
    if not ids:
        raise DataError(f"{path}: list file holds no case IDs")
    seen: set[str] = set()
    dups = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if dups:
        raise DataError(f"{path}: duplicated case ID(s) {', '.join(sorted(set(dups)))}")
    return ids


def find_list(root: str | Path, split: str, lists_dir: str | Path | None = None) -> Path:
    """Resolve ``split`` to a list file: an existing path as given, else ``<root>/<split>.list``
    (or ``.txt``), else the same names in ``lists_dir``."""
    direct = Path(split)
    if direct.suffix and direct.is_file():
        return direct
    places = [Path(root)] + ([Path(lists_dir)] if lists_dir else [])
    for place in places:
        for suffix in LIST_SUFFIXES:
            cand = place / f"{split}{suffix}"
            if cand.is_file():
                return cand
    where = " or ".join(str(p / f"{split}.list") for p in places)
    raise DataError(f"split '{split}': no list file found at {where}")


def case_path(root: str | Path, case_id: str) -> Path:
    """Path of a case's h5 file, in whichever layout exists (UA-MT first, then flat)."""
    root = Path(root)
    uamt = root / UAMT_DIR / case_id / UAMT_FILE
    if uamt.is_file():
        return uamt
    flat = root / f"{case_id}.h5"
    if flat.is_file():
        return flat
    raise DataError(f"case '{case_id}': no h5 file at {uamt} or {flat}")


def load_h5_case(path: str | Path, case_id: str | None = None, with_label: bool = True,
                 num_classes: int = 2) -> Case:
    """Read and validate one case file.

    Checks: readable h5, ``image`` (and ``label``) keys, 3D arrays, equal shapes, finite
    image, labels in ``[0, num_classes)``. Raises :class:`DataError` naming the file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as f:
            keys = set(f.keys())
            wanted = ["image"] + (["label"] if with_label else [])
            missing = [k for k in wanted if k not in keys]
            if missing:
                raise DataError(f"{path}: missing h5 key(s) {', '.join(missing)} "
                                f"(found: {', '.join(sorted(keys)) or 'none'})")
            image = np.asarray(f["image"][()])
            label = np.asarray(f["label"][()]) if with_label else None
            geometry = Geometry.from_attrs(f.attrs)
    except DataError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise DataError(f"{path}: corrupt or unreadable h5 file ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'no detail'})") from None
    image = validate_image(image, path)
    if label is not None:
        label = validate_label(label, image.shape, path, num_classes)
    return Case(case_id or path.stem, path, image, label, geometry)


def has_label(path: str | Path) -> bool:
    """Whether the h5 case file at ``path`` holds a dense ``label`` (nothing is read; a
    corrupt file answers ``True`` so that the normal reader reports it)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "label" in f
    except OSError:
        return True


def image_shape(path: str | Path) -> tuple[int, int, int]:
    """The ``(X, Y, Z)`` shape of a case file's ``image``, read from its header only."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            shape = tuple(int(s) for s in f["image"].shape)
    except (OSError, KeyError) as err:
        raise DataError(f"{path}: corrupt or unreadable h5 file ({type(err).__name__})") from None
    if len(shape) != 3:
        raise DataError(f"{path}: image must be 3D (X, Y, Z), got shape {shape}")
    return shape  # type: ignore[return-value]


def validate_image(image: np.ndarray, path: str | Path) -> np.ndarray:
    """A finite 3D float32 image, or a :class:`DataError` naming ``path``."""
    if image.ndim != 3:
        raise DataError(f"{path}: image must be 3D (X, Y, Z), got shape {tuple(image.shape)}")
    if not np.issubdtype(image.dtype, np.number):
        raise DataError(f"{path}: image has non-numeric dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise DataError(f"{path}: image holds {bad} NaN/inf voxel(s)")
    return image


def validate_label(label: np.ndarray, shape: Sequence[int], path: str | Path,
                   num_classes: int = 2) -> np.ndarray:
    """A 3D uint8 label of ``shape`` with values in ``[0, num_classes)``, or a DataError."""
    if label.ndim != 3:
        raise DataError(f"{path}: label must be 3D (X, Y, Z), got shape {tuple(label.shape)}")
    if tuple(label.shape) != tuple(shape):
        raise DataError(f"{path}: label shape {tuple(label.shape)} does not match image "
                        f"shape {tuple(shape)}")
    if np.issubdtype(label.dtype, np.floating):
        if not np.isfinite(label).all() or not np.all(label == np.round(label)):
            raise DataError(f"{path}: label holds non-integer values")
    elif not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        raise DataError(f"{path}: label has non-numeric dtype {label.dtype}")
    lo, hi = (label.min(), label.max()) if label.size else (0, 0)
    if lo < 0 or hi >= num_classes:
        values = np.unique(label)
        bad = values[(values < 0) | (values >= num_classes)]
        raise DataError(f"{path}: label values {bad.tolist()[:5]} outside the class range "
                        f"0..{num_classes - 1}")
    return label.astype(np.uint8, copy=False)


def require_foreground(target: np.ndarray, path: str | Path, what: str = "label",
                       why: str = "") -> None:
    """A :class:`DataError` naming ``path`` when ``target`` has no foreground voxel;
    ``why`` says what an empty one would break."""
    if not target.any():
        raise DataError(f"{path}: {what} holds no foreground voxel" + (f"; {why}" if why else ""))


INTENSITY_MODES = ("none", "zscore")


def normalize_intensity(image: np.ndarray, mode: str = "none") -> np.ndarray:
    """``(X, Y, Z)`` float32 image -> the intensities the network sees.

    ``none``: unchanged (the reference: the UA-MT LA files were z-scored over the whole scan
    before cropping, so the stored crops differ in mean and spread); ``zscore``: zero mean,
    unit standard deviation over this volume (a constant volume becomes zeros)."""
    if mode == "none":
        return image
    if mode == "zscore":
        std = float(image.std())
        return ((image - float(image.mean())) / max(std, 1e-8)).astype(np.float32)
    raise ValueError(f"unknown intensity mode '{mode}' (choose from {', '.join(INTENSITY_MODES)})")


class CaseStore:
    """Cases of one dataset root, read once and cached in memory for this process.

    ``get(case_id, with_label=False)`` never reads the label (unlabeled cases); images come
    back normalised with ``intensity`` (see :func:`normalize_intensity`)."""

    def __init__(self, root: str | Path, num_classes: int = 2, cache: bool = True,
                 intensity: str = "none"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset root folder not found")
        if intensity not in INTENSITY_MODES:
            raise ConfigError(f"intensity '{intensity}': choose from {', '.join(INTENSITY_MODES)}")
        self.intensity = intensity
        self.num_classes = num_classes
        self.cache = cache
        self._cases: dict[tuple[str, bool], Case] = {}
        self._lock = threading.Lock()

    def path(self, case_id: str) -> Path:
        return case_path(self.root, case_id)

    def has_label(self, case_id: str) -> bool:
        """Whether the case's file holds a dense label (the label itself is not read)."""
        return has_label(self.path(case_id))

    def get(self, case_id: str, with_label: bool = True) -> Case:
        key = (case_id, with_label)
        with self._lock:
            hit = self._cases.get(key) or (self._cases.get((case_id, True)) if not with_label
                                           else None)
            if hit is not None:
                if not with_label and hit.label is not None:
                    return Case(hit.case_id, hit.path, hit.image, None, hit.geometry)
                return hit
        case = load_h5_case(self.path(case_id), case_id, with_label, self.num_classes)
        case.image = normalize_intensity(case.image, self.intensity)
        if self.cache:
            with self._lock:
                self._cases[key] = case
        return case

    def check_ids(self, ids: Iterable[str], list_name: str = "list") -> list[str]:
        """Fail early, naming the list, when an ID has no file."""
        ids = list(ids)
        missing = []
        for i in ids:
            try:
                self.path(i)
            except DataError:
                missing.append(i)
        if missing:
            raise DataError(f"{list_name}: unknown case ID(s) with no h5 file under {self.root}: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return ids

    def split(self, split: str, lists_dir: str | Path | None = None) -> list[str]:
        """IDs of a split name (``train``/``val``/``test``) or list-file path, checked."""
        path = find_list(self.root, split, lists_dir)
        return self.check_ids(read_list(path), str(path))


def write_case_h5(path: str | Path, image: np.ndarray, label: np.ndarray | None,
                  geometry: Geometry | None = None, attrs: dict | None = None) -> None:
    """Write ``image``/``label`` to an h5 file (gzip, like the UA-MT files), atomically;
    ``geometry`` and ``attrs`` (plain values) go to the file's attributes."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=image, compression="gzip")
        if label is not None:
            f.create_dataset("label", data=label, compression="gzip")
        for key, value in {**(attrs or {}), **(geometry.to_attrs() if geometry else {})}.items():
            f.attrs[key] = value
