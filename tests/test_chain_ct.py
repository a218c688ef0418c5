"""KiTS19 and LiTS end to end on small generated raw releases: preprocess -> coarse labels ->
a few training iterations -> test, through the command-line entry points."""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import CODE
from cogrnet.errors import run_cli
from test_preprocess import write_kits, write_lits


def _script(rel: str):
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_")[:-3], CODE / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("dataset", ["kits", "lits"])
def test_raw_release_to_metrics(dataset, tmp_path):
    raw, h5, coarse, runs = (tmp_path / n for n in ("raw", "h5", "coarse", "runs"))
    writer = write_kits if dataset == "kits" else write_lits
    ids = [writer(raw, n, seed=n) for n in range(1, 6)]
    assert run_cli(_script("preprocess.py"), ["--dataset", dataset, "--raw_dir", str(raw),
                   "--out_dir", str(h5), "--lists_dir", "none", "--all", "--out_size", "40", "40", "24",
                   "--no_progress"]) == 0
    (h5 / "train.list").write_text("\n".join(ids[:4]) + "\n")
    (h5 / "test.list").write_text(ids[4] + "\n")
    assert run_cli(_script("utils/registration.py"), ["--dataset", dataset, "--root_path", str(h5),
                   "--split", "train", "--labelnum", "2", "--out_dir", str(coarse)]) == 0
    summary = json.loads((coarse / "summary.json").read_text())
    assert all(c["status"] == "ok" for c in summary["cases"])
    assert run_cli(_script("train.py"), [
        "--dataset", dataset, "--root_path", str(h5), "--coarse_dir", str(coarse),
        "--labelnum", "2", "--patch_size", "32", "32", "16", "--n_filters", "4",
        "--batch_size", "4", "--labeled_bs", "2", "--pre_max_iteration", "1",
        "--self_max_iteration", "1", "--val_list", "none", "--device", "cpu", "--no_progress",
        "--num_workers", "1", "--out_root", str(runs), "--exp", "chain"]) == 0
    out = tmp_path / "test"
    assert run_cli(_script("test.py"), ["--dataset", dataset, "--root_path", str(h5), "--split", "test",
                   "--checkpoint", str(runs / "chain" / "best.pth"), "--overlap", "0.5",
                   "--out_dir", str(out), "--device", "cpu", "--no_progress"]) == 0
    result = json.loads((out / "summary.json").read_text())
    assert [c["case"] for c in result["cases"]] == ids[4:]
    assert result["cases"][0]["shape"] == [40, 40, 24]  # scored on the preprocessed grid
