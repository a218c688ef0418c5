"""Raw CT releases (KiTS19, LiTS) -> the project's flat h5 dataset, one module with presets.

Pipeline per case (all deterministic; nothing here is random):

1. **Read** image and segmentation with SimpleITK and check them (3D, same grid, finite
   image, integer labels within the preset's raw label range).
2. **Reorient** to the ``(X, Y, Z)`` convention of the dataset contract. SimpleITK's
   ``GetArrayFromImage`` returns ``(k, j, i)`` (slowest index axis first), so the array is
   first transposed to index order ``(i, j, k)``; then the index axes are permuted and flipped
   with the image direction so that output axis 0/1/2 runs along the patient's physical
   x/y/z axis (LPS: towards Left, Posterior, Superior). Z (axis 2) is therefore always the
   axial slice axis. This matters: KiTS19 stores the axial axis as the *first* NIfTI axis
   (``(num_slices, 512, 512)``), LiTS as the last.
3. **Window** the Hounsfield units to the preset window and scale to ``[0, 1]``.
4. **Body mask** per axial slice: ``HU > body_threshold_hu``, largest 2D connected component
   (drops the patient table and other objects separated by air). Used only for the crop box,
   so :func:`body_mask`'s hole filling is skipped there; the image itself is not masked.
5. **Crop** in-plane to the body bounding box (union over slices) +- ``margin`` voxels,
   clipped to the volume. Z is never cropped. The label is never used to choose a crop
   (the reference crops z to the label extent +-10 slices, test cases included: a leak).
6. **Resize** to the preset's output size: image linear (order 1), raw labels nearest
   (order 0); the binary target is derived from the resized raw labels.
7. **Normalise**: the stored ``image`` is z-scored per volume (mean 0, std 1 over the whole
   resized ``[0, 1]`` volume), the same convention as the UA-MT LA files, so the training
   loader treats every dataset alike. The ``[0, 1]`` volume is not stored; it is
   ``image * attrs['zscore_std'] + attrs['zscore_mean']``.

Output ``<out_dir>/<ID>.h5`` (flat layout of :mod:`cogrnet.data.dataset`):

- ``image``: float32 ``(X, Y, Z)``, z-scored;
- ``label``: uint8 ``(X, Y, Z)`` binary target (KiTS: kidney+tumour, LiTS: liver incl.
  tumour; both ``raw label > 0``);
- ``label_raw``: uint8 ``(X, Y, Z)`` raw classes (0 background, 1 organ, 2 tumour);
- attrs: ``preset``, ``window_hu``, ``spacing`` (original voxel size in mm, ``(X, Y, Z)``
  after reorientation), ``spacing_resized`` (voxel size of the stored grid, mm),
  ``original_shape`` (reoriented), ``crop_box`` (``[[x0, x1], [y0, y1], [z0, z1]]``,
  half-open, reoriented original voxels), ``zscore_mean``/``zscore_std``,
  ``label_voxels_outside_crop`` (a quality check only: raw foreground voxels the body crop
  cut off, expected 0), ``source_image``/``source_label`` (file names), ``target_values``.

IDs follow the project's split lists: ``case_00012`` (KiTS19:
``<raw>/case_00012/imaging.nii.gz`` + ``segmentation.nii.gz``; ``<raw>`` may also be the
kits19 repository root holding ``data/``) and ``volume-12`` (LiTS: ``volume-12.nii`` +
``segmentation-12.nii`` anywhere below ``<raw>``, e.g. in the "Training Batch 1/2" folders;
``.nii.gz`` accepted too).
"""
from __future__ import annotations

import itertools
import re
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from ..config import PRESETS, PreprocessPreset
from ..errors import ConfigError, DataError, writable_dir
from ..fileio import atomic_path
from ..parallel import run_cases
from .image_io import image_array, read_image
from .transforms import resize_volume

H5_SUFFIX = ".h5"
LIST_NAMES = ("train.list", "test.list")


# --------------------------------------------------------------------------------------
# presets


#: the raw CT releases: the ``preprocess`` part of their dataset presets (cogrnet.config)
PREPROCESS_PRESETS: dict[str, PreprocessPreset] = {
    name: p.preprocess for name, p in PRESETS.items() if p.preprocess is not None}


def get_preprocess_preset(name: str, out_size: Sequence[int] | None = None) -> PreprocessPreset:
    """The preset called ``name`` (``kits``/``lits``), optionally with another ``out_size``."""
    try:
        preset = PREPROCESS_PRESETS[name.lower()]
    except KeyError:
        raise ConfigError(f"--dataset: no preprocessing preset '{name}' "
                          f"(choose from {', '.join(sorted(PREPROCESS_PRESETS))})") from None
    return preset.with_out_size(out_size)


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
# deterministic transforms


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
    ``label_raw``: uint8 raw classes; ``attrs``: h5 attributes (see the module doc)."""

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


# --------------------------------------------------------------------------------------
# one case, files in and out


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


def write_processed_h5(path: str | Path, case: ProcessedCase) -> None:
    """Write ``image``/``label``/``label_raw`` (gzip) and attrs to ``path`` atomically
    (:func:`cogrnet.fileio.atomic_path`)."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("image", data=case.image, compression="gzip")
        if case.label is not None:
            f.create_dataset("label", data=case.label, compression="gzip")
        if case.label_raw is not None:
            f.create_dataset("label_raw", data=case.label_raw, compression="gzip")
        for key, value in case.attrs.items():
            f.attrs[key] = value


@dataclass
class CaseResult:
    """Outcome of one case: ``status`` is ``done``, ``skipped`` (output existed) or
    ``failed`` (``message`` is the one-line reason, ``detail`` a traceback for internal
    errors)."""

    case_id: str
    status: str
    path: str
    message: str = ""
    seconds: float = 0.0
    detail: str = ""


def preprocess_case(raw: RawCase, out_dir: str | Path, preset: PreprocessPreset,
                    overwrite: bool = False) -> CaseResult:
    """Process one raw case into ``<out_dir>/<ID>.h5``; never raises for bad data.

    An existing output is kept (``skipped``) unless ``overwrite``. A :class:`DataError`
    becomes a ``failed`` result with its one-line message; any other exception too, as
    ``internal error`` with the traceback in ``detail``."""
    t0 = time.perf_counter()
    out = Path(out_dir) / f"{raw.case_id}{H5_SUFFIX}"
    if out.exists() and not overwrite:
        return CaseResult(raw.case_id, "skipped", str(out))
    try:
        image_hu, label_raw, spacing = load_raw_case(raw, preset)
        try:
            case = preprocess_arrays(image_hu, label_raw, preset, spacing)
        except DataError as err:
            raise DataError(f"{raw.image}: {err}") from None
        case.attrs["source_image"] = raw.image.name
        case.attrs["source_label"] = raw.label.name if raw.label else ""
        write_processed_h5(out, case)
    except DataError as err:
        return CaseResult(raw.case_id, "failed", str(out), str(err),
                          time.perf_counter() - t0)
    except Exception as err:  # noqa: BLE001 - one bad case must not stop the others
        return CaseResult(raw.case_id, "failed", str(out),
                          f"{raw.image}: internal error ({type(err).__name__}: {err})",
                          time.perf_counter() - t0, traceback.format_exc())
    return CaseResult(raw.case_id, "done", str(out), "", time.perf_counter() - t0)


def _worker(args: tuple[RawCase, str, PreprocessPreset, bool]) -> CaseResult:
    return preprocess_case(*args)


def _worker_init() -> None:
    """Keep each worker process single-threaded (the pool is the parallelism)."""
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except Exception:  # noqa: BLE001 - an optimisation only
        pass


def run_preprocessing(raw_cases: Sequence[RawCase], out_dir: str | Path,
                      preset: PreprocessPreset, workers: int = 1, overwrite: bool = False,
                      progress: bool = True,
                      on_result: Callable[[CaseResult], None] | None = None
                      ) -> list[CaseResult]:
    """Process ``raw_cases`` into ``out_dir`` with ``workers`` processes (1: in this
    process), a tqdm bar when ``progress``. Returns one :class:`CaseResult` per case, in
    the order of ``raw_cases``; failures never stop the other cases, a worker process that
    dies neither (:func:`cogrnet.parallel.run_cases`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(raw, str(out_dir), preset, overwrite) for raw in raw_cases]

    def failed(job: tuple[RawCase, str, PreprocessPreset, bool], reason: str) -> CaseResult:
        raw = job[0]
        return CaseResult(raw.case_id, "failed", str(out_dir / f"{raw.case_id}{H5_SUFFIX}"),
                          f"{raw.image}: {reason}")

    results = run_cases(_worker, jobs, workers, f"preprocess {preset.name}",
                        key=lambda job: job[0].case_id, failure=failed, progress=progress,
                        initializer=_worker_init,
                        postfix=lambda res: f"{res.case_id} {res.status}", on_result=on_result)
    return [results[raw.case_id] for raw in raw_cases]


def copy_split_lists(lists_dir: str | Path, out_dir: str | Path,
                     overwrite: bool = False) -> list[Path]:
    """Copy ``train.list``/``test.list`` from ``lists_dir`` into ``out_dir`` when present.
    An existing different list in ``out_dir`` is kept unless ``overwrite``. Returns the
    lists written."""
    written = []
    for name in LIST_NAMES:
        src, dst = Path(lists_dir) / name, Path(out_dir) / name
        if not src.is_file():
            continue
        if dst.exists() and not overwrite and dst.read_text() != src.read_text():
            continue
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        written.append(dst)
    return written


def list_ids(lists_dir: str | Path) -> list[str] | None:
    """IDs of ``train.list`` then ``test.list`` in ``lists_dir`` (deduplicated, in order);
    ``None`` when neither list exists."""
    from .dataset import read_list

    ids: list[str] = []
    found = False
    for name in LIST_NAMES:
        path = Path(lists_dir) / name
        if path.is_file():
            found = True
            ids += [i for i in read_list(path) if i not in ids]
    return ids if found else None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def preprocess_release(dataset: str, raw_dir: str | Path, out_dir: str | Path | None = None,
                       lists_dir: str | Path | None = None, ids: Sequence[str] | None = None,
                       all_cases: bool = False, workers: int = 1, overwrite: bool = False,
                       out_size: Sequence[int] | None = None, progress: bool = True,
                       log: Callable[[str], None] = _stderr) -> list[CaseResult]:
    """Convert the raw ``dataset`` release (``kits`` or ``lits``) under ``raw_dir`` into
    ``out_dir`` (default: the dataset preset's root_path): the cases of ``ids``, else every
    raw case (``all_cases``, or no lists), else the IDs of ``lists_dir``'s lists (default:
    the preset's; ``"none"``: no lists), whose list files are copied to ``out_dir``.
    ``code/preprocess.py``'s flags; ``log`` gets the progress lines. Returns one
    :class:`CaseResult` per case (a failed case does not stop the others)."""
    if workers < 1:
        raise ConfigError(f"--workers: need at least 1, got {workers}")
    preset = get_preprocess_preset(dataset, out_size)
    ds = PRESETS[dataset]
    out = Path(out_dir or ds.root_path)
    lists = None if str(lists_dir or "").lower() == "none" else (lists_dir or ds.lists_dir)

    chosen = list(ids) if ids else None
    if chosen is None and not all_cases and lists is not None:
        chosen = list_ids(lists)
    raw_cases = list(find_raw_cases(raw_dir, preset, chosen).values())
    if not raw_cases:
        raise ConfigError(f"--raw_dir {raw_dir}: no {dataset} cases found")
    source = ("--ids" if ids else "every raw case" if (all_cases or chosen is None)
              else f"lists in {lists}")
    writable_dir(out, "--out_dir")
    log(f"{len(raw_cases)} case(s) ({source}) -> {out}, size "
        f"{'x'.join(map(str, preset.out_size))}, window {list(preset.window_hu)} HU, "
        f"{workers} worker(s)")

    results = run_preprocessing(raw_cases, out, preset, workers=workers, overwrite=overwrite,
                                progress=progress)
    if lists is not None:
        from .dataset import read_list

        for path in copy_split_lists(lists, out, overwrite=overwrite):
            log(f"wrote {path}")
            missing = [i for i in read_list(path) if not (out / f"{i}.h5").exists()]
            if missing:
                log(f"note: {len(missing)} ID(s) of {path.name} have no h5 in {out} yet "
                    f"(e.g. {missing[0]})")
    return results
