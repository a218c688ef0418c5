"""Your own scans -> the project's h5 dataset layout: a folder of NIfTI (NRRD, MHA) images,
optional dense labels and optional two-slice annotations, as nnU-Net-style folders::

    DIR/imagesTr/<ID>.nii.gz   (or <ID>_0000.nii.gz)   training images
    DIR/labelsTr/<ID>.nii.gz                           dense labels (optional, any subset)
    DIR/annotationsTr/<ID>.nii.gz                      two painted slices (optional)
                                                       (or a 3D Slicer <ID>.seg.nrrd)
    DIR/imagesTs/, DIR/labelsTs/                       test images and labels (optional)

Each case becomes ``ROOT/<ID>.h5`` (flat layout of :mod:`cogrnet.data.dataset`): ``image``
float32 ``(X, Y, Z)`` = the file's index axes (i, j, k), intensities as stored in the file
(the training stage normalises them); ``label`` uint8 when a dense label exists; the grid in
the attributes ``spacing``/``origin``/``direction`` (see
:class:`~cogrnet.data.image_io.Geometry`) and the source files in ``source_image`` /
``source_label``. Nothing is resampled unless asked (``resample``). ``train.list`` holds the
annotated cases first (so ``--labelnum`` = their number), ``test.list`` the ``imagesTs``
cases; ``ROOT/import.json`` records what was imported, with each annotation's two planes
and the segment names of 3D Slicer files (:mod:`cogrnet.data.segmentation`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..data.image_io import Geometry, sitk_module
from ..data.nifti import case_ids, image_files, image_stem
from ..errors import CoGRNetError, ConfigError, DataError
from ..fileio import write_json_atomic, write_text_atomic
from ..presets import IMPORT_RECORD

RECORD = IMPORT_RECORD
FOLDERS = ("imagesTr", "labelsTr", "annotationsTr", "imagesTs", "labelsTs")


@dataclass(frozen=True)
class SourceCase:
    """The files of one case: ``image`` always, ``label``/``annotation`` when present."""

    case_id: str
    split: str  # "train" | "test"
    image: Path
    label: Path | None = None
    annotation: Path | None = None


def scan_folder(folder: Path, images: bool) -> dict[str, Path]:
    """``ID -> file`` for the image files of ``folder`` (empty when it does not exist);
    ``images``: IDs by :func:`case_ids` (label maps keep their whole stem). Two files of
    one ID (e.g. ``.nii.gz`` and ``.nrrd``) are an error."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    paths = image_files(folder)
    for path, case_id in zip(paths, case_ids(paths) if images
                             else [image_stem(p) for p in paths]):
        if case_id in found:
            raise DataError(f"{path}: case '{case_id}' has two files ({found[case_id].name} "
                            f"and {path.name}); keep one")
        found[case_id] = path
    return found


def find_source_cases(input_dir: str | Path) -> list[SourceCase]:
    """Pair the files of ``input_dir``'s folders by case ID (training cases, then test
    cases, each sorted by ID). A label or annotation without its image, a test ID that is
    also a training ID, or no training image at all is a one-line :class:`DataError`."""
    root = Path(input_dir)
    if not root.is_dir():
        raise DataError(f"--input_dir {root}: folder not found")
    found = {name: scan_folder(root / name, images=name.startswith("images"))
             for name in FOLDERS}
    if not found["imagesTr"]:
        raise DataError(f"{root / 'imagesTr'}: no training image (.nii.gz, .nii, .nrrd, "
                        ".mha) found")
    for extra, images in (("labelsTr", "imagesTr"), ("annotationsTr", "imagesTr"),
                          ("labelsTs", "imagesTs")):
        orphans = sorted(set(found[extra]) - set(found[images]))
        if orphans:
            raise DataError(f"{found[extra][orphans[0]]}: no image of case '{orphans[0]}' in "
                            f"{root / images}")
    both = sorted(set(found["imagesTr"]) & set(found["imagesTs"]))
    if both:
        raise DataError(f"{found['imagesTs'][both[0]]}: case '{both[0]}' is in imagesTr too")
    cases = [SourceCase(i, "train", p, found["labelsTr"].get(i), found["annotationsTr"].get(i))
             for i, p in sorted(found["imagesTr"].items())]
    cases += [SourceCase(i, "test", p, found["labelsTs"].get(i))
              for i, p in sorted(found["imagesTs"].items())]
    return cases


def resample_image(img: Any, spacing: Sequence[float], is_label: bool) -> Any:
    """``img`` on a grid of voxel size ``spacing`` (mm along i, j, k) with the same origin,
    direction and physical extent: linear for images, nearest neighbour for labels."""
    sitk = sitk_module()
    old_size, old_spacing = img.GetSize(), img.GetSpacing()
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(old_size, old_spacing, spacing)]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkNearestNeighbor if is_label
                         else sitk.sitkLinear, img.GetOrigin(), [float(s) for s in spacing],
                         img.GetDirection(), 0, img.GetPixelID())


def import_case(src: SourceCase, out_dir: Path, label_value: int | None = None,
                resample: Sequence[float] | None = None,
                segment: str | None = None) -> dict[str, Any]:
    """Read, check and write one case as ``out_dir/<ID>.h5``; returns its record for
    ``import.json`` (shape, grid, files, the annotation's planes, the segment names of 3D
    Slicer files under ``segments``). Raises a one-line :class:`DataError` naming the file
    and the case."""
    from ..annotation.sparse import read_painted_map, select_label
    from ..data.dataset import write_case_h5
    from ..data.nifti import read_image_xyz
    from ..data.segmentation import read_label_map

    sitk = sitk_module()
    image, img = read_image_xyz(src.image)
    segments: dict[str, list[str]] = {}
    label = None
    if src.label is not None:  # on the scan's own grid, before any resampling
        what = f"{src.label} (case '{src.case_id}')"
        labels = read_label_map(src.label, what, "label", image.shape, Geometry.of_image(img),
                                label_value, segment)
        label = select_label(labels.volume, labels.label_value, what).astype(np.uint8)
        if labels.segments:
            segments["label"] = labels.segment_names
    if resample is not None:
        if label is not None:
            lab_img = Geometry.of_image(img).apply(
                sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(label, (2, 1, 0)))))
            label = np.transpose(sitk.GetArrayFromImage(
                resample_image(lab_img, resample, is_label=True)), (2, 1, 0))
        img = resample_image(img, resample, is_label=False)
        image = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))
                                     ).astype(np.float32)
    geometry = Geometry.of_image(img)
    record: dict[str, Any] = {"id": src.case_id, "split": src.split, "shape": list(image.shape),
                              "spacing": list(geometry.spacing), "origin": list(geometry.origin),
                              "direction": list(geometry.direction), "image": str(src.image),
                              "label": str(src.label) if src.label else None,
                              "annotation": None}
    if src.annotation is not None:
        dpa, names = read_painted_map(src.annotation, src.case_id, image.shape, geometry,
                                      label_value, segment)
        record.update(annotation=str(src.annotation), axes=list(dpa.axes),
                      indices=list(dpa.indices))
        if names:
            segments["annotation"] = names
    if segments:
        record["segments"] = segments
    attrs = {"source_image": str(src.image)}
    if src.label is not None:
        attrs["source_label"] = str(src.label)
    write_case_h5(out_dir / f"{src.case_id}.h5", image, label, geometry, attrs)
    return record


def import_dataset(input_dir: str | Path, out_dir: str | Path, label_value: int | None = None,
                   resample: Sequence[float] | None = None,
                   on_case: Callable[[dict[str, Any]], None] | None = None,
                   segment: str | None = None) -> dict[str, Any]:
    """Import every case of ``input_dir`` into ``out_dir`` (see the module doc).

    ``label_value``: the target value in multi-label maps (labels and annotations);
    ``segment``: instead, the target segment's name in 3D Slicer ``.seg.nrrd`` maps;
    ``resample``: voxel size in mm to resample to (images linear, labels nearest; not with
    annotations, whose painted slices would move). A bad case does not stop the others: it
    is recorded with its one-line ``error``, and then no list is written. Returns the record
    written to ``out_dir/import.json`` (``labelnum``: the annotated cases, first in
    ``train.list``); ``on_case`` sees each case's record as it is done."""
    from ..errors import writable_dir

    from ..data.segmentation import check_target

    check_target(label_value, segment)
    cases = find_source_cases(input_dir)
    if resample is not None:
        if len(resample) != 3 or min(resample) <= 0:
            raise ConfigError(f"--resample {list(resample)}: need three voxel sizes > 0 (mm)")
        if any(c.annotation is not None for c in cases):
            raise ConfigError("--resample: not with annotationsTr (resampling would move the "
                              "painted slices off their planes); import at the native grid, "
                              "or paint on the resampled images")
    out = writable_dir(out_dir, "--out_dir")
    records = []
    for src in cases:
        try:
            rec = import_case(src, out, label_value, resample, segment)
        except CoGRNetError as err:
            rec = {"id": src.case_id, "split": src.split, "image": str(src.image),
                   "error": str(err)}
        records.append(rec)
        if on_case is not None:
            on_case(rec)
    ok = [r for r in records if "error" not in r]
    train = [r["id"] for r in ok if r["split"] == "train"]
    annotated = [r["id"] for r in ok if r["split"] == "train" and r["annotation"]]
    summary: dict[str, Any] = {
        "input_dir": str(Path(input_dir).resolve()), "label_value": label_value,
        "segment": segment,
        "resample": list(resample) if resample is not None else None,
        "labelnum": len(annotated),
        "annotations_dir": str((Path(input_dir) / "annotationsTr").resolve()) if annotated
        else None,
        "failed": [r for r in records if "error" in r], "cases": records}
    if not summary["failed"]:
        order = annotated + [i for i in train if i not in annotated]
        write_text_atomic(out / "train.list", "\n".join(order) + "\n")
        test = [r["id"] for r in ok if r["split"] == "test"]
        if test:
            write_text_atomic(out / "test.list", "\n".join(test) + "\n")
        else:
            (out / "test.list").unlink(missing_ok=True)  # not a stale one from a former import
    write_json_atomic(out / RECORD, summary)
    return summary


def read_import_record(root: str | Path) -> dict[str, Any] | None:
    """``ROOT/import.json`` as written by :func:`import_dataset`, ``None`` when absent."""
    import json

    path = Path(root) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable import record ({type(err).__name__})") from None


def map_target(record: dict[str, Any] | None, label_value: int | None = None,
               segment: str | None = None) -> tuple[int | None, str | None]:
    """``(label_value, segment)``: the target of the painted maps, as the command line gives
    it (``--label_value`` or ``--segment``; both is a :class:`ConfigError`), else as the
    import ``record`` holds it."""
    from ..data.segmentation import check_target

    check_target(label_value, segment)
    if label_value is None and segment is None and record:
        return record.get("label_value"), record.get("segment")
    return label_value, segment
