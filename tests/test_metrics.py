"""Metrics against medpy (the oracle), the empty-mask policy and the report files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from cogrnet.evaluation.metrics import (binary_metrics, case_metrics, dc, hd95, jc,
                                        surface, union_bbox)
from cogrnet.evaluation.report import format_table, summarize, write_report

medpy_binary = pytest.importorskip("medpy.metric.binary")


def _blob(rng, shape):
    """A smooth random blob touching several places of the volume."""
    field = ndimage.gaussian_filter(rng.random(shape), sigma=2.0)
    mask = field > np.quantile(field, 0.7)
    return mask


def _medpy(p, g, spacing=None, connectivity=1):
    return {"dice": medpy_binary.dc(p, g), "jaccard": medpy_binary.jc(p, g),
            "hd95": medpy_binary.hd95(p, g, spacing, connectivity),
            "asd": medpy_binary.asd(p, g, spacing, connectivity)}


@pytest.mark.parametrize("shape,spacing", [((20, 18, 12), None), ((24, 16, 10), (0.7, 0.7, 2.5)),
                                           ((31, 9, 17), (1.0, 0.3, 1.7)), ((15, 15), (2.0, 0.5))])
def test_metrics_equal_medpy_on_random_masks(shape, spacing):
    rng = np.random.default_rng(sum(shape))
    for trial in range(3):
        g = _blob(rng, shape)
        p = _blob(rng, shape) if trial == 0 else ndimage.binary_dilation(g) ^ (rng.random(shape) < 0.05)
        ours = binary_metrics(p, g, spacing)
        ref = _medpy(p, g, spacing)
        for k in ref:
            assert ours[k] == pytest.approx(ref[k], abs=1e-6), (k, trial)


def test_metrics_small_objects_border_and_connectivity():
    """Objects touching the array border (surface there), and connectivity 2/3."""
    g = np.zeros((12, 10, 8), bool)
    g[0:5, 0:4, 2:8] = True
    p = np.zeros_like(g)
    p[1:6, 0:3, 3:8] = True
    p[10, 9, 0] = True  # a far single voxel
    for conn in (1, 2, 3):
        ours = binary_metrics(p, g, (0.5, 1.0, 2.0), connectivity=conn)
        ref = _medpy(p, g, (0.5, 1.0, 2.0), conn)
        for k in ref:
            assert ours[k] == pytest.approx(ref[k], abs=1e-6), (k, conn)


def test_surface_matches_scipy_erosion():
    rng = np.random.default_rng(3)
    m = rng.random((9, 8, 7)) < 0.6
    fp = ndimage.generate_binary_structure(3, 1)
    assert np.array_equal(surface(m), m ^ ndimage.binary_erosion(m, structure=fp))


def test_union_bbox():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[2, 3, 4] = True
    b[7, 9, 0] = True
    assert union_bbox(a, b, margin=1) == (slice(1, 9), slice(2, 10), slice(0, 6))
    assert union_bbox(np.zeros_like(a), np.zeros_like(a)) is None


def test_empty_prediction_policy():
    g = np.zeros((8, 8, 8), bool)
    g[2:5, 2:5, 2:5] = True
    empty = np.zeros_like(g)
    m = binary_metrics(empty, g)
    assert m["dice"] == 0.0 and m["jaccard"] == 0.0
    assert math.isnan(m["hd95"]) and math.isnan(m["asd"])
    m = binary_metrics(g, empty)  # empty reference
    assert m["dice"] == 0.0 and math.isnan(m["hd95"])
    m = binary_metrics(empty, empty)
    assert m["dice"] == 1.0 and m["jaccard"] == 1.0 and math.isnan(m["asd"])
    assert dc(empty, g) == 0.0 and jc(empty, g) == 0.0 and math.isnan(hd95(empty, g))
    row = case_metrics(empty.astype(np.uint8), g.astype(np.uint8), spacing=(1, 1, 2))
    assert row["empty_prediction"] is True and math.isnan(row["hd95_mm"])


def test_case_metrics_mm_and_multiclass():
    rng = np.random.default_rng(5)
    g = _blob(rng, (16, 14, 10))
    p = ndimage.binary_dilation(g)
    row = case_metrics(p.astype(np.uint8), g.astype(np.uint8), spacing=(0.5, 0.5, 2.0))
    assert row["hd95_mm"] == pytest.approx(medpy_binary.hd95(p, g, (0.5, 0.5, 2.0)), abs=1e-6)
    assert row["asd"] == pytest.approx(medpy_binary.asd(p, g), abs=1e-6)
    lab = g.astype(np.uint8) + (ndimage.binary_erosion(g, iterations=1)).astype(np.uint8)
    row3 = case_metrics(lab, lab, num_classes=3)
    assert row3["dice"] == 1.0 and set(row3["per_class"]) == {"1", "2"}


def test_report_files(tmp_path):
    rows = [{"case": "a", "dice": 0.9, "jaccard": 0.8, "hd95": 2.0, "asd": 0.5,
             "empty_prediction": False, "seconds": 1.0},
            {"case": "b", "dice": 0.0, "jaccard": 0.0, "hd95": math.nan, "asd": math.nan,
             "empty_prediction": True, "seconds": 1.0},
            {"case": "c", "error": "DataError: broken file"}]
    summary = write_report(rows, tmp_path, {"mode": "constant"})
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["mean"]["dice"] == pytest.approx(0.45)
    assert data["mean"]["hd95"] == pytest.approx(2.0)  # NaN distances left out, counted
    assert data["empty_predictions"] == 1 and data["n_cases"] == 2
    assert data["failed"][0]["case"] == "c" and data["settings"]["mode"] == "constant"
    assert set(data["std"]) == {"dice", "jaccard", "hd95", "asd"}
    assert data["cases"][1]["hd95"] is None
    csv_lines = (tmp_path / "per_case.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,dice,jaccard,hd95,asd") and len(csv_lines) == 4
    table = format_table(rows, summary)
    assert "empty prediction" in table and "FAILED" in table
    assert summarize(rows)["mean"]["jaccard"] == pytest.approx(0.4)


@pytest.mark.la
def test_metrics_equal_medpy_on_real_la(la_root):
    from cogrnet.data.dataset import CaseStore

    store = CaseStore(la_root)
    case_id = store.split("train")[0]
    g = store.get(case_id).label.astype(bool)
    p = ndimage.shift(ndimage.binary_dilation(g, iterations=2).astype(np.uint8),
                      (3, -2, 1), order=0).astype(bool)
    rng = np.random.default_rng(0)
    band = ndimage.binary_dilation(g, iterations=2) & ~ndimage.binary_erosion(g, iterations=2)
    p ^= band & (rng.random(g.shape) < 0.02)
    for spacing in (None, (0.625, 0.625, 0.625)):
        ours = binary_metrics(p, g, spacing)
        ref = _medpy(p, g, spacing)
        for k in ref:
            assert ours[k] == pytest.approx(ref[k], abs=1e-6), (k, spacing)


@pytest.mark.la
@pytest.mark.slow
def test_metric_speed_vs_medpy_on_real_la(la_root):
    """>= 10x faster than medpy's dc + jc + hd95 + asd on LA labels (docs/EVALUATION.md)."""
    import time

    from cogrnet.data.dataset import CaseStore

    store = CaseStore(la_root)
    ours_total = medpy_total = 0.0
    for case_id in store.split("train")[:5]:
        g = store.get(case_id).label.astype(bool)
        p = ndimage.shift(ndimage.binary_dilation(g, iterations=2).astype(np.uint8),
                          (3, -2, 1), order=0).astype(bool)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            ours = binary_metrics(p, g)
            runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = _medpy(p, g)
        t_medpy = time.perf_counter() - t0
        for k in ref:
            assert ours[k] == pytest.approx(ref[k], abs=1e-6)
        ours_total += min(runs)
        medpy_total += t_medpy
        print(f"{case_id} {g.shape}: ours {min(runs):.3f} s, medpy {t_medpy:.3f} s, "
              f"x{t_medpy / min(runs):.1f}")
    print(f"total: ours {ours_total:.3f} s, medpy {medpy_total:.3f} s, "
          f"x{medpy_total / ours_total:.1f}")
    assert medpy_total / ours_total >= 10.0
