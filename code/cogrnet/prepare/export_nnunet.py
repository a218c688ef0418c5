"""Coarse labels -> an nnU-Net v2 dataset folder (``nnUNet_raw/DatasetNNN_Name``).

nnU-Net v2 trains on partly labelled images through an ``ignore`` label (the highest label
value, named ``ignore`` in ``dataset.json``; no loss on those voxels). A coarse label comes
with a per-voxel confidence (``weight``, :mod:`cogrnet.annotation.io`), so each case with a
coarse label in ``coarse_dir`` becomes::

    OUT/imagesTr/<ID>_0000.nii.gz   the image of ROOT/<ID>.h5, voxels as stored (float32)
    OUT/labelsTr/<ID>.nii.gz        uint8: 0 background, 1 target, 2 ignore
    OUT/dataset.json                channel_names, labels, numTraining, file_ending

both on the case's grid (the spacing, origin and direction ``code/import_dataset.py``
recorded; unit spacing at the origin for roots that record none, such as LA's h5 files).
The label is the coarse label where ``weight >= ignore_below``, ``ignore`` where it is below,
and the two annotated slices are always their annotation (0 or 1, never ``ignore``).

Only cases with a coarse label are written: nnU-Net trains on ``imagesTr``/``labelsTr``
alone and has no use for unlabeled scans, and its ``imagesTs`` is the held-out test set,
which the training list's unlabeled scans are not; predict on any folder with
``nnUNetv2_predict -i``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..annotation.dpa import plane_slice
from ..annotation.io import CoarseLabel, read_coarse_label
from ..errors import ConfigError, DataError

#: the default confidence threshold: chosen on the calibration table of the first 8 LA
#: training IDs (docs/REGISTRATION.md, "Export to nnU-Net v2")
IGNORE_BELOW = 0.5
BACKGROUND, TARGET, IGNORE = 0, 1, 2
FILE_ENDING = ".nii.gz"
#: nnU-Net finds a dataset by its folder name: ``Dataset`` + three digits + ``_`` + a name
DATASET_FOLDER = re.compile(r"^Dataset(?P<id>\d{3})_(?P<name>[A-Za-z0-9_.\-]+)$")


def nnunet_label(coarse: CoarseLabel, ignore_below: float = IGNORE_BELOW) -> np.ndarray:
    """The uint8 ``(X, Y, Z)`` nnU-Net label of a coarse label: :data:`TARGET` /
    :data:`BACKGROUND` where ``weight >= ignore_below`` (compared in the weight's float32,
    as the calibration table does), :data:`IGNORE` below, and both annotated slices set to
    the annotation."""
    if coarse.annotation is None:
        raise ValueError("the coarse label holds no annotation")
    sure = coarse.weight >= np.asarray(ignore_below, dtype=coarse.weight.dtype)
    label = np.where(sure, coarse.label, IGNORE).astype(np.uint8)
    for axis, index in zip(coarse.axes, coarse.indices):
        sl = plane_slice(label.ndim, axis, index)
        label[sl] = coarse.annotation[sl] > 0
    return label


def dataset_folder(out_dir: str | Path) -> tuple[int, str]:
    """``(dataset id, name)`` of ``nnUNet_raw/DatasetNNN_Name``; a :class:`ConfigError` for
    a folder name nnU-Net would not find."""
    m = DATASET_FOLDER.match(Path(out_dir).name)
    if m is None:
        raise ConfigError(f"--out_dir {out_dir}: nnU-Net finds a dataset by a folder named "
                          "DatasetNNN_Name (three digits, then a name), e.g. "
                          "nnUNet_raw/Dataset501_LA")
    return int(m.group("id")), m.group("name")


def coarse_ids(coarse_dir: str | Path) -> list[str]:
    """The case IDs with a coarse label file ``<coarse_dir>/<ID>.h5``, sorted."""
    folder = Path(coarse_dir)
    if not folder.is_dir():
        raise DataError(f"--coarse_dir {folder}: folder not found")
    ids = sorted(p.stem for p in folder.glob("*.h5") if p.is_file())
    if not ids:
        raise DataError(f"--coarse_dir {folder}: no coarse label <ID>.h5 (run "
                        "code/utils/registration.py first)")
    return ids


def _refuse_other_cases(out: Path, ids: list[str]) -> None:
    """A :class:`DataError` when ``out``'s imagesTr/labelsTr hold a case this export does not
    write: nnU-Net would train on it."""
    expected = {"imagesTr": {f"{i}_0000{FILE_ENDING}" for i in ids},
                "labelsTr": {f"{i}{FILE_ENDING}" for i in ids}}
    for folder, names in expected.items():
        if not (out / folder).is_dir():
            continue
        for path in sorted((out / folder).iterdir()):
            if path.name not in names and not path.name.startswith("."):
                raise DataError(f"{path}: not a case of this export (nnU-Net would train on "
                                "it); export into a new folder or remove it")


@dataclass(frozen=True)
class ExportedCase:
    """Voxel counts of one exported label: ``voxels`` in the volume, ``ignored`` set to
    ``ignore``, ``coarse`` in the coarse label's target, ``coarse_ignored`` of those set to
    ``ignore``; ``kept``: ``[TP, FP, FN, TN]`` of the kept voxels against the case's dense
    label, ``None`` when the root holds none."""

    case_id: str
    voxels: int
    ignored: int
    coarse: int
    coarse_ignored: int
    kept: tuple[int, int, int, int] | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.case_id, "voxels": self.voxels, "ignored": self.ignored,
                "coarse": self.coarse, "coarse_ignored": self.coarse_ignored,
                "kept_tp_fp_fn_tn": list(self.kept) if self.kept is not None else None}


def label_counts(case_id: str, coarse: CoarseLabel, label: np.ndarray,
                 truth: np.ndarray | None) -> ExportedCase:
    """The :class:`ExportedCase` counts of ``label`` (from :func:`nnunet_label`)."""
    ignored = label == IGNORE
    kept = None
    if truth is not None:
        keep, p, t = ~ignored, label == TARGET, truth > 0
        kept = tuple(int(np.count_nonzero(keep & a & b))
                     for a, b in ((p, t), (p, ~t), (~p, t), (~p, ~t)))
    target = coarse.label > 0
    return ExportedCase(case_id, int(label.size), int(np.count_nonzero(ignored)),
                        int(np.count_nonzero(target)),
                        int(np.count_nonzero(target & ignored)), kept)  # type: ignore[arg-type]


def pooled_counts(cases: list[ExportedCase]) -> dict[str, Any]:
    """Shares over all cases: ``ignored`` (of all voxels), ``coarse_ignored`` (of the coarse
    target's voxels) and, over the cases with a dense label (``scored``), the pooled Dice
    and the share of wrong voxels among the kept ones (``kept_dice``, ``kept_error``)."""
    def share(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    out: dict[str, Any] = {
        "ignored": share(sum(c.ignored for c in cases), sum(c.voxels for c in cases)),
        "coarse_ignored": share(sum(c.coarse_ignored for c in cases),
                                sum(c.coarse for c in cases)),
        "scored": sum(c.kept is not None for c in cases), "kept_dice": None,
        "kept_error": None}
    scored = [c.kept for c in cases if c.kept is not None]
    if scored:
        tp, fp, fn, tn = (int(v) for v in np.sum(scored, axis=0))
        out["kept_dice"] = share(2 * tp, 2 * tp + fp + fn)
        out["kept_error"] = share(fp + fn, tp + fp + fn + tn)
    return out


def export_nnunet(root: str | Path, coarse_dir: str | Path, out_dir: str | Path,
                  ignore_below: float = IGNORE_BELOW, target_name: str | None = None,
                  channel_name: str = "image",
                  on_case: Callable[[ExportedCase], None] | None = None) -> dict[str, Any]:
    """Write the nnU-Net v2 dataset ``out_dir`` (``.../DatasetNNN_Name``) from the coarse
    labels in ``coarse_dir`` and the images of the dataset root ``root`` (module doc).

    ``ignore_below``: confidence in [0, 1] under which a voxel is ``ignore``;
    ``target_name``: the label's name in ``dataset.json`` (default: the segment
    ``import.json`` records, else ``foreground``); ``channel_name``: the image channel's
    (nnU-Net normalises ``CT`` in Hounsfield units, every other name by z-score). Returns
    the written ``dataset.json`` plus ``cases`` (:meth:`ExportedCase.to_dict` each) and
    ``pooled`` (:func:`pooled_counts`); ``on_case`` sees each case when it is written.
    Errors are one line naming the file or argument."""
    from ..data.dataset import CaseStore
    from ..data.nifti import write_volume_xyz
    from ..errors import writable_dir
    from ..fileio import write_json_atomic
    from .import_nifti import read_import_record

    if not 0.0 <= float(ignore_below) <= 1.0:
        raise ConfigError(f"--ignore_below {ignore_below}: need a confidence in [0, 1]")
    _, name = dataset_folder(out_dir)
    store = CaseStore(root)
    if target_name is None:
        target_name = (read_import_record(root) or {}).get("segment") or "foreground"
    if target_name in ("background", "ignore") or not target_name.strip():
        raise ConfigError(f"--target_name '{target_name}': choose a name other than "
                          "background and ignore")
    ids = store.check_ids(coarse_ids(coarse_dir), f"--coarse_dir {coarse_dir}")
    out = writable_dir(out_dir, "--out_dir")
    _refuse_other_cases(out, ids)
    cases = []
    for case_id in ids:
        dense = store.has_label(case_id)
        case = store.get(case_id, with_label=dense)
        coarse = read_coarse_label(coarse_dir, case_id, expected_shape=case.shape)
        label = nnunet_label(coarse, ignore_below)
        write_volume_xyz(case.image.astype(np.float32),
                         out / "imagesTr" / f"{case_id}_0000{FILE_ENDING}", case.geometry)
        write_volume_xyz(label, out / "labelsTr" / f"{case_id}{FILE_ENDING}", case.geometry)
        counts = label_counts(case_id, coarse, label, case.label)
        cases.append(counts)
        if on_case is not None:
            on_case(counts)
    dataset = {"name": name, "channel_names": {"0": channel_name},
               "labels": {"background": BACKGROUND, target_name: TARGET, "ignore": IGNORE},
               "numTraining": len(ids), "file_ending": FILE_ENDING,
               "description": f"CoGRNet coarse labels from two annotated slices per scan "
                              f"({Path(coarse_dir).resolve()}); confidence below "
                              f"{ignore_below:g} is ignore, the annotated slices exact"}
    write_json_atomic(out / "dataset.json", dataset)
    return {**dataset, "cases": [c.to_dict() for c in cases], "pooled": pooled_counts(cases)}
