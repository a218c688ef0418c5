"""The intensity refinement of the fused coarse label (cogrnet.annotation.refine) on a
synthetic bright ellipsoid whose answer is known: coarse labels that are too small grow back
to the object, the annotated slices stay exact, the output is deterministic, bad parameters
are one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cogrnet.annotation import (DPA, FusionParams, RefineParams, coarse_from_dpa, dice,
                                fuse_planes, refine_label)
from cogrnet.errors import ConfigError

AXES, INDICES = (2, 1), (20, 24)


def _scene(seed: int = 0):
    x, y, z = np.meshgrid(np.arange(48), np.arange(48), np.arange(40), indexing="ij")
    truth = ((x - 24) / 14.0) ** 2 + ((y - 24) / 11.0) ** 2 + ((z - 20) / 12.0) ** 2 <= 1
    rng = np.random.default_rng(seed)
    image = truth.astype(np.float32) + rng.normal(0, 0.15, truth.shape).astype(np.float32)
    coarse = ndimage.binary_erosion(truth, iterations=2)  # both planes too small by 2 voxels
    sparse = np.zeros(truth.shape, np.uint8)
    for axis, index in zip(AXES, INDICES):
        sl = [slice(None)] * 3
        sl[axis] = index
        sparse[tuple(sl)] = truth[tuple(sl)]
    return image, truth, coarse, DPA(sparse, AXES, INDICES)


def _slices(volume, dpa):
    return [np.take(volume, i, axis=a) for a, i in zip(dpa.axes, dpa.indices)]


def test_intensity_refinement_recovers_the_object():
    image, truth, coarse, dpa = _scene()
    fused, _ = fuse_planes(coarse, coarse, dpa)
    before = dice(fused, truth)
    assert before < 0.82
    # unsmoothed evidence on this clean synthetic edge (measured 0.797 -> 0.91); next to the
    # annotated slices the geometry is trusted most, so the object is not recovered fully
    sharp = RefineParams(method="intensity", smooth=0.0, sigma_per_slice=0.1,
                         band_per_slice=0.3)
    label, weight = refine_label(image, coarse, coarse, dpa, params=sharp)
    assert dice(label, truth) > 0.9
    assert dice(refine_label(image, coarse, coarse, dpa)[0], truth) > before + 0.04  # defaults
    for got, want in zip(_slices(label, dpa), _slices(truth, dpa)):
        assert np.array_equal(got, want)  # the annotated slices are exact
    for w in _slices(weight, dpa):
        assert np.all(w == 1.0)
    assert label.dtype == np.uint8 and weight.dtype == np.float32
    assert 0 <= weight.min() and weight.max() <= 1


def test_refinement_moves_only_the_band():
    image, truth, coarse, dpa = _scene()
    params = RefineParams(method="intensity", band=0.0, band_per_slice=0.0)
    label, _ = refine_label(image, coarse, coarse, dpa, params=params)
    fused, _ = fuse_planes(coarse, coarse, dpa)
    changed = label != fused
    # with a zero band only voxels whose score is exactly 0 could move: none here
    assert changed.sum() <= int(0.001 * changed.size)


def test_refinement_is_deterministic_and_goes_through_coarse_from_dpa():
    image, truth, coarse, dpa = _scene(seed=3)
    a = refine_label(image, coarse, coarse, dpa)
    b = refine_label(image.copy(), coarse.copy(), coarse.copy(), dpa)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    params = RefineParams(method="intensity")
    c = coarse_from_dpa(image, dpa, refine=params)
    c2 = coarse_from_dpa(image, dpa, refine=params)
    assert c.label.tobytes() == c2.label.tobytes() and c.weight.tobytes() == c2.weight.tobytes()
    plain = coarse_from_dpa(image, dpa)
    assert dice(c.label, truth) >= dice(plain.label, truth)


def test_nothing_to_learn_keeps_the_fused_label():
    image, truth, coarse, dpa = _scene()
    constant = np.ones_like(image)
    assert refine_label(constant, coarse, coarse, dpa) is None
    plain = coarse_from_dpa(constant, dpa)
    refined = coarse_from_dpa(constant, dpa, refine=RefineParams(method="intensity"))
    assert np.array_equal(plain.label, refined.label)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "graphcut"}, "--refine graphcut: unknown"),
    ({"sigma": 0.0}, "sigma must be > 0"),
    ({"band": -1.0}, "band must be >= 0"),
    ({"bins": 1}, "bins must be >= 2"),
])
def test_bad_parameters_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as err:
        RefineParams(**kwargs)
    assert "\n" not in str(err.value)


def test_refinement_needs_the_sdf_fusion():
    image, _, _, dpa = _scene()
    with pytest.raises(ConfigError, match="refines the sdf fusion, not --fusion vote"):
        coarse_from_dpa(image, dpa, fusion=FusionParams(method="vote"),
                        refine=RefineParams(method="intensity"))


def _sweep_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "refine_sweep.py"
    spec = importlib.util.spec_from_file_location("refine_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_sweep_settings_are_every_combination():
    sweep = _sweep_module()
    combos = sweep.parse_settings(["smooth=0,2", "bins=20,40", "band=3"])
    assert combos == [{"smooth": 0.0, "bins": 20, "band": 3.0},
                      {"smooth": 0.0, "bins": 40, "band": 3.0},
                      {"smooth": 2.0, "bins": 20, "band": 3.0},
                      {"smooth": 2.0, "bins": 40, "band": 3.0}]
    assert sweep.parse_settings([]) == [{}]
    fusion, refine = sweep.split_setting({"gamma": 0.9, "threshold": 0.0, "smooth": 1.0})
    assert (fusion.gamma, fusion.threshold, fusion.method) == (0.9, 0.0, "sdf")
    assert (refine.smooth, refine.method, refine.band) == (1.0, "intensity", RefineParams().band)
    for bad in (["method=none"], ["smooth"], ["smooth=a"], ["tau=1"]):
        with pytest.raises(ConfigError, match="--set"):
            sweep.parse_settings(bad)


def test_sweep_without_a_registration_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="summary.json not found"):
        _sweep_module().main(["--root_path", str(tmp_path), "--coarse_dir", str(tmp_path)])
