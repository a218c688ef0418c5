"""scripts/compare_coarse.py: case-by-case comparison of two registration outputs."""
from __future__ import annotations

import json

import pytest

from conftest import REPO, load_script
from cogrnet.errors import DataError

compare_coarse = load_script(REPO / "scripts" / "compare_coarse.py")


def _summary(folder, dice):
    folder.mkdir()
    cases = [{"id": i, "dice": d, "status": "ok"} for i, d in dice.items()]
    cases.append({"id": "failed", "dice": None, "status": "error"})
    (folder / "summary.json").write_text(json.dumps({"cases": cases}))
    return folder


def test_counts_gains_losses_and_cases_below(tmp_path, capsys):
    a = _summary(tmp_path / "a", {"x": 0.70, "y": 0.90, "z": 0.85, "only_a": 0.1})
    b = _summary(tmp_path / "b", {"x": 0.82, "y": 0.89, "z": 0.85})
    assert compare_coarse.main([str(a), str(b)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cases"] == 3 and (out["gain"], out["loss"], out["tie"]) == (1, 1, 1)
    assert out["mean_before"] == pytest.approx(0.8167, abs=1e-4)
    assert out["largest_gain"] == ["x", 0.12] and out["largest_loss"] == ["y", -0.01]
    assert (out["below_0.8_before"], out["below_0.8_after"]) == (1, 0)
    same = compare_coarse.compare({"x": 0.5}, {"x": 0.6})
    assert same["largest_loss"] is None


def test_a_folder_without_summary_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="no summary.json"):
        compare_coarse.case_dice(tmp_path)
    (tmp_path / "summary.json").write_text("[1]")
    with pytest.raises(DataError, match="not a registration summary"):
        compare_coarse.case_dice(tmp_path)
