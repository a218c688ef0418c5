"""Issue 31: a newcomer's first hour. A root made by import_dataset.py says it is a custom
dataset by itself; messages say what is true (the patch's source, the strides, the units,
the preprocessing, every prediction name looked for); a failed predict.py leaves no empty
output folder; scripts with a progress bar take --no_progress."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cogrnet.errors import run_cli
from cogrnet.evaluation import evaluate_split, format_table
from cogrnet.training.config import parse_config
from test_own_data import imported, scans  # noqa: F401  (module fixtures)
from test_predict import checkpoint, predict_script  # noqa: F401  (module fixtures)

sitk = pytest.importorskip("SimpleITK")


def test_an_imported_root_is_a_custom_dataset_without_saying_so(imported):  # noqa: F811
    cfg = parse_config(["--root_path", str(imported), "--method", "sup"])
    assert cfg.dataset == "custom" and cfg.labelnum == 3  # labelnum from import.json
    # an explicit --dataset still wins
    assert parse_config(["--root_path", str(imported), "--dataset", "la",
                         "--labelnum", "3"]).dataset == "la"


def test_a_given_patch_is_said_as_given_and_the_strides_follow_it(imported):  # noqa: F811
    cfg = parse_config(["--root_path", str(imported), "--patch_size", "32", "32", "16"])
    assert cfg.patch_source == "given by --patch_size"
    assert cfg.strides == [16, 16, 8]  # half the patch, as the README says
    made = parse_config(["--root_path", str(imported)])
    assert made.patch_source.startswith("LA's 112x112x80 shrunk to the median volume shape")


def test_test_py_on_an_imported_root_names_every_prediction_it_looked_for(imported, tmp_path):  # noqa: F811
    preds = tmp_path / "pred"
    preds.mkdir()
    result = evaluate_split(imported, "test", pred_dir=str(preds), progress=False)
    assert result.summary["settings"]["dataset"] == "custom"
    errors = [r["error"] for r in result.rows]
    assert len(errors) == 2
    assert ("prediction file for case 'scan05' not found (looked for scan05.nii.gz (test.py "
            "--save_nifti) or scan05_mask.nii.gz (predict.py))") in errors[0]


def test_the_table_says_its_units():
    rows = [{"case": "a", "dice": 0.9, "jaccard": 0.8, "hd95": 1.0, "asd": 0.5}]
    assert "hd95/asd in voxels" in format_table(rows)


def test_failed_predict_leaves_no_empty_output_folder(predict_script, checkpoint,  # noqa: F811
                                                      tmp_path, capsys):
    out = tmp_path / "new" / "pred"
    bad_ckpt = tmp_path / "nothing.pth"
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((12, 20, 28), np.float32)), str(scan))
    rc = run_cli(predict_script.main, ["--checkpoint", str(bad_ckpt), "--input", str(scan),
                                       "--out_dir", str(out), "--device", "cpu"])
    assert rc == 2 and not (tmp_path / "new").exists()
    # a scan that fails after the folder was made: the folder goes again
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.nii.gz").write_bytes(b"not an image")
    rc = run_cli(predict_script.main, ["--checkpoint", str(checkpoint), "--input",
                                       str(broken), "--out_dir", str(out), "--device", "cpu"])
    assert rc == 2 and not (tmp_path / "new").exists()
    err = capsys.readouterr().err  # the progress bar also writes there
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 2
    # the same command on a good scan writes and says where
    rc = run_cli(predict_script.main, ["--checkpoint", str(checkpoint), "--input", str(scan),
                                       "--out_dir", str(out), "--device", "cpu",
                                       "--no_progress"])
    assert rc == 0 and (out / "scan_mask.nii.gz").is_file()
    assert f"wrote 1 mask(s) -> {out}" in capsys.readouterr().out


def test_preprocessing_is_said_in_words():
    from cogrnet.presets import get_preset
    from cogrnet.inference.settings import scan_preprocessing

    text = scan_preprocessing({"intensity": "zscore"}, get_preset("custom")).describe()
    assert text == ("intensity as the dataset files were stored: none; then as training "
                    "loaded them: z-score over the volume")


def test_a_run_that_cannot_start_leaves_no_run_folder(imported, tmp_path):  # noqa: F811
    from cogrnet.errors import ConfigError, DataError
    from cogrnet.training.trainer import Trainer

    coarse = tmp_path / "coarse"
    coarse.mkdir()
    base = ["--root_path", str(imported), "--out_root", str(tmp_path / "runs"), "--exp", "r",
            "--coarse_dir", str(coarse), "--labelnum", "3", "--device", "cpu"]
    # coarse labels made for fewer cases than --labelnum: one line, no folder
    with pytest.raises(DataError, match="coarse label file not found: 3 of the 3 labeled"):
        Trainer(parse_config(base))
    assert not (tmp_path / "runs" / "r").exists()
    # a wrong root: no empty log.txt left
    cfg = parse_config(base[:1] + [str(tmp_path / "nowhere"), "--dataset", "la"] + base[2:])
    with pytest.raises((ConfigError, DataError), match="nowhere"):
        Trainer(cfg)
    assert not (tmp_path / "runs" / "r").exists()
