"""Raw KiTS19/LiTS NIfTI -> h5: tiny generated CT volumes in each release's naming,
orientation and value ranges (HU, labels 0/1/2)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cogrnet.data.ct_transforms import body_crop_box, body_mask, preprocess_arrays, window_unit
from cogrnet.data.dataset import load_h5_case
from cogrnet.data.preprocess import get_preprocess_preset, preprocess_case, run_preprocessing
from cogrnet.data.raw_ct import (
    RawCase, find_raw_cases, load_raw_case, orientation_from_direction, to_xyz)
from cogrnet.data.transforms import resize_volume
from cogrnet.errors import ConfigError, DataError, run_cli

from conftest import CODE, load_script

preprocess_cli = load_script(CODE / "preprocess.py")

RAW_SHAPE = (60, 52, 18)          # (X, Y, Z) physical voxels of the generated volumes
SPACING = (0.8, 0.9, 3.0)         # mm along X, Y, Z
OUT = (24, 20, 12)                # small output size for speed


# ------------------------------------------------------------------ synthetic raw data


def make_ct(seed: int = 0, shape=RAW_SHAPE, label_z: tuple[int, int] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """An abdomen-like CT in HU and its raw labels, both ``(X, Y, Z)``: air -1024, a body
    ellipse (fat rim -100, soft tissue 40) with an air pocket, a patient table separated by
    air, an organ blob 150 HU (label 1) holding a tumour 90 HU (label 2). ``label_z`` limits
    the organ to those axial slices."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    cx, cy = shape[0] / 2, shape[1] * 0.42
    r = ((x - cx) / (shape[0] * 0.33)) ** 2 + ((y - cy) / (shape[1] * 0.3)) ** 2
    hu = np.full(shape, -1024.0)
    hu[r < 1.0] = -100.0
    hu[r < 0.7] = 40.0
    hu[((x - cx) ** 2 + (y - cy) ** 2 < 9) & (z > 3)] = -900.0          # gas inside the body
    hu[:, int(shape[1] * 0.88):int(shape[1] * 0.92), :] = 300.0          # table
    organ = ((x - cx - 8) / 7) ** 2 + ((y - cy) / 6) ** 2 + ((z - shape[2] / 2) / 6) ** 2 < 1
    if label_z is not None:
        organ &= (z >= label_z[0]) & (z < label_z[1])
    tumour = organ & ((x - cx - 10) ** 2 + (y - cy) ** 2 + (z - shape[2] / 2) ** 2 < 6)
    hu[organ] = 150.0
    hu[tumour] = 90.0
    hu += rng.normal(0.0, 10.0, shape)
    hu = np.clip(hu, -1024, 1500)
    label = np.zeros(shape, np.uint8)
    label[organ] = 1
    label[tumour] = 2
    return hu.astype(np.int16), label


def write_nifti(path: Path, arr_xyz: np.ndarray, style: str, spacing=SPACING) -> None:
    """Write an ``(X, Y, Z)`` LPS-oriented array as NIfTI in a release's storage order.

    ``kits``: axial axis first and pointing inferior, like the kits19 files
    (``(num_slices, height, width)``); ``lits``: the identity RAS affine (LPS direction
    diag(-1, -1, 1))."""
    import SimpleITK as sitk

    if style == "kits":
        idx = np.flip(arr_xyz.transpose(2, 1, 0), axis=0)           # (i, j, k) = (-z, y, x)
        direction = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]             # columns: index axes
        sp = (spacing[2], spacing[1], spacing[0])
    elif style == "lits":
        idx = np.flip(arr_xyz, axis=(0, 1))
        direction = [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]
        sp = tuple(spacing)
    else:
        raise ValueError(style)
    img = sitk.GetImageFromArray(np.ascontiguousarray(idx.transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in sp])
    img.SetOrigin((-120.0, 35.5, 410.0))
    img.SetDirection([float(v) for v in np.asarray(direction).ravel()])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def write_kits(raw: Path, num: int, seed: int = 0, style: str = "kits", **kw) -> str:
    cid = f"case_{num:05d}"
    hu, lab = make_ct(seed, **kw)
    write_nifti(raw / cid / "imaging.nii.gz", hu, style)
    write_nifti(raw / cid / "segmentation.nii.gz", lab, style)
    return cid


def write_lits(raw: Path, num: int, seed: int = 0, sub: str = "Training Batch 1") -> str:
    hu, lab = make_ct(seed)
    write_nifti(raw / sub / f"volume-{num}.nii", hu, "lits")
    write_nifti(raw / sub / f"segmentation-{num}.nii", lab.astype(np.float32), "lits")
    return f"volume-{num}"


def kits_small():
    return get_preprocess_preset("kits", OUT)


def read_h5(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f.keys()}
        out["attrs"] = dict(f.attrs)
    return out


# ------------------------------------------------------------------ transforms


def test_window_and_resize():
    hu = np.array([-1024, -160, 40, 240, 1500], np.float32).reshape(5, 1, 1)
    np.testing.assert_allclose(window_unit(hu, (-160, 240)).ravel(), [0, 0, 0.5, 1, 1])
    vol = np.random.default_rng(0).random((17, 9, 5)).astype(np.float32)
    for size in [(8, 8, 8), (33, 3, 5), (17, 9, 5)]:
        out = resize_volume(vol, size, order=1)
        assert out.shape == size and out.dtype == np.float32
    lab = np.random.default_rng(1).integers(0, 3, (17, 9, 5)).astype(np.uint8)
    out = resize_volume(lab, (7, 11, 13), order=0)
    assert out.shape == (7, 11, 13) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1, 2}


def test_body_mask_ignores_table_fills_holes():
    hu, _ = make_ct(0)
    mask = body_mask(hu.astype(np.float32), -500)
    x, y = RAW_SHAPE[0] // 2, int(RAW_SHAPE[1] * 0.42)
    assert mask[x, y, 10]                               # the gas pocket is filled
    assert not mask[:, int(RAW_SHAPE[1] * 0.9), :].any()  # the table is not body
    box = body_crop_box(mask, margin=2)
    assert box[2] == (0, RAW_SHAPE[2])                  # Z never cropped
    assert box[1][1] < int(RAW_SHAPE[1] * 0.88)          # table outside the box
    assert body_crop_box(np.zeros((5, 6, 7), bool), 3) == ((0, 5), (0, 6), (0, 7))


def test_orientation_from_direction():
    perm, flip = orientation_from_direction(np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0.]]))
    assert perm == (2, 1, 0) and flip == (False, False, True)
    a = np.arange(24).reshape(2, 3, 4)
    np.testing.assert_array_equal(to_xyz(a, (2, 1, 0), (False, False, True)),
                                  a.transpose(2, 1, 0)[:, :, ::-1])


def test_kits_and_lits_storage_orders_read_alike(tmp_path):
    hu, lab = make_ct(3)
    preset = kits_small()
    cases = {}
    for style in ("kits", "lits"):
        d = tmp_path / style
        write_nifti(d / "imaging.nii.gz", hu, style)
        write_nifti(d / "segmentation.nii.gz", lab, style)
        cases[style] = load_raw_case(RawCase("c", d / "imaging.nii.gz",
                                             d / "segmentation.nii.gz"), preset)
    for style, (img, seg, spacing) in cases.items():
        np.testing.assert_array_equal(img, hu.astype(np.float32), err_msg=style)
        np.testing.assert_array_equal(seg, lab, err_msg=style)
        np.testing.assert_allclose(spacing, SPACING)


# ------------------------------------------------------------------ one case


def check_output(path: Path, out_size, window) -> dict:
    d = read_h5(path)
    assert d["image"].shape == d["label"].shape == d["label_raw"].shape == tuple(out_size)
    assert d["image"].dtype == np.float32 and d["label"].dtype == np.uint8
    assert d["label_raw"].dtype == np.uint8
    assert abs(float(d["image"].mean())) < 1e-3 and abs(float(d["image"].std()) - 1) < 1e-3
    assert set(np.unique(d["label_raw"])) == {0, 1, 2}          # raw classes kept
    np.testing.assert_array_equal(d["label"], (d["label_raw"] > 0).astype(np.uint8))
    a = d["attrs"]
    unit = d["image"] * a["zscore_std"] + a["zscore_mean"]      # the [0, 1] volume
    assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5
    np.testing.assert_allclose(a["window_hu"], window)
    np.testing.assert_allclose(a["spacing"], SPACING)
    np.testing.assert_array_equal(a["original_shape"], RAW_SHAPE)
    assert list(a["crop_box"][2]) == [0, RAW_SHAPE[2]]
    assert a["label_voxels_outside_crop"] == 0
    case = load_h5_case(path)                                    # the dataset contract
    assert case.image.shape == tuple(out_size)
    return d


def test_kits_case(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "h5"
    cid = write_kits(raw, 12)
    preset = kits_small()
    res = preprocess_case(find_raw_cases(raw, preset)[cid], out, preset)
    assert res.status == "done", res.message
    d = check_output(out / f"{cid}.h5", OUT, (-160, 240))
    assert d["attrs"]["preset"] == "kits"
    assert d["attrs"]["source_image"] == "imaging.nii.gz"


def test_lits_case_in_batch_folder(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "h5"
    write_lits(raw, 7, sub="Training Batch 1")
    write_lits(raw, 30, seed=1, sub="Training Batch 2")
    preset = get_preprocess_preset("lits", (20, 20, 10))
    found = find_raw_cases(raw, preset)
    assert list(found) == ["volume-7", "volume-30"]
    results = run_preprocessing(list(found.values()), out, preset, progress=False)
    assert [r.status for r in results] == ["done", "done"], [r.message for r in results]
    d = check_output(out / "volume-30.h5", (20, 20, 10), (-100, 200))
    assert d["attrs"]["preset"] == "lits"


def test_kits19_repository_root_is_accepted(tmp_path):
    cid = write_kits(tmp_path / "kits19" / "data", 5)
    found = find_raw_cases(tmp_path / "kits19", kits_small())
    assert list(found) == [cid] and found[cid].label is not None


def test_label_never_shapes_the_crop(tmp_path):
    """Same image, labels over different z ranges (or none): identical image and crop, and
    the output always has the preset's depth."""
    preset = kits_small()
    outs = []
    hu, lab = make_ct(4)
    for k, label_z in enumerate([None, (8, 10), (0, 2)]):
        raw, cid = tmp_path / f"raw{k}", "case_00001"
        part = lab.copy()
        if label_z is not None:
            part[:, :, :label_z[0]] = 0
            part[:, :, label_z[1]:] = 0
            part[:, :, label_z[0]:label_z[1]] = np.maximum(part[:, :, label_z[0]:label_z[1]], 1)
        write_nifti(raw / cid / "imaging.nii.gz", hu, "kits")
        write_nifti(raw / cid / "segmentation.nii.gz", part, "kits")
        res = preprocess_case(find_raw_cases(raw, preset)[cid], tmp_path / f"h5_{k}", preset)
        assert res.status == "done", res.message
        outs.append(read_h5(Path(res.path)))
    for d in outs[1:]:
        np.testing.assert_array_equal(d["image"], outs[0]["image"])
        np.testing.assert_array_equal(d["attrs"]["crop_box"], outs[0]["attrs"]["crop_box"])
        assert d["image"].shape[2] == OUT[2]
    assert not np.array_equal(outs[1]["label"], outs[2]["label"])
    a = preprocess_arrays(hu.astype(np.float32), lab, preset, SPACING)
    b = preprocess_arrays(hu.astype(np.float32), np.zeros_like(lab), preset, SPACING)
    np.testing.assert_array_equal(a.image, b.image)


# ------------------------------------------------------------------ bad inputs


def _one_line(msg: str, name: str) -> None:
    assert "\n" not in msg and name in msg, msg


def test_bad_files_are_reported_and_others_go_on(tmp_path):
    import SimpleITK as sitk

    raw, out = tmp_path / "raw", tmp_path / "h5"
    good = write_kits(raw, 1)
    corrupt = write_kits(raw, 2)
    (raw / corrupt / "imaging.nii.gz").write_bytes(b"\x1f\x8b not a nifti at all" * 10)
    mismatch = write_kits(raw, 3)
    hu, lab = make_ct(0, shape=(60, 52, 17))
    write_nifti(raw / mismatch / "segmentation.nii.gz", lab, "kits")
    noseg = write_kits(raw, 4)
    (raw / noseg / "segmentation.nii.gz").unlink()
    empty = write_kits(raw, 5)          # all air: nothing inside the HU window
    write_nifti(raw / empty / "imaging.nii.gz", np.full(RAW_SHAPE, -1024, np.int16), "kits")
    flat = write_kits(raw, 6)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.int16)),
                    str(raw / flat / "imaging.nii.gz"))
    badlab = write_kits(raw, 7)
    write_nifti(raw / badlab / "segmentation.nii.gz", make_ct(0)[1] * 2, "kits")

    preset = kits_small()
    results = {r.case_id: r for r in run_preprocessing(
        list(find_raw_cases(raw, preset).values()), out, preset, progress=False)}
    assert results[good].status == "done"
    expect = {corrupt: ("imaging.nii.gz", "corrupt"),
              mismatch: ("segmentation.nii.gz", "does not match"),
              noseg: ("segmentation.nii.gz", "not found"),
              empty: ("imaging.nii.gz", "constant"),
              flat: ("imaging.nii.gz", "3D"),
              badlab: ("segmentation.nii.gz", "outside 0..2")}
    for cid, (fname, words) in expect.items():
        r = results[cid]
        assert r.status == "failed", cid
        _one_line(r.message, f"{cid}/{fname}")
        assert words in r.message, r.message
        assert not r.detail, r.detail            # a DataError, not an internal failure
        assert not (out / f"{cid}.h5").exists()
    assert not list(out.glob("*.tmp"))


def test_missing_ids_and_folders(tmp_path):
    preset = kits_small()
    with pytest.raises(DataError, match="raw data folder not found"):
        find_raw_cases(tmp_path / "nope", preset)
    (tmp_path / "raw").mkdir()
    raw = find_raw_cases(tmp_path / "raw", preset, ["case_00099"])["case_00099"]
    res = preprocess_case(raw, tmp_path / "h5", preset)
    assert res.status == "failed" and "case_00099/imaging.nii.gz: file not found" in res.message
    lraw = find_raw_cases(tmp_path / "raw", get_preprocess_preset("lits"), ["volume-3"])
    res = preprocess_case(lraw["volume-3"], tmp_path / "h5", get_preprocess_preset("lits"))
    assert res.status == "failed" and "volume-3.nii: file not found" in res.message
    with pytest.raises(ConfigError):
        get_preprocess_preset("la")
    with pytest.raises(ConfigError):
        get_preprocess_preset("kits", (1, 2))


def test_nan_and_shape_checks_on_arrays():
    """SimpleITK's NIfTI reader turns NaN voxels into 0, so NaN is checked on the arrays."""
    hu, lab = make_ct(0)
    hu = hu.astype(np.float32)
    hu[3, 4, 5] = np.nan
    with pytest.raises(DataError, match="NaN"):
        preprocess_arrays(hu, lab, kits_small())
    with pytest.raises(DataError, match="does not match"):
        preprocess_arrays(np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 3), np.uint8),
                          kits_small())
    with pytest.raises(DataError, match="3D"):
        preprocess_arrays(np.zeros((4, 4), np.float32), None, kits_small())


# ------------------------------------------------------------------ the command line


def test_cli_workers_skip_existing_overwrite_lists(tmp_path, capsys):
    raw, out, lists = tmp_path / "raw", tmp_path / "h5", tmp_path / "lists"
    ids = [write_kits(raw, n, seed=n) for n in (10, 11, 12)]
    bad = write_kits(raw, 13)
    (raw / bad / "segmentation.nii.gz").write_bytes(b"garbage")
    lists.mkdir()
    (lists / "train.list").write_text("\n".join(ids[:2] + [bad]) + "\n")
    (lists / "test.list").write_text(ids[2] + "\n")
    base = ["--dataset", "kits", "--raw_dir", str(raw), "--out_dir", str(out),
            "--lists_dir", str(lists), "--out_size", *map(str, OUT), "--no_progress"]

    rc = preprocess_cli.main(base + ["--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "done 3, skipped (existing) 0, failed 1" in err
    fail_lines = [ln for ln in err.splitlines() if ln.startswith("failed ")]
    assert len(fail_lines) == 1 and f"{bad}/segmentation.nii.gz" in fail_lines[0]
    assert (out / "train.list").read_text() == (lists / "train.list").read_text()
    assert (out / "test.list").is_file()
    for cid in ids:
        check_output(out / f"{cid}.h5", OUT, (-160, 240))

    # skip-existing: nothing rewritten; --overwrite redoes; --ids limits the work
    mtimes = {c: (out / f"{c}.h5").stat().st_mtime_ns for c in ids}
    assert preprocess_cli.main(base + ["--ids", *ids]) == 0
    assert "done 0, skipped (existing) 3, failed 0" in capsys.readouterr().err
    assert {c: (out / f"{c}.h5").stat().st_mtime_ns for c in ids} == mtimes
    assert preprocess_cli.main(base + ["--ids", ids[0], "--overwrite"]) == 0
    assert "done 1, skipped (existing) 0" in capsys.readouterr().err
    assert (out / f"{ids[0]}.h5").stat().st_mtime_ns != mtimes[ids[0]]

    # --all without lists: every raw case found
    out2 = tmp_path / "h5_all"
    rc = preprocess_cli.main(["--dataset", "kits", "--raw_dir", str(raw), "--out_dir", str(out2),
                              "--lists_dir", "none", "--all", "--out_size", "8", "8", "4",
                              "--no_progress"])
    assert rc == 1 and len(list(out2.glob("*.h5"))) == 3
    assert not (out2 / "train.list").exists()


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    rc = run_cli(preprocess_cli.main, ["--dataset", "lits", "--raw_dir", str(tmp_path / "x"),
                                       "--out_dir", str(tmp_path / "o"), "--all"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "raw data folder not found" in err
    (tmp_path / "empty").mkdir()
    rc = run_cli(preprocess_cli.main, ["--dataset", "lits", "--raw_dir", str(tmp_path / "empty"),
                                       "--out_dir", str(tmp_path / "o"), "--lists_dir", "none"])
    assert rc == 2 and "no lits cases found" in capsys.readouterr().err
