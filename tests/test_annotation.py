"""The registration stage: DPA, slice-chain propagation, fusion, the coarse-label file."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from cogrnet.annotation import (DPA, CoarseLabel, FusionParams, PropagationParams,
                                coarse_from_dpa, dice, fuse_planes, propagate_plane,
                                read_coarse_label, read_user_dpa, simulate_dpa, validate_dpa,
                                write_coarse_label)
from cogrnet.annotation.dpa import choose_index, make_sparse
from cogrnet.annotation.propagate import DEMONS_FILTERS, cross_line, parse_propagation
from cogrnet.errors import ConfigError, DataError


def ball(shape=(40, 40, 40), centre=(20, 20, 20), radius=10.0) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def one_line(msg: str) -> bool:
    return "\n" not in msg and len(msg) > 10


# ---------------------------------------------------------------- DPA
def test_choose_index_policies():
    lab = np.zeros((10, 12, 88), dtype=np.uint8)
    lab[2:5, 3:6, 60:63] = 1
    lab[2:8, 3:9, 61] = 1
    assert choose_index(lab, 2, "middle", 0) == 43  # the LA reference (43 of 88)
    assert choose_index(lab, 1, "middle", 1) == 6  # Y // 2
    assert choose_index(lab, 2, "largest", 0) == 61
    with pytest.raises(ConfigError):
        choose_index(lab, 2, "random", 0)


def test_simulate_dpa_is_sparse_and_exact():
    lab = ball().astype(np.uint8)
    dpa = simulate_dpa(lab, (2, 1), "middle", "c1")
    assert dpa.indices == (19, 20)
    assert np.array_equal(dpa.slice_mask(0), lab[:, :, 19].astype(bool))
    assert np.array_equal(dpa.slice_mask(1), lab[:, 20, :].astype(bool))
    assert dpa.sparse.sum() == lab[:, :, 19].sum() + lab[:, 20, :].sum() - lab[:, 20, 19].sum()


@pytest.mark.parametrize("make, match", [
    (lambda lab: DPA(make_sparse(lab, (2, 1), (2, 20)), (2, 1), (2, 20)), "is empty"),
    (lambda lab: DPA(make_sparse(lab, (2, 1), (20, 20))[:, :, :30], (2, 1), (20, 20)),
     "does not match image shape"),
    (lambda lab: DPA(make_sparse(lab, (2, 1), (20, 20)), (2, 1), (40, 20)), "out of range"),
    (lambda lab: DPA(make_sparse(lab, (2, 1), (20, 20)), (2, 2), (20, 20)),
     "two different axes"),
    (lambda lab: DPA(lab.astype(np.uint8), (2, 1), (20, 20)), "outside the two annotated"),
    (lambda lab: DPA(make_sparse(lab, (2, 1), (20, 20)) * 3, (2, 1), (20, 20)), "binary"),
])
def test_validate_dpa_rejects(make, match):
    lab = ball().astype(np.uint8)
    with pytest.raises(DataError, match=match) as err:
        validate_dpa(make(lab), lab.shape, "case7")
    assert "case7" in str(err.value) and one_line(str(err.value))


def test_simulate_dpa_needs_two_slices():
    lab = np.ones((8, 8, 1), dtype=np.uint8)
    with pytest.raises(DataError, match="need at least 2") as err:
        simulate_dpa(lab, (2, 1), "middle", "thin")
    assert "'thin'" in str(err.value)


def test_read_user_dpa_roundtrip(tmp_path):
    lab = ball().astype(np.uint8)
    dpa = simulate_dpa(lab, (0, 2), "largest", "u1")
    with h5py.File(tmp_path / "u1.h5", "w") as f:
        f["annotation"] = dpa.sparse
        f["annotation"].attrs["axes"] = list(dpa.axes)
        f["annotation"].attrs["indices"] = list(dpa.indices)
    got = read_user_dpa(tmp_path, "u1", lab.shape)
    assert got.axes == (0, 2) and got.indices == dpa.indices
    assert np.array_equal(got.sparse, dpa.sparse)
    with pytest.raises(DataError, match="not found"):
        read_user_dpa(tmp_path, "nope", lab.shape)
    with h5py.File(tmp_path / "u2.h5", "w") as f:
        f["annotation"] = dpa.sparse
    with pytest.raises(DataError, match="lacks attribute"):
        read_user_dpa(tmp_path, "u2", lab.shape)


# ---------------------------------------------------------------- propagation
def _moving_disk(n: int = 16, h: int = 48, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A disk that drifts by one pixel per slice: image ``(n, h, w)`` and its truth."""
    image = np.zeros((n, h, w), dtype=np.float32)
    truth = np.zeros((n, h, w), dtype=bool)
    rr, cc = np.mgrid[:h, :w]
    for i in range(n):
        disk = (rr - 24) ** 2 + (cc - 14 - i) ** 2 <= 64
        truth[i] = disk
        image[i] = disk * 2.0 + 0.1 * np.sin(rr / 3.0)
    return image, truth


def test_propagate_follows_a_moving_disk():
    """The chain must follow a disk that drifts by one pixel per slice."""
    image, truth = _moving_disk()
    out = propagate_plane(image, truth[8], 8, PropagationParams(iterations=30, shrink=1))
    assert np.array_equal(out[8], truth[8])
    assert dice(out, truth) > 0.9
    still = propagate_plane(image, truth[8], 8, PropagationParams(iterations=0, rescale=False))
    assert dice(out, truth) > dice(still, truth)


@pytest.mark.parametrize("change", [{"demons": d} for d in DEMONS_FILTERS if
                                    d != "fast_symmetric"]
                         + [{"levels": 2}, {"match_histogram": True}])
def test_propagation_variants_follow_the_disk_deterministically(change):
    """Every registration variant of ``--propagation`` follows the drifting disk (a known
    answer), keeps the seed exact and gives the same label twice."""
    image, truth = _moving_disk()
    params = parse_propagation([f"{k}={v}" for k, v in change.items()],
                               PropagationParams(iterations=30, shrink=1))
    out = propagate_plane(image, truth[8], 8, params)
    assert np.array_equal(out[8], truth[8])
    assert dice(out, truth) > 0.9, change
    assert np.array_equal(out, propagate_plane(image, truth[8], 8, params))


@pytest.mark.parametrize("item, match", [
    ("speed=1", "expected NAME=VALUE"), ("levels", "expected NAME=VALUE"),
    ("levels=two", "must be an integer"), ("demons=bspline", "expected one of"),
    ("levels=0", ">= 1"), ("sigma=-1", ">= 0"), ("linear=maybe", "0, 1, true or false"),
    ("threads=4", "expected NAME=VALUE")])
def test_parse_propagation_rejects_in_one_line(item, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_propagation([item])
    assert one_line(str(err.value))


def test_cross_line_stops_and_corrects():
    lab = ball(radius=8.0)
    dpa = simulate_dpa(lab.astype(np.uint8), (2, 1), "middle", "b")
    cross = cross_line(dpa.sparse, dpa.axes, dpa.indices, 0)
    assert cross.line_axis == 1 and cross.pos == dpa.indices[1]
    assert np.array_equal(cross.truth, lab[:, dpa.indices[1], :].T)
    # a flat image: without registration the mask is copied; the crossing line rescales it
    image = np.zeros(lab.shape, dtype=np.float32)
    stack = np.moveaxis(image, 2, 0)
    params = PropagationParams(iterations=0, grace=0, kernel=1)
    plain = np.moveaxis(propagate_plane(stack, dpa.slice_mask(0), 19, params), 0, 2)
    crossed = np.moveaxis(propagate_plane(stack, dpa.slice_mask(0), 19, params, cross), 0, 2)
    zs = np.flatnonzero(crossed.any(axis=(0, 1)))
    assert zs[0] == np.flatnonzero(lab.any(axis=(0, 1)))[0]  # stopped where B says it ends
    assert plain.any(axis=(0, 1)).all()  # without it the copy runs through the whole stack
    assert dice(crossed, lab) > dice(plain, lab) + 0.1
    assert np.array_equal(crossed[:, dpa.indices[1], :], lab[:, dpa.indices[1], :])


# ---------------------------------------------------------------- fusion
def _dpa(truth):
    return simulate_dpa(truth.astype(np.uint8), (2, 1), "middle", "syn")


def test_fusion_known_answer_cuts_the_far_leak():
    """Plane A leaks far from its slice where plane B is sure: the fused label is the truth."""
    truth = ball()
    dpa = _dpa(truth)  # A: z = 19, B: y = 20
    a = truth.copy()
    a[18:23, 18:23, 32:37] = True  # a leak 13-17 slices from plane A, on plane B's rows
    b = truth.copy()
    b[2:5, 36:39, 18:22] = True  # a leak 16-18 slices from plane B, near plane A
    for method in ("sdf", "intersection"):
        label, weight = fuse_planes(a, b, dpa, FusionParams(method=method))
        assert label.dtype == np.uint8 and weight.dtype == np.float32
        assert np.array_equal(label.astype(bool), truth)
        assert 0.0 <= weight.min() and weight.max() <= 1.0
        assert (weight[:, :, 19] == 1).all() and (weight[:, 20, :] == 1).all()
    label, weight = fuse_planes(a, b, dpa)
    assert weight[0, 0, 0] > 0.99 and weight[20, 22, 22] > 0.85  # far outside / deep inside
    assert weight[20, 19, 29] < 0.3  # on the boundary
    assert weight[19, 19, 34] < 0.7  # the disputed leak


def test_signed_distance_equals_scipys_edt_difference():
    from scipy import ndimage

    from cogrnet.annotation.fuse import signed_distance

    rng = np.random.default_rng(0)
    blobs = ndimage.gaussian_filter(rng.random((30, 25, 20)), 2) > 0.5
    for mask in (blobs, ball(), ball((9, 40, 17), (4, 20, 8), 6.0), np.eye(12, dtype=bool)[None]):
        ref = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
        for clip in (2.5, 20.0):
            got = signed_distance(mask, clip)
            assert got.dtype == np.float32 and got.shape == mask.shape
            assert np.array_equal(got, np.clip(ref, -clip, clip).astype(np.float32))
    assert (signed_distance(np.ones((3, 3, 3), bool), 5.0) == 5).all()
    assert (signed_distance(np.zeros((3, 3, 3), bool), 5.0) == -5).all()


def test_fusion_keeps_annotated_slices_exact():
    truth = ball()
    dpa = _dpa(truth)
    empty = np.zeros_like(truth)
    label, weight = fuse_planes(empty, empty, dpa)
    assert np.array_equal(label[:, :, 19], truth[:, :, 19])
    assert np.array_equal(label[:, 20, :], truth[:, 20, :])
    assert label.sum() == dpa.sparse.sum()


def test_fusion_agreeing_planes_are_identity():
    truth = ball()
    label, _ = fuse_planes(truth, truth, _dpa(truth), FusionParams(method="sdf"))
    assert np.array_equal(label.astype(bool), truth)
    label, _ = fuse_planes(truth, truth, _dpa(truth))
    assert np.array_equal(label.astype(bool), truth)


@pytest.mark.parametrize("kwargs, text", [
    ({"method": "mean"}, "--fusion mean: unknown"), ({"gamma": 0.0}, "gamma must be in (0, 1]"),
    ({"gamma": 1.5}, "gamma must be in (0, 1]"), ({"clip": 0.0}, "clip must be > 0"),
    ({"tau": -1.0}, "tau must be > 0")])
def test_fusion_settings_are_checked_with_one_line(kwargs, text):
    with pytest.raises(ConfigError) as err:
        FusionParams(**kwargs)
    assert text in str(err.value) and one_line(str(err.value))


# ---------------------------------------------------------------- whole case, io
def test_coarse_from_dpa_on_phantom_is_good_and_deterministic(phantom_root):
    from cogrnet.data.dataset import CaseStore

    case = CaseStore(phantom_root).get("phantom_000")
    dpa = simulate_dpa(case.label, (2, 1), "middle", "phantom_000")
    one = coarse_from_dpa(case.image, dpa)
    two = coarse_from_dpa(case.image, dpa)
    for key in ("label", "label_a", "label_b", "weight"):
        assert getattr(one, key).tobytes() == getattr(two, key).tobytes()
    assert dice(one.label, case.label) > 0.8
    assert dice(one.label_a, case.label) > 0.7 and dice(one.label_b, case.label) > 0.7


def test_coarse_file_roundtrip_and_errors(tmp_path):
    truth = ball((12, 10, 8), (6, 5, 4), 3.0).astype(np.uint8)
    dpa = _dpa(truth)
    coarse = CoarseLabel(truth, truth, truth, np.full(truth.shape, 0.5, np.float32),
                         dpa.axes, dpa.indices, dpa.sparse)
    write_coarse_label(tmp_path, "c", coarse)
    got = read_coarse_label(tmp_path, "c", expected_shape=(12, 10, 8))
    assert np.array_equal(got.label, truth) and got.weight.dtype == np.float32
    assert got.axes == (2, 1) and got.indices == dpa.indices
    assert np.array_equal(got.annotation, dpa.sparse)
    with pytest.raises(DataError, match="does not match image shape"):
        read_coarse_label(tmp_path, "c", expected_shape=(12, 10, 9))
    with pytest.raises(DataError, match="not found"):
        read_coarse_label(tmp_path, "missing")
    (tmp_path / "bad.h5").write_bytes(b"not an h5 file")
    with pytest.raises(DataError, match="bad.h5: corrupt") as err:
        read_coarse_label(tmp_path, "bad")
    assert one_line(str(err.value))
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f["label"] = truth
    with pytest.raises(DataError, match="missing h5 key"):
        read_coarse_label(tmp_path, "partial")


@pytest.mark.slow
def test_la_case_quality(la_root):
    from cogrnet.data.dataset import CaseStore, read_list

    case_id = read_list(la_root / "train.list")[0]
    case = CaseStore(la_root).get(case_id)
    dpa = simulate_dpa(case.label, (2, 1), "middle", case_id)
    coarse = coarse_from_dpa(case.image, dpa)
    assert dice(coarse.label, case.label) > 0.84
    assert min(dice(coarse.label_a, case.label), dice(coarse.label_b, case.label)) > 0.75
