"""The dataset contract: layouts, lists, caching and one-line errors for every bad input."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from cogrnet.data.dataset import (CaseStore, case_path, find_list, load_h5_case, read_list,
                                  write_case_h5)
from cogrnet.errors import DataError
from cogrnet.prepare.phantom import make_phantom_set


def _h5(path, **arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


GOOD_IMG = np.zeros((6, 5, 4), np.float32)
GOOD_LAB = np.zeros((6, 5, 4), np.uint8)


@pytest.mark.parametrize("arrays,message", [
    ({"label": GOOD_LAB}, "missing h5 key(s) image"),
    ({"image": GOOD_IMG}, "missing h5 key(s) label"),
    ({"image": GOOD_IMG, "label": np.zeros((6, 5, 3), np.uint8)}, "does not match image shape"),
    ({"image": np.zeros((6, 5), np.float32), "label": np.zeros((6, 5), np.uint8)}, "image must be 3D"),
    ({"image": np.zeros((2, 6, 5, 4), np.float32), "label": GOOD_LAB}, "image must be 3D"),
    ({"image": GOOD_IMG, "label": np.zeros((1, 6, 5, 4), np.uint8)}, "label must be 3D"),
    ({"image": np.full((6, 5, 4), np.nan, np.float32), "label": GOOD_LAB}, "NaN/inf"),
    ({"image": np.full((6, 5, 4), np.inf, np.float32), "label": GOOD_LAB}, "NaN/inf"),
    ({"image": GOOD_IMG, "label": np.full((6, 5, 4), 3, np.uint8)}, "outside the class range"),
    ({"image": GOOD_IMG, "label": np.full((6, 5, 4), -1, np.int16)}, "outside the class range"),
    ({"image": GOOD_IMG, "label": np.full((6, 5, 4), 0.5, np.float32)}, "non-integer"),
])
def test_bad_case_files_give_one_line_errors_naming_the_file(tmp_path, arrays, message):
    path = _h5(tmp_path / "case.h5", **arrays)
    with pytest.raises(DataError) as err:
        load_h5_case(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "corrupt.h5"
    bad.write_bytes(b"this is not an h5 file at all")
    with pytest.raises(DataError, match="corrupt or unreadable h5"):
        load_h5_case(bad)
    truncated = tmp_path / "trunc.h5"
    write_case_h5(truncated, np.zeros((8, 8, 8), np.float32), GOOD_LAB[:1, :1, :1].repeat(8, 0).repeat(8, 1).repeat(8, 2))
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(DataError, match="corrupt or unreadable h5"):
        load_h5_case(truncated)
    with pytest.raises(DataError, match="file not found"):
        load_h5_case(tmp_path / "nope.h5")


def test_lists_unknown_ids_duplicates_and_empty(tmp_path):
    make_phantom_set(tmp_path, n_train=2, n_test=1, base_shape=(20, 20, 16), jitter=0, layout="flat")
    store = CaseStore(tmp_path)
    assert store.split("train") == ["phantom_000", "phantom_001"]
    (tmp_path / "val.list").write_text("phantom_000\nghost_case\n")
    with pytest.raises(DataError, match="unknown case ID.*ghost_case"):
        store.split("val")
    (tmp_path / "dup.list").write_text("phantom_000\nphantom_000\n")
    with pytest.raises(DataError, match="duplicated case ID"):
        read_list(tmp_path / "dup.list")
    (tmp_path / "empty.list").write_text("# nothing\n\n")
    with pytest.raises(DataError, match="holds no case IDs"):
        read_list(tmp_path / "empty.list")
    with pytest.raises(DataError, match="no list file found"):
        find_list(tmp_path, "holdout")
    with pytest.raises(DataError, match="dataset root folder not found"):
        CaseStore(tmp_path / "missing_root")


def test_both_layouts_are_detected_and_cases_are_cached(tmp_path, label_reads):
    make_phantom_set(tmp_path / "uamt", n_train=1, n_test=1, base_shape=(20, 20, 16), jitter=0)
    make_phantom_set(tmp_path / "flat", n_train=1, n_test=1, base_shape=(20, 20, 16), jitter=0,
                     layout="flat")
    a = case_path(tmp_path / "uamt", "phantom_000")
    b = case_path(tmp_path / "flat", "phantom_000")
    assert a.name == "mri_norm2.h5" and b.name == "phantom_000.h5"
    store = CaseStore(tmp_path / "uamt")
    first = store.get("phantom_000")
    assert store.get("phantom_000") is first  # read once
    img_only = store.get("phantom_000", with_label=False)
    assert img_only.label is None and img_only.image is first.image
    unl = CaseStore(tmp_path / "flat")
    unl.get("phantom_001", with_label=False)
    assert label_reads == ["phantom_000"]  # the first store's, once; phantom_001's never


def test_phantoms_are_deterministic_and_la_like(tmp_path):
    make_phantom_set(tmp_path / "a", n_train=2, n_test=0, base_shape=(32, 30, 20), seed=3)
    make_phantom_set(tmp_path / "b", n_train=2, n_test=0, base_shape=(32, 30, 20), seed=3)
    ca, cb = CaseStore(tmp_path / "a").get("phantom_001"), CaseStore(tmp_path / "b").get("phantom_001")
    np.testing.assert_array_equal(ca.image, cb.image)
    np.testing.assert_array_equal(ca.label, cb.label)
    frac = ca.label.mean()
    assert 0.01 < frac < 0.15
    assert abs(float(ca.image.mean())) < 1e-3 and abs(float(ca.image.std()) - 1) < 1e-3
    assert ca.image[ca.label > 0].mean() > ca.image[ca.label == 0].mean() + 0.5


def test_real_la_volumes_load(la_root):
    store = CaseStore(la_root)
    ids = store.split("train")
    assert len(ids) == 80
    case = store.get(ids[0])
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert case.image.shape == case.label.shape and case.shape[2] == 88
    assert set(np.unique(case.label)) <= {0, 1}
