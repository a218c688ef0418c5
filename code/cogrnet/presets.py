"""Dataset presets and defaults shared by the entry scripts.

A preset holds what differs between datasets (patch size, lists, annotated planes,
schedule, and for the CT releases how they are preprocessed); everything else comes from
the command line. This is the one preset registry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
MODEL_DIR = REPO_ROOT / "model"


@dataclass(frozen=True)
class PreprocessPreset:
    """How ``code/preprocess.py`` turns a raw CT release into a preset's h5 files.

    ``window_hu``: ``(low, high)`` Hounsfield window. ``out_size``: stored ``(X, Y, Z)``
    shape in voxels. ``target_values``: raw label values that form the binary target.
    ``max_raw_label``: largest raw label value accepted. ``body_threshold_hu``: HU above
    which a voxel counts as body for the crop box. ``margin``: in-plane margin (voxels of the
    original grid) around the body box."""

    name: str
    window_hu: tuple[float, float]
    out_size: tuple[int, int, int]
    target_values: tuple[int, ...] = (1, 2)
    max_raw_label: int = 2
    body_threshold_hu: float = -500.0
    margin: int = 20
    description: str = ""

    def with_out_size(self, out_size: Sequence[int] | None) -> "PreprocessPreset":
        """The same preset with another output size (tests, quick looks); ``None`` keeps it."""
        from .errors import ConfigError

        if out_size is None:
            return self
        size = tuple(int(s) for s in out_size)
        if len(size) != 3 or min(size) < 1:
            raise ConfigError(f"--out_size: need three positive sizes X Y Z, got {list(out_size)}")
        return replace(self, out_size=size)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DatasetPreset:
    """What one dataset needs beyond the generic defaults.

    ``axes``: the two annotated planes (array axes of the ``(X, Y, Z)`` volume), plane A
    first. ``intensity``: the default of ``--intensity`` (every preset: ``zscore``, since
    the stored LA crops differ in mean and spread; ``none`` reproduces the reference).
    ``stored_intensity``: how the h5 images were made from the scans (``zscore`` per volume:
    the UA-MT LA files, code/preprocess.py's, the phantoms; ``none``: own data keeps the
    scan's intensities), what ``predict.py`` redoes on a raw scan. ``stride_xy``/``stride_z``:
    the paper's sliding-window strides in voxels. ``refine``: the default of the
    registration's ``--refine`` (``intensity`` where it was measured to help: LA, phantoms).
    """

    name: str
    root_path: str
    patch_size: tuple[int, int, int]
    num_classes: int = 2
    axes: tuple[int, int] = (2, 1)
    labelnum: int = 5
    pre_max_iteration: int = 2000
    self_max_iteration: int = 10000
    stride_xy: int = 18
    stride_z: int = 4
    lists_dir: str | None = None
    intensity: str = "zscore"  # per-volume normalisation on loading ("none": the reference)
    stored_intensity: str = "zscore"  # how the h5 images were made from the scans
    refine: str = "none"  # registration's --refine (measured on LA and the phantoms only)
    preprocess: PreprocessPreset | None = None  # the raw CT release (kits, lits)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ct_preset(name: str, release: str, patch_size: tuple[int, int, int], labelnum: int,
               window_hu: tuple[float, float], out_size: tuple[int, int, int], raw: str,
               notes: str) -> DatasetPreset:
    """The preset of a raw CT ``release`` that ``code/preprocess.py`` turns into h5 files
    (lists in ``data/<release>``, cases in ``data/<release>/h5``) with the Hounsfield window
    ``window_hu`` and the stored size ``out_size``. ``raw``: what the release's files hold;
    the description is ``"<release>: <raw>"``, the notes ``"<release> resized to XxYxZ;
    <notes>"``."""
    size = "x".join(str(s) for s in out_size)
    return DatasetPreset(
        name=name, root_path=str(DATA_DIR / release / "h5"), patch_size=patch_size,
        labelnum=labelnum, lists_dir=str(DATA_DIR / release),
        notes=f"{release} resized to {size}; {notes}",
        preprocess=PreprocessPreset(name=name, window_hu=window_hu, out_size=out_size,
                                    description=f"{release}: {raw}"))


PRESETS: dict[str, DatasetPreset] = {
    "la": DatasetPreset(
        name="la", root_path=str(DATA_DIR / "LA"), patch_size=(112, 112, 80),
        axes=(2, 1), labelnum=5, lists_dir=str(DATA_DIR / "LA"), refine="intensity",
        notes="2018 Atrial Segmentation Challenge, UA-MT preprocessing; 80 train / 20 test."),
    "kits": _ct_preset(
        "kits", "KiTS19", (128, 128, 64), labelnum=19, window_hu=(-160.0, 240.0),
        out_size=(192, 192, 64), notes="target kidney+tumour; 190 train / 20 test.",
        raw="case_XXXXX/imaging.nii.gz + segmentation.nii.gz; labels 0 background, 1 kidney, "
            "2 tumour; target kidney+tumour"),
    "lits": _ct_preset(
        "lits", "LiTS", (176, 176, 64), labelnum=10, window_hu=(-100.0, 200.0),
        out_size=(176, 176, 64), notes="target liver (incl. tumour); 100 train / 31 test.",
        raw="volume-N.nii + segmentation-N.nii; labels 0 background, 1 liver, 2 tumour; "
            "target liver incl. tumour"),
    "custom": DatasetPreset(
        name="custom", root_path="", patch_size=(112, 112, 80), axes=(2, 1), labelnum=0,
        stride_xy=56, stride_z=40, stored_intensity="none",
        notes="Your own data, imported by code/import_dataset.py: give --root_path; the "
              "patch is LA's shrunk to the median volume shape (see custom_preset), strides "
              "half the patch, LA's schedule, labelnum from the import record."),
    "phantom": DatasetPreset(
        name="phantom", root_path=str(DATA_DIR / "phantom"), patch_size=(48, 48, 32),
        axes=(2, 1), labelnum=4, pre_max_iteration=100, self_max_iteration=300,
        stride_xy=16, stride_z=8, refine="intensity",
        notes="Synthetic phantoms made by code/make_phantom.py (demo and tests)."),
}


#: the record code/import_dataset.py writes into the root it makes
IMPORT_RECORD = "import.json"


def dataset_for_root(dataset: str | None, root_path: str | Path | None, default: str) -> str:
    """The preset name a script works with: ``dataset`` when given; else ``custom`` when
    ``root_path`` holds the import record (a root made by code/import_dataset.py says what
    it is by itself); else ``default``."""
    if dataset:
        return dataset
    if root_path and (Path(root_path) / IMPORT_RECORD).is_file():
        return "custom"
    return default


def get_preset(name: str) -> DatasetPreset:
    from .errors import ConfigError

    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ConfigError(f"--dataset: unknown dataset '{name}' "
                          f"(choose from {', '.join(sorted(PRESETS))})") from None


def custom_preset(root_path: str, shapes: Sequence[Sequence[int]],
                  labelnum: int | None = None,
                  patch_size: Sequence[int] | None = None) -> DatasetPreset:
    """The ``custom`` preset for a dataset whose volumes have ``shapes`` (``(X, Y, Z)``):
    the patch ``patch_size`` when given, else the reference patch (LA's 112x112x80), each
    side shrunk to the median volume size where that is smaller and rounded down to a
    multiple of 16 (at least 16); strides half the patch (in-plane: of its smaller side);
    ``labelnum`` when known (the import record's)."""
    import numpy as np

    base = PRESETS["custom"]
    median = np.median(np.asarray(shapes, dtype=np.float64).reshape(-1, 3), axis=0)
    patch = (tuple(int(p) for p in patch_size) if patch_size is not None else
             tuple(max(16, min(p, int(m)) // 16 * 16) for p, m in zip(base.patch_size, median)))
    return replace(base, root_path=str(root_path), patch_size=patch,  # type: ignore[arg-type]
                   stride_xy=max(1, min(patch[0], patch[1]) // 2),
                   stride_z=max(1, patch[2] // 2),
                   labelnum=base.labelnum if labelnum is None else int(labelnum))

