"""Per-volume intensity normalisation: the pure function, the case store, training records
it, test.py applies the checkpoint's choice, resume refuses a different one."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import CODE
from cogrnet.data.dataset import CaseStore, normalize_intensity
from cogrnet.errors import ConfigError
from cogrnet.checkpoints import load_checkpoint
from cogrnet.training.config import parse_config
from cogrnet.training.trainer import Trainer

TINY = ["--dataset", "phantom", "--n_filters", "4", "--patch_size", "32", "32", "16",
        "--batch_size", "4", "--labeled_bs", "2", "--device", "cpu", "--no_progress",
        "--num_workers", "1", "--method", "sup", "--label_source", "full", "--labelnum", "2",
        "--val_interval", "2"]


def test_normalize_intensity_modes():
    rng = np.random.default_rng(0)
    x = (rng.random((6, 5, 4)) * 7 + 3).astype(np.float32)
    assert normalize_intensity(x, "none") is x
    z = normalize_intensity(x, "zscore")
    assert z.dtype == np.float32 and z.shape == x.shape
    assert abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, abs=1e-5)
    # an affine change of the scan's intensities does not change the result
    np.testing.assert_allclose(normalize_intensity(x * 4 - 9, "zscore"), z, atol=1e-5)
    assert not normalize_intensity(np.full((2, 2, 2), 5, np.float32), "zscore").any()
    with pytest.raises(ValueError, match="unknown intensity mode"):
        normalize_intensity(x, "minmax")


def _scaled_copy(src: Path, dst: Path, scale: float, shift: float) -> Path:
    """The phantom set with every image mapped to ``image * scale + shift``."""
    shutil.copytree(src, dst)
    for f in dst.rglob("*.h5"):
        with h5py.File(f, "r+") as h:
            h["image"][...] = h["image"][()] * scale + shift
    return dst


def test_case_store_applies_the_mode(phantom_root, tmp_path):
    with pytest.raises(ConfigError, match="intensity 'bad'"):
        CaseStore(phantom_root, intensity="bad")
    scaled = _scaled_copy(phantom_root, tmp_path / "scaled", 3.0, 2.0)
    case_id = CaseStore(phantom_root).split("train")[0]
    raw = CaseStore(phantom_root).get(case_id).image
    assert not np.allclose(CaseStore(scaled).get(case_id).image, raw)
    a = CaseStore(phantom_root, intensity="zscore").get(case_id).image
    b = CaseStore(scaled, intensity="zscore").get(case_id, with_label=False).image
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert abs(float(a.mean())) < 1e-4


def test_training_records_it_and_test_applies_it(phantom_root, tmp_path):
    argv = ["--root_path", str(phantom_root), "--out_root", str(tmp_path), "--exp", "z",
            *TINY, "--max_iteration", "2", "--intensity", "zscore"]
    trainer = Trainer(parse_config(argv))
    assert trainer.store.intensity == "zscore"
    trainer.run()
    run = tmp_path / "z"
    assert json.loads((run / "config.json").read_text())["intensity"] == "zscore"
    assert load_checkpoint(run / "last.pth")["config"]["intensity"] == "zscore"

    # resuming with another normalisation is refused before anything is written
    with pytest.raises(ConfigError, match="intensity"):
        Trainer(parse_config(argv[:-1] + ["none", "--resume"]))

    spec = importlib.util.spec_from_file_location("_script_test_int", CODE / "test.py")
    test_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_script)
    scaled = _scaled_copy(phantom_root, tmp_path / "scaled", 5.0, -1.0)
    summaries = []
    for root in (phantom_root, scaled):
        out = tmp_path / f"test_{root.name}"
        rc = test_script.main(["--root_path", str(root), "--split", "test", "--checkpoint",
                               str(run / "last.pth"), "--overlap", "0.5", "--out_dir", str(out),
                               "--device", "cpu", "--no_progress"])
        assert rc in (0, 1)  # 1 only when a case failed, checked below
        summaries.append(json.loads((out / "summary.json").read_text()))
    for s in summaries:
        assert s["settings"]["intensity"] == "zscore" and not s["failed"]
    # the checkpoint's z-score makes the scores blind to the scan's intensity scale
    for a, b in zip(summaries[0]["cases"], summaries[1]["cases"]):
        assert a["dice"] == pytest.approx(b["dice"], abs=1e-6)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_intensity_stats_tool(phantom_root, tmp_path, capsys):
    tool = _load(CODE / "utils" / "intensity_stats.py", "_intensity_stats")
    image = np.zeros((4, 4, 4), np.float32)
    label = np.zeros((4, 4, 4), np.uint8)
    image[:2], label[:2] = 2.0, 1
    s = tool.case_stats(image, label)
    assert s["mean"] == pytest.approx(1.0) and s["std"] == pytest.approx(1.0)
    assert s["fg_mean"] == 2.0 and s["bg_mean"] == 0.0 and s["contrast"] == pytest.approx(2.0)
    assert np.isnan(tool.case_stats(image, np.zeros_like(label))["fg_mean"])
    assert tool.flag_outliers([1.0, 1.1, 0.9, 0.3, 2.5]) == [False, False, False, True, True]

    # a scan with a tenth of the others' spread is flagged
    dim = _scaled_copy(phantom_root, tmp_path / "dim", 1.0, 0.0)
    first = sorted(dim.rglob("*.h5"))[0]
    with h5py.File(first, "r+") as h:
        h["image"][...] = h["image"][()] * 0.1
    out = tmp_path / "stats.json"
    assert tool.main(["--root_path", str(dim), "--split", "train", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    flagged = [r["case"] for r in rows if r["outlier"]]
    assert flagged == [first.parent.name if first.name == "mri_norm2.h5" else first.stem]
    assert "1 flagged" in capsys.readouterr().out
