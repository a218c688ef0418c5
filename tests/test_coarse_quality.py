"""Coarse-label quality by slice distance and confidence (cogrnet.annotation.quality) on
hand-built volumes whose counts are known, and through the registration stage."""
from __future__ import annotations

import numpy as np

from cogrnet.annotation.quality import (CONFIDENCE_THRESHOLDS, DISTANCE_EDGES, bin_labels,
                                        calibration_text, case_quality, confidence_counts,
                                        distance_counts, pool_quality, slice_distance)


def _cube(shape=(20, 20, 40)) -> np.ndarray:
    truth = np.zeros(shape, bool)
    truth[5:15, 5:15, 5:35] = True
    return truth


def test_distance_counts_put_each_error_in_its_bin():
    truth = _cube()
    pred = truth.copy()
    pred[5:15, 5:15, 30:35] = False  # 500 missed voxels at z = 30..34: distance 10..14 from z=20
    pred[0:2, 0:2, 22] = True  # 4 extra voxels at distance 2
    d = slice_distance(truth.shape, 2, 20)
    assert d.shape == (1, 1, 40) and d[0, 0, 20] == 0 and d[0, 0, 0] == 20
    counts = distance_counts(pred, truth, d)
    assert len(counts) == len(DISTANCE_EDGES)
    by_bin = dict(zip(bin_labels(), counts))
    assert by_bin["0"] == [100, 0, 0]  # the slice itself
    assert by_bin["1-2"] == [400, 4, 0]  # z = 19, 21, 18, 22
    assert by_bin["8-11"] == [800 - 200, 0, 200]  # z in {9..12, 28..31}: 30, 31 missed
    assert by_bin["12-15"] == [400, 0, 300]  # z in {5..8, 32..35}: 32..34 missed
    assert by_bin[">=30"] == [0, 0, 0]
    total = np.sum(counts, axis=0)
    assert total.tolist() == [int((pred & truth).sum()), 4, 500]


def test_bin_labels_name_the_edges():
    assert bin_labels((0, 1, 3, 10)) == ["0", "1-2", "3-9", ">=10"]


def test_confidence_counts_split_errors_by_weight():
    truth = _cube()
    pred = truth.copy()
    pred[5:15, 5:15, 30:35] = False
    weight = np.ones(truth.shape, np.float32)
    weight[:, :, 30:35] = 0.3  # the wrong slab is marked uncertain, and so is its background
    c = confidence_counts(pred, truth, weight)
    t = list(CONFIDENCE_THRESHOLDS)
    k = t.index(0.5)
    assert c["below"][k] == [0, 0, 500] and c["above"][k][2] == 0
    assert c["below"][t.index(0.25)] == [0, 0, 0]  # 0.3 >= 0.25: nothing is below


def test_case_and_pooled_quality_of_two_cases():
    truth = _cube()
    pred = truth.copy()
    pred[5:15, 5:15, 30:35] = False
    weight = np.where(pred == truth, 0.95, 0.1).astype(np.float32)
    axes, indices = (2, 1), (20, 10)
    q = case_quality(pred, pred, truth, weight, truth, axes, indices)
    assert np.sum(q["distance"]["b"], axis=0).tolist() == [int(truth.sum()), 0, 0]
    pooled = pool_quality([q, q, None])
    dist = pooled["distance"]
    assert dist["b"] == [1.0 if v is not None else None for v in dist["b"]]
    assert dist["a"][0] == 1.0 and dist["a"][bin_labels().index("12-15")] == round(
        2 * 400 / (2 * 400 + 300), 4)
    # all the wrong voxels have weight 0.1: below every threshold, and above it all is right
    conf = pooled["confidence"]
    assert conf["errors_below"] == [1.0] * len(CONFIDENCE_THRESHOLDS)
    assert conf["dice_above"] == [1.0] * len(CONFIDENCE_THRESHOLDS)
    assert conf["dice_below"] == [0.0] * len(CONFIDENCE_THRESHOLDS)
    assert 0 < conf["voxels_below"][0] < 0.2
    assert "errors below t" in calibration_text(pooled)
    assert pool_quality([None, {}]) is None
