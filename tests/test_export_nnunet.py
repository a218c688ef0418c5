"""Issue 30: coarse labels out to nnU-Net v2 (``code/export_nnunet.py``): label values 0/1
and ``ignore`` (2) where the confidence is below ``--ignore_below``, the two painted slices
exact, images and labels on each scan's grid (read back, and imported again), bad
arguments as one line; nnU-Net's own integrity check where ``nnunetv2`` is installed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cogrnet.annotation.io import CoarseLabel, read_coarse_label
from cogrnet.data.image_io import Geometry
from cogrnet.prepare.export_nnunet import IGNORE, nnunet_label
from test_bad_inputs import REGISTRATION, _load, assert_one_line_error, call
from test_own_data import IMPORT, imported, scans  # noqa: F401  (fixtures)

sitk = pytest.importorskip("SimpleITK")
EXPORT = _load("export_nnunet.py")


def test_label_values_ignore_below_and_painted_slices():
    rng = np.random.default_rng(0)
    shape = (6, 5, 4)
    label = (rng.random(shape) > 0.5).astype(np.uint8)
    weight = rng.random(shape).astype(np.float32)
    weight[0, 0, 0] = np.float32(0.3)  # exactly the threshold: kept
    annotation = np.zeros(shape, np.uint8)
    annotation[1:4, 1:3, 2] = 1  # plane A: Z = 2
    annotation[2:5, 3, 0:3] = 1  # plane B: Y = 3
    weight[:, :, 2] = 0.0  # even where the weight says unsure, the painted slices stay
    label[:, :, 2] = 1 - annotation[:, :, 2]  # and the annotation wins over the label
    coarse = CoarseLabel(label, label, label, weight, (2, 1), (2, 3), annotation)
    out = nnunet_label(coarse, 0.3)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1, IGNORE}
    painted = np.zeros(shape, bool)
    painted[:, :, 2] = painted[:, 3, :] = True
    assert np.array_equal(out[painted], annotation[painted])
    sure = (weight >= np.float32(0.3)) & ~painted
    assert np.array_equal(out[sure], label[sure]) and out[0, 0, 0] == label[0, 0, 0]
    assert np.all(out[~sure & ~painted] == IGNORE)
    assert not np.any(nnunet_label(coarse, 0.0) == IGNORE)
    assert np.all(nnunet_label(coarse, 1.0)[~painted & (weight < 1)] == IGNORE)


@pytest.fixture(scope="module")
def coarse(scans, imported, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("coarse")
    rc, _, err = call(REGISTRATION, ["--root_path", imported, "--annotations",
                                     scans / "annotationsTr", "--out_dir", out])
    assert rc == 0, err
    return out


@pytest.fixture(scope="module")
def exported(imported, coarse, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("nnUNet_raw") / "Dataset501_Phantom"
    rc, text, err = call(EXPORT, ["--root_path", imported, "--coarse_dir", coarse,
                                  "--out_dir", out])
    assert rc == 0, err
    assert "wrote 3 training case(s)" in text and "of the coarse target's" in text
    return out


def test_dataset_json(exported):
    d = json.loads((exported / "dataset.json").read_text())
    assert d["labels"] == {"background": 0, "foreground": 1, "ignore": 2}
    assert max(d["labels"].values()) == d["labels"]["ignore"]
    assert d["numTraining"] == 3 and d["file_ending"] == ".nii.gz"
    assert d["channel_names"] == {"0": "image"}
    # the annotated training scans only: no unlabeled scan, no imagesTs
    assert sorted(p.name for p in (exported / "imagesTr").iterdir()) == [
        "scan00_0000.nii.gz", "scan01_0000.nii.gz", "scan02_0000.nii.gz"]
    assert sorted(p.name for p in (exported / "labelsTr").iterdir()) == [
        "scan00.nii.gz", "scan01.nii.gz", "scan02.nii.gz"]
    assert not (exported / "imagesTs").exists()


def test_labels_on_the_scans_grid_with_ignore_and_exact_slices(scans, coarse,  # noqa: F811
                                                              exported):
    ignored = 0
    for case_id in ("scan00", "scan01", "scan02"):
        scan = sitk.ReadImage(str(scans / "imagesTr" / f"{case_id}_0000.nii.gz"))
        img = sitk.ReadImage(str(exported / "imagesTr" / f"{case_id}_0000.nii.gz"))
        lab = sitk.ReadImage(str(exported / "labelsTr" / f"{case_id}.nii.gz"))
        for written in (img, lab):
            assert written.GetSize() == scan.GetSize()
            assert Geometry.of_image(written).difference(Geometry.of_image(scan),
                                                         tol=1e-6) is None
        assert np.array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(scan))
        label = np.transpose(sitk.GetArrayFromImage(lab), (2, 1, 0))
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, IGNORE}
        c = read_coarse_label(coarse, case_id, expected_shape=label.shape)
        # the user's painted map, read from the file they painted, on both slices
        painted = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(
            str(scans / "annotationsTr" / f"{case_id}.nii.gz"))), (2, 1, 0))
        on_slices = np.zeros(label.shape, bool)
        for axis, index in zip(c.axes, c.indices):
            idx = [slice(None)] * 3
            idx[axis] = index
            on_slices[tuple(idx)] = True
        assert np.array_equal(label[on_slices], painted[on_slices])
        unsure = (c.weight < 0.5) & ~on_slices
        assert np.all(label[unsure] == IGNORE)
        assert np.array_equal(label[~unsure & ~on_slices], c.label[~unsure & ~on_slices])
        ignored += int(unsure.sum())
    assert ignored > 0  # the phantoms have unsure voxels: the test sees the ignore label


def test_the_export_imports_back_on_the_same_grid(imported, exported, tmp_path):  # noqa: F811
    from cogrnet.data.dataset import CaseStore

    rc, _, err = call(IMPORT, ["--input_dir", exported, "--out_dir", tmp_path / "back",
                               "--label_value", 1])
    assert rc == 0, err
    before, after = CaseStore(imported), CaseStore(tmp_path / "back")
    for case_id in ("scan00", "scan01", "scan02"):
        a, b = before.get(case_id, with_label=False), after.get(case_id)
        assert np.array_equal(a.image, b.image)
        assert a.geometry.difference(b.geometry, tol=1e-6) is None
        lab = sitk.ReadImage(str(exported / "labelsTr" / f"{case_id}.nii.gz"))
        assert np.array_equal(b.label, np.transpose(sitk.GetArrayFromImage(lab) == 1,
                                                    (2, 1, 0)))


def test_ignore_below_zero_keeps_every_voxel(imported, coarse, tmp_path):  # noqa: F811
    out = tmp_path / "Dataset502_All"
    rc, _, err = call(EXPORT, ["--root_path", imported, "--coarse_dir", coarse, "--out_dir",
                               out, "--ignore_below", 0, "--target_name", "atrium"])
    assert rc == 0, err
    assert json.loads((out / "dataset.json").read_text())["labels"]["atrium"] == 1
    for case_id in ("scan00", "scan01", "scan02"):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{case_id}.nii.gz")))
        c = read_coarse_label(coarse, case_id)
        assert np.array_equal(np.transpose(label, (2, 1, 0)), c.label)


@pytest.mark.parametrize("argv,needle", [
    (["--out_dir", "{tmp}/nnUNet_raw/LA"], "folder named DatasetNNN_Name"),
    (["--out_dir", "{tmp}/Dataset7_LA"], "folder named DatasetNNN_Name"),
    (["--out_dir", "{tmp}/Dataset501_LA", "--ignore_below", "1.5"],
     "--ignore_below 1.5: need a confidence in [0, 1]"),
    (["--out_dir", "{tmp}/Dataset501_LA", "--target_name", "ignore"],
     "--target_name 'ignore': choose a name other than background and ignore"),
    (["--out_dir", "{tmp}/Dataset501_LA", "--coarse_dir", "{tmp}/none"],
     "--coarse_dir {tmp}/none: folder not found"),
    (["--out_dir", "{tmp}/Dataset501_LA", "--coarse_dir", "{tmp}"],
     "no coarse label <ID>.h5"),
])
def test_bad_arguments_one_line(imported, coarse, tmp_path, argv, needle):  # noqa: F811
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    base = ["--root_path", imported, "--coarse_dir", coarse]
    assert_one_line_error(call(EXPORT, base + argv), needle.replace("{tmp}", str(tmp_path)))


def test_a_case_of_another_export_is_refused(imported, coarse, tmp_path):  # noqa: F811
    out = tmp_path / "Dataset503_Old"
    stale = out / "labelsTr" / "old_case.nii.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    assert_one_line_error(call(EXPORT, ["--root_path", imported, "--coarse_dir", coarse,
                                        "--out_dir", out]),
                          str(stale), "not a case of this export")
    assert not (out / "dataset.json").exists()


@pytest.mark.slow
def test_nnunet_accepts_the_export(exported, tmp_path):
    """nnU-Net's own check of the folder (``nnunetv2``, an optional extra: skipped when it is
    not installed; nothing is downloaded)."""
    pytest.importorskip("nnunetv2")
    tool = Path(sys.executable).parent / "nnUNetv2_extract_fingerprint"
    if not tool.is_file():
        tool = Path(shutil.which("nnUNetv2_extract_fingerprint") or "")
    if not tool.is_file():
        pytest.skip("nnunetv2 is importable but nnUNetv2_extract_fingerprint is not installed")
    raw = tmp_path / "nnUNet_raw"
    shutil.copytree(exported, raw / exported.name)
    env = {**os.environ, "nnUNet_raw": str(raw),
           "nnUNet_preprocessed": str(tmp_path / "nnUNet_preprocessed"),
           "nnUNet_results": str(tmp_path / "nnUNet_results")}
    res = subprocess.run([str(tool), "-d", "501", "--verify_dataset_integrity", "-np", "1"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (tmp_path / "nnUNet_preprocessed" / exported.name / "dataset_fingerprint.json"
            ).is_file()
