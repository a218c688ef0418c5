"""Raw CT releases (KiTS19, LiTS) -> the project's flat h5 dataset: the presets and the
per-case / per-release runner (steps 1-2 below are :mod:`cogrnet.data.raw_ct`, 3-7
:mod:`cogrnet.data.ct_transforms`).

Pipeline per case (all deterministic; nothing here is random):

1. **Read** image and segmentation with SimpleITK and check them (3D, same grid, finite
   image, integer labels within the preset's raw label range).
2. **Reorient** to the ``(X, Y, Z)`` convention of the dataset contract with the image
   direction: output axis 0/1/2 runs along the patient's physical x/y/z axis (LPS), so
   Z (axis 2) is always the axial slice axis (KiTS19 stores it first, LiTS last).
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

Case IDs and the raw file layout: :mod:`cogrnet.data.raw_ct`.
"""
from __future__ import annotations

import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import ConfigError, DataError, writable_dir
from ..fileio import atomic_path
from ..parallel import run_cases
from ..presets import PRESETS, PreprocessPreset
from .ct_transforms import ProcessedCase, preprocess_arrays
from .raw_ct import RawCase, find_raw_cases, load_raw_case

H5_SUFFIX = ".h5"
LIST_NAMES = ("train.list", "test.list")


# --------------------------------------------------------------------------------------
# presets


#: the raw CT releases: the ``preprocess`` part of their dataset presets (cogrnet.presets)
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
# one case, files in and out


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


@dataclass(frozen=True)
class CaseChoice:
    """Which raw cases :func:`preprocess_release` converts: ``ids``, else every raw case
    (``all_cases``, or no lists), else the IDs of ``lists_dir``'s lists (default: the
    preset's; ``"none"``: no lists), whose list files are copied to the output folder."""

    lists_dir: str | Path | None = None
    ids: Sequence[str] | None = None
    all_cases: bool = False


def preprocess_release(dataset: str, raw_dir: str | Path, out_dir: str | Path | None = None,
                       cases: CaseChoice = CaseChoice(), workers: int = 1,
                       overwrite: bool = False, out_size: Sequence[int] | None = None,
                       progress: bool = True,
                       log: Callable[[str], None] = _stderr) -> list[CaseResult]:
    """Convert the raw ``dataset`` release (``kits`` or ``lits``) under ``raw_dir`` into
    ``out_dir`` (default: the dataset preset's root_path): the ``cases`` chosen (see
    :class:`CaseChoice`). ``code/preprocess.py``'s flags; ``log`` gets the progress lines.
    Returns one :class:`CaseResult` per case (a failed case does not stop the others)."""
    if workers < 1:
        raise ConfigError(f"--workers: need at least 1, got {workers}")
    preset = get_preprocess_preset(dataset, out_size)
    ds = PRESETS[dataset]
    out = Path(out_dir or ds.root_path)
    lists = (None if str(cases.lists_dir or "").lower() == "none"
             else (cases.lists_dir or ds.lists_dir))

    chosen = list(cases.ids) if cases.ids else None
    if chosen is None and not cases.all_cases and lists is not None:
        chosen = list_ids(lists)
    raw_cases = list(find_raw_cases(raw_dir, preset, chosen).values())
    if not raw_cases:
        raise ConfigError(f"--raw_dir {raw_dir}: no {dataset} cases found")
    source = ("--ids" if cases.ids else "every raw case" if (cases.all_cases or chosen is None)
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
