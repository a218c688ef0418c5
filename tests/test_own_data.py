"""Issue 16: your own scans. A generated NIfTI folder (anisotropic voxels, non-identity
direction, nnU-Net names, two painted slices per annotated scan) goes through
import_dataset.py -> registration.py -> train.py --dataset custom -> predict.py ->
test.py --pred_dir; plus every bad input of the path, each a one-line error naming the case
and the file, and checkpoints that load without running code."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cogrnet.data.image_io import Geometry
from cogrnet.errors import ConfigError, DataError
from cogrnet.prepare.phantom import (NIFTI_DIRECTION, NIFTI_ORIGIN, NIFTI_SPACING,
                                     make_nifti_set)
from test_bad_inputs import PREDICT, REGISTRATION, TEST, TRAIN, _load, call, error_lines

sitk = pytest.importorskip("SimpleITK")
GRID = Geometry(NIFTI_SPACING, NIFTI_ORIGIN, NIFTI_DIRECTION)


IMPORT = _load("import_dataset.py")


def write_xyz(path: Path, array: np.ndarray, grid: Geometry = GRID) -> Path:
    from cogrnet.data.nifti import write_volume_xyz

    return write_volume_xyz(array, path, grid)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """5 training scans (3 annotated, 1 with a dense label, 1 bare) and 2 test scans."""
    out = tmp_path_factory.mktemp("scans")
    make_nifti_set(out, n_train=5, n_annotated=3, n_dense=1, n_test=2,
                   base_shape=(36, 32, 20), jitter=2, seed=3)
    return out


@pytest.fixture(scope="module")
def imported(scans, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    rc, out, err = call(IMPORT, ["--input_dir", scans, "--out_dir", root])
    assert rc == 0, err
    assert "use --labelnum 3" in out
    return root


# ------------------------------------------------------------------------ the importer


def test_import_keeps_voxels_grid_and_orders_the_lists(scans, imported):
    from cogrnet.annotation.dpa import simulate_dpa
    from cogrnet.data.dataset import CaseStore

    root = imported
    assert (root / "train.list").read_text().split() == [f"scan0{i}" for i in range(5)]
    assert (root / "test.list").read_text().split() == ["scan05", "scan06"]
    record = json.loads((root / "import.json").read_text())
    assert record["labelnum"] == 3 and record["failed"] == []
    store = CaseStore(root)
    for case_id, split in (("scan00", "Tr"), ("scan03", "Tr"), ("scan06", "Ts")):
        img = sitk.ReadImage(str(scans / f"images{split}" / f"{case_id}_0000.nii.gz"))
        case = store.get(case_id, with_label=store.has_label(case_id))
        # (X, Y, Z) = the file's index axes (i, j, k), voxels as stored (no resampling)
        assert case.shape == img.GetSize()
        assert np.array_equal(case.image, np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)))
        assert case.geometry.difference(Geometry.of_image(img), tol=1e-9) is None
        assert case.geometry.direction != (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    assert store.has_label("scan03") and store.has_label("scan06")
    assert not store.has_label("scan00") and not store.has_label("scan04")
    by_id = {c["id"]: c for c in record["cases"]}
    for case_id in ("scan00", "scan01", "scan02"):
        sparse = sitk.GetArrayFromImage(sitk.ReadImage(
            str(scans / "annotationsTr" / f"{case_id}.nii.gz"))).transpose(2, 1, 0)
        # the planes found in the painted map are the ones it was painted on
        truth = [i for i in range(sparse.shape[2]) if sparse[:, :, i].any()]
        assert by_id[case_id]["axes"] == [2, 1] and by_id[case_id]["indices"][0] in truth
        dpa = simulate_dpa(sparse, (2, 1), "largest", case_id)
        assert by_id[case_id]["indices"] == list(dpa.indices)


def test_import_resample_on_request(scans, tmp_path):
    src = tmp_path / "in"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    for name in ("imagesTr/scan03_0000.nii.gz", "labelsTr/scan03.nii.gz"):
        (src / name).write_bytes((scans / name).read_bytes())
    rc, _, err = call(IMPORT, ["--input_dir", src, "--out_dir", tmp_path / "root",
                               "--resample", 1.6, 1.4, 2.0])
    assert rc == 0, err
    with h5py.File(tmp_path / "root" / "scan03.h5") as f:
        assert np.allclose(f.attrs["spacing"], (1.6, 1.4, 2.0))
        img = sitk.ReadImage(str(src / "imagesTr" / "scan03_0000.nii.gz"))
        want = tuple(round(n * s / t) for n, s, t in zip(img.GetSize(), img.GetSpacing(),
                                                        (1.6, 1.4, 2.0)))
        assert f["image"].shape == want == f["label"].shape and want[2] == img.GetSize()[2]
        assert np.allclose(f.attrs["origin"], NIFTI_ORIGIN)
    # with painted slices, resampling is refused: it would move them off their planes
    rc, _, err = call(IMPORT, ["--input_dir", scans, "--out_dir", tmp_path / "r2",
                               "--resample", 1, 1, 1])
    assert rc == 2 and "--resample: not with annotationsTr" in err


SHAPE = (20, 18, 12)


def _strokes(kind: str) -> np.ndarray:
    """A painted map of SHAPE: two planes (Z = 6, Y = 9), or one problem."""
    m = np.zeros(SHAPE, np.uint8)
    m[5:15, 4:14, 6] = 1
    m[6:14, 9, 2:10] = 1
    if kind == "empty":
        m[:] = 0
    elif kind == "one_plane":
        m[:, 9, :] = 0
        m[6:14, 9, 6] = 1
    elif kind == "third_plane":
        m[3, 2:12, 1:9] = 1
    elif kind == "outside":
        m[7:11, 6:10, 7] = 1  # a 3D brush spilling onto slice Z = 7
    elif kind == "multi":
        m[6:14, 9, 2:10] = 2
    return m


BAD_MAPS = {
    "empty": "no painted slice",
    "one_plane": "only one painted plane (axis 2, slice 6)",
    "third_plane": "more than two painted planes",
    "outside": "outside the two painted slices",
    "multi": "multi-label map (values 1, 2); choose the target with --label_value",
    "size": "annotation size (20, 18, 11) differs from the image's (20, 18, 12)",
    "spacing": "annotation grid differs from the image's (spacing",
    "origin": "annotation grid differs from the image's (origin",
    "direction": "annotation grid differs from the image's (direction",
}


def _bad_folder(tmp_path: Path) -> Path:
    """One good case and one per bad annotation (BAD_MAPS), one image each."""
    src = tmp_path / "bad"
    rng = np.random.default_rng(0)
    for case_id in ["good", *BAD_MAPS]:
        write_xyz(src / "imagesTr" / f"{case_id}.nii.gz",
                  rng.normal(size=SHAPE).astype(np.float32))
        strokes, grid = _strokes(case_id), GRID
        if case_id == "size":
            strokes = strokes[:, :, :-1]
        elif case_id == "spacing":
            grid = Geometry((0.8, 0.7, 2.5), NIFTI_ORIGIN, NIFTI_DIRECTION)
        elif case_id == "origin":
            grid = Geometry(NIFTI_SPACING, (0.0, 0.0, 0.0), NIFTI_DIRECTION)
        elif case_id == "direction":
            grid = Geometry(NIFTI_SPACING, NIFTI_ORIGIN, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
        write_xyz(src / "annotationsTr" / f"{case_id}.nii.gz", strokes, grid)
    return src


def test_import_bad_annotations_one_line_each_and_no_lists(tmp_path):
    src = _bad_folder(tmp_path)
    root = tmp_path / "root"
    rc, out, err = call(IMPORT, ["--input_dir", src, "--out_dir", root])
    assert rc == 1 and "Traceback" not in out + err
    lines = error_lines(err)
    for case_id, message in BAD_MAPS.items():
        path = src / "annotationsTr" / f"{case_id}.nii.gz"
        mine = [ln for ln in lines if f"(case '{case_id}')" in ln]
        assert len(mine) == 1 and message in mine[0] and str(path) in mine[0], (case_id, err)
    assert "9 of 10 case(s) failed; no list written" in lines[-1]
    assert not (root / "train.list").exists()
    record = json.loads((root / "import.json").read_text())
    assert [c["id"] for c in record["cases"] if "error" not in c] == ["good"]


def test_label_value_picks_the_target_of_a_multi_label_map(tmp_path):
    src = tmp_path / "in"
    write_xyz(src / "imagesTr" / "a.nii.gz", np.ones(SHAPE, np.float32))
    m = _strokes("good") * 3
    m[0:2, 0:2, 0:2] = 5  # another structure, elsewhere
    write_xyz(src / "annotationsTr" / "a.nii.gz", m)
    rc, _, err = call(IMPORT, ["--input_dir", src, "--out_dir", tmp_path / "r", "--label_value", 3])
    assert rc == 0, err
    rec = json.loads((tmp_path / "r" / "import.json").read_text())
    assert rec["cases"][0]["axes"] == [2, 1] and rec["cases"][0]["indices"] == [6, 9]
    assert rec["label_value"] == 3
    rc, _, err = call(IMPORT, ["--input_dir", src, "--out_dir", tmp_path / "r2",
                               "--label_value", 4])
    assert rc == 1 and "no voxel has --label_value 4 (values: 3, 5)" in err


@pytest.mark.parametrize("layout,message", [
    ({"imagesTr/a.nii.gz": 0, "labelsTr/b.nii.gz": 0}, "no image of case 'b'"),
    ({"imagesTr/a.nii.gz": 0, "imagesTr/a.nrrd": 0}, "case 'a' has two files"),
    ({"imagesTr/a.nii.gz": 0, "imagesTs/a.nii.gz": 0}, "case 'a' is in imagesTr too"),
    ({"imagesTr/a_0000.nii.gz": 0, "imagesTr/a_0001.nii.gz": 0},
     "channel 0001 of case 'a': only single-channel images"),
    ({"labelsTr/a.nii.gz": 0}, "no training image"),
    ({"imagesTr/a.nii.gz": 0, "labelsTr/a.nii.gz": 1}, "label size (20, 18, 11) differs"),
])
def test_import_bad_layouts(tmp_path, layout, message):
    src = tmp_path / "in"
    for name, short in layout.items():
        shape = SHAPE[:2] + (SHAPE[2] - short,)
        write_xyz(src / name, np.zeros(shape, np.uint8))
    rc, out, err = call(IMPORT, ["--input_dir", src, "--out_dir", tmp_path / "r"])
    assert rc != 0 and "Traceback" not in err
    assert message in error_lines(err)[0], err


# --------------------------------------------------------------- the whole path, end to end


def test_end_to_end_nifti_folder_to_scored_masks(scans, imported, tmp_path):
    root, coarse, run = imported, tmp_path / "coarse", tmp_path / "model"
    rc, _, err = call(REGISTRATION, ["--root_path", root, "--labelnum", 3, "--annotations",
                                     scans / "annotationsTr", "--out_dir", coarse])
    assert rc == 0, err
    summary = json.loads((coarse / "summary.json").read_text())
    record = {c["id"]: c for c in json.loads((root / "import.json").read_text())["cases"]}
    for case in summary["cases"]:
        assert case["axes"] == record[case["id"]]["axes"]
        assert case["indices"] == record[case["id"]]["indices"]
        # the coarse label opens over the scan: the scan's size and grid
        lab = sitk.ReadImage(str(coarse / f"{case['id']}.nii.gz"))
        img = sitk.ReadImage(str(scans / "imagesTr" / f"{case['id']}_0000.nii.gz"))
        assert lab.GetSize() == img.GetSize()
        assert Geometry.of_image(lab).difference(Geometry.of_image(img)) is None
        assert sitk.GetArrayFromImage(lab).any()
        assert (coarse / "png" / f"{case['id']}.png").stat().st_size > 1000

    rc, _, err = call(TRAIN, ["--dataset", "custom", "--root_path", root, "--coarse_dir", coarse,
                              "--labelnum", 3, "--out_root", run, "--exp", "own",
                              "--n_filters", 4, "--batch_size", 4, "--labeled_bs", 2,
                              "--pre_max_iteration", 1, "--self_max_iteration", 1,
                              "--device", "cpu", "--no_progress", "--num_workers", 1])
    assert rc == 0, err
    cfg = json.loads((run / "own" / "config.json").read_text())
    assert cfg["dataset"] == "custom" and cfg["patch_size"] == [32, 32, 16]
    assert cfg["strides"] == [16, 16, 8] and cfg["median_shape"][2] == 20
    log = (run / "own" / "log.txt").read_text()
    assert "patch (32, 32, 16)" in log and "1 pre-training + 1 self-training" in log
    # the auto validation case (scan04) has no dense label: said once, last weights kept
    assert "have no dense label, e.g. scan04" in log
    assert "best.pth holds the last weights" in log
    ckpt = torch.load(run / "own" / "best.pth", weights_only=True)
    assert ckpt["config"]["dataset"] == "custom"

    pred = tmp_path / "pred"
    rc, out, err = call(PREDICT, ["--checkpoint", run / "own" / "best.pth", "--input",
                                  scans / "imagesTs", "--output", pred, "--device", "cpu"])
    assert rc == 0, err
    assert "as the dataset files were stored: none; then as training loaded them: z-score" in out
    for case_id in ("scan05", "scan06"):
        img = sitk.ReadImage(str(scans / "imagesTs" / f"{case_id}_0000.nii.gz"))
        mask = sitk.ReadImage(str(pred / f"{case_id}_mask.nii.gz"))
        assert mask.GetSize() == img.GetSize()
        assert mask.GetSpacing() == pytest.approx(img.GetSpacing())
        assert mask.GetOrigin() == pytest.approx(img.GetOrigin())
        assert mask.GetDirection() == pytest.approx(img.GetDirection())

    rc, _, err = call(TEST, ["--root_path", root, "--split", "test", "--pred_dir", pred,
                             "--no_progress", "--out_dir", tmp_path / "eval"])
    assert rc == 0, err
    s = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert [r["case"] for r in s["cases"]] == ["scan05", "scan06"]
    # distances in mm from each case's own recorded spacing
    assert all("hd95_mm" in r for r in s["cases"] if r["hd95"] is not None)

    # test.py on the checkpoint, --save_nifti: the same files predict.py writes, scored alike
    rc, _, err = call(TEST, ["--root_path", root, "--split", "test", "--checkpoint",
                             run / "own" / "best.pth", "--save_nifti", "--no_progress",
                             "--device", "cpu", "--out_dir", tmp_path / "t"])
    assert rc == 0, err
    for case_id in ("scan05", "scan06"):
        saved = sitk.ReadImage(str(tmp_path / "t" / "pred" / f"{case_id}.nii.gz"))
        mask = sitk.ReadImage(str(pred / f"{case_id}_mask.nii.gz"))
        assert Geometry.of_image(saved).difference(Geometry.of_image(mask)) is None
        assert np.array_equal(sitk.GetArrayFromImage(saved), sitk.GetArrayFromImage(mask))
    t = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert [r["dice"] for r in t["cases"]] == [r["dice"] for r in s["cases"]]


def test_pred_dir_refuses_a_mask_on_another_grid(scans, imported, tmp_path):
    from cogrnet.data.dataset import CaseStore

    case = CaseStore(imported).get("scan05")
    write_xyz(tmp_path / "scan05.nii.gz", case.label,
              Geometry((1.0, 1.0, 1.0), NIFTI_ORIGIN, NIFTI_DIRECTION))
    write_xyz(tmp_path / "scan06_mask.nii.gz", CaseStore(imported).get("scan06").label)
    rc, _, err = call(TEST, ["--root_path", imported, "--split", "test", "--pred_dir",
                             tmp_path, "--no_progress", "--out_dir", tmp_path / "e"])
    assert rc == 1
    line = error_lines(err)[0]
    assert "case scan05" in line and "prediction grid differs from the case's (spacing" in line
    s = json.loads((tmp_path / "e" / "summary.json").read_text())
    by_id = {r["case"]: r for r in s["cases"]}
    assert by_id["scan06"]["dice"] == 1.0 and "dice" not in by_id["scan05"]


def test_registration_reads_painted_maps_and_checks_their_grid(imported, tmp_path):
    from cogrnet.data.dataset import CaseStore

    ann = tmp_path / "ann"
    case = CaseStore(imported).get("scan00", with_label=False)
    m = np.zeros(case.shape, np.uint8)
    m[10:20, 10:20, 8] = 1
    m[12:18, 15, 4:12] = 1
    write_xyz(ann / "scan00.nii.gz", m)
    write_xyz(ann / "scan01.nii.gz", m[:, :, :], Geometry((1.0, 1.0, 1.0)))
    rc, _, err = call(REGISTRATION, ["--root_path", imported, "--ids", "scan00", "scan01",
                                     "--annotations", ann, "--out_dir", tmp_path / "c"])
    assert rc == 1
    s = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert s["cases"][0]["status"] == "ok" and s["cases"][0]["indices"] == [8, 15]
    bad = s["cases"][1]["reason"]
    assert "case 'scan01'" in bad and str(ann / "scan01.nii.gz") in bad
    assert ("annotation size" in bad or "annotation grid differs" in bad) and "\n" not in bad


# --------------------------------------------------------- the custom preset, validation


def test_custom_preset_patch_from_data():
    from cogrnet.presets import custom_preset

    p = custom_preset("/r", [(200, 150, 40), (180, 170, 44), (190, 90, 30)], labelnum=4)
    assert p.patch_size == (112, 112, 32) and p.stride_xy == 56 and p.stride_z == 16
    assert p.labelnum == 4 and p.name == "custom" and p.stored_intensity == "none"
    assert custom_preset("/r", [(20, 18, 12)]).patch_size == (16, 16, 16)


def test_custom_needs_a_root(tmp_path):
    from cogrnet.training.config import parse_config

    with pytest.raises(ConfigError, match="--dataset custom: --root_path is required"):
        parse_config(["--dataset", "custom"])


def test_validation_without_dense_labels(imported, tmp_path):
    from cogrnet.data.dataset import CaseStore
    from cogrnet.train_config import TrainConfig
    from cogrnet.training.data import resolve_split

    store = CaseStore(imported)
    cfg = TrainConfig(lists_dir=None, labelnum=3, val_list="auto")
    split = resolve_split(store, cfg)  # auto: scan04 has no dense label -> no validation
    assert split.val == [] and split.unlabeled == ["scan03", "scan04"]
    (tmp_path / "v.list").write_text("scan04\n")
    with pytest.raises(ConfigError, match=r"scan04 have no dense label .*--val_list none"):
        resolve_split(store, cfg.replace(val_list=str(tmp_path / "v.list")))
    (tmp_path / "d.list").write_text("scan03\n")
    split = resolve_split(store, cfg.replace(val_list=str(tmp_path / "d.list")))
    assert split.val == ["scan03"] and split.unlabeled == ["scan04"]


# --------------------------------------------------- preprocessing the checkpoint records


def test_scan_preprocessing_follows_the_checkpoint():
    from cogrnet.data.dataset import normalize_intensity
    from cogrnet.inference.settings import inference_preset, scan_preprocessing

    scan = np.linspace(-500, 500, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    kits = scan_preprocessing({"dataset": "kits", "intensity": "none"},
                              inference_preset({"dataset": "kits"}))
    assert kits.window == (-160.0, 240.0)
    unit = (np.clip(scan, -160, 240) + 160) / 400
    assert np.allclose(kits.apply(scan), normalize_intensity(unit, "zscore"), atol=1e-6)
    own = scan_preprocessing({"dataset": "custom", "intensity": "zscore"},
                             inference_preset({"dataset": "custom"}))
    assert own.window is None and own.stored == "none"
    assert np.allclose(own.apply(scan), normalize_intensity(scan, "zscore"))
    raw = scan_preprocessing({"dataset": "custom", "intensity": "none"},
                             inference_preset({"dataset": "custom"}))
    assert np.array_equal(raw.apply(scan), scan)


# ----------------------------------------------------------- checkpoints run no code


class _Payload:
    """Unpickling this runs ``os.system`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_load_without_running_code(tmp_path):
    from cogrnet.networks import build_network, network_config
    from cogrnet.checkpoints import (FORMAT, atomic_torch_save, load_checkpoint,
                                             make_checkpoint)

    net = network_config(n_filters=4)
    ok = make_checkpoint(build_network(net).state_dict(), {"network": net,
                         "patch_size": [16, 16, 16], "root": tmp_path}, 3, "self",
                         rng={"numpy": np.random.default_rng(0).integers(0, 9, 5)},
                         extra={"method_state": {"fa_ratio": np.float64(0.65),
                                                 "best": {"pre": np.float32(0.5)}}})
    atomic_torch_save(ok, tmp_path / "ok.pth")
    got = load_checkpoint(tmp_path / "ok.pth")
    assert isinstance(got["rng"]["numpy"], torch.Tensor)
    assert type(got["extra"]["method_state"]["fa_ratio"]) is float
    assert got["config"]["root"] == str(tmp_path)
    with pytest.raises(TypeError, match=r"extra.bad: object cannot go into a checkpoint"):
        make_checkpoint({}, {}, 0, "self", extra={"bad": object()})

    marker = tmp_path / "code_ran"
    evil = {"format": FORMAT, "model": {}, "config": {"network": net, "patch_size": [16] * 3},
            "extra": _Payload(marker)}
    torch.save(evil, tmp_path / "evil.pth")
    with pytest.raises(DataError, match=r"evil.pth: refused: the checkpoint holds objects"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()
    scan = write_xyz(tmp_path / "scan.nii.gz", np.zeros(SHAPE, np.float32))
    rc, _, err = call(PREDICT, ["--checkpoint", tmp_path / "evil.pth", "--input", scan,
                                "--output", tmp_path / "m.nii.gz", "--device", "cpu"])
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert str(tmp_path / "evil.pth") in err and "refused" in err and not marker.exists()
