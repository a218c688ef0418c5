"""code/test.py end to end on phantoms, --pred_dir, failures, and evaluate_model."""
from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cogrnet.data.dataset import CaseStore
from cogrnet.errors import run_cli
from cogrnet.evaluation import evaluate_model
from cogrnet.inference import InferenceSettings
from cogrnet.networks import build_network, network_config
from cogrnet.checkpoints import atomic_torch_save, make_checkpoint

CODE = Path(__file__).resolve().parents[1] / "code"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", CODE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def test_script():
    return _load_script("test")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net_cfg = network_config(n_filters=4)
    net = build_network(net_cfg)
    config = {"network": net_cfg, "patch_size": [32, 32, 16], "dataset": "phantom"}
    path = tmp_path_factory.mktemp("ckpt") / "exp" / "best.pth"
    # a teacher unlike the student: its head says background everywhere, so `--ema` has a
    # known answer (an empty prediction) that the student's weights do not give
    teacher = {k: v.clone() for k, v in net.state_dict().items()}
    teacher["head.weight"].zero_()
    teacher["head.bias"].copy_(torch.tensor([10.0, -10.0]))
    atomic_torch_save(make_checkpoint(net.state_dict(), config, 10, "self",
                                      ema_state=teacher), path)
    return path


def test_end_to_end_on_phantoms(test_script, phantom_root, checkpoint, tmp_path):
    out = tmp_path / "out"
    rc = test_script.main(["--dataset", "phantom", "--root_path", str(phantom_root),
                           "--split", "test", "--checkpoint", str(checkpoint),
                           "--overlap", "0.5", "--out_dir", str(out), "--save_nifti",
                           "--save_png", "--device", "cpu", "--no_progress", "--ema",
                           "--spacing", "1", "1", "2"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["mean"]) == {"dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm"}
    assert summary["n_cases"] == 2 and len(summary["cases"]) == 2
    assert summary["settings"]["patch_size"] == [32, 32, 16]
    assert summary["settings"]["weights"] == "ema" and summary["settings"]["overlap"] == 0.5
    # the teacher's weights were used: empty predictions (the student's are not empty)
    assert all(r["empty_prediction"] and r["dice"] == 0 for r in summary["cases"])
    rows = list(csv.DictReader(open(out / "per_case.csv")))
    assert [r["case"] for r in rows] == ["phantom_004", "phantom_005"]
    for cid in ("phantom_004", "phantom_005"):
        assert (out / "pred" / f"{cid}.nii.gz").is_file()
        assert (out / "png" / f"{cid}.png").stat().st_size > 1000

    # the saved predictions, evaluated with --pred_dir, give the same metrics
    out2 = tmp_path / "out2"
    rc = test_script.main(["--dataset", "phantom", "--root_path", str(phantom_root),
                           "--split", "test", "--pred_dir", str(out / "pred"),
                           "--out_dir", str(out2), "--no_progress", "--spacing", "1", "1", "2"])
    assert rc == 0
    again = json.loads((out2 / "summary.json").read_text())
    for a, b in zip(summary["cases"], again["cases"]):
        for k in ("dice", "jaccard", "hd95", "asd", "hd95_mm"):
            assert (a[k] is None and b[k] is None) or a[k] == pytest.approx(b[k], abs=1e-9)


def test_default_paper_strides_and_out_dir(test_script, phantom_root, checkpoint):
    rc = test_script.main(["--root_path", str(phantom_root), "--split", "test",
                           "--checkpoint", str(checkpoint), "--device", "cpu",
                           "--no_progress", "--nms", "0", "--mode", "gaussian",
                           "--sw_batch_size", "3"])
    assert rc == 0
    out = checkpoint.parent / "test_test"
    s = json.loads((out / "summary.json").read_text())["settings"]
    assert s["dataset"] == "phantom" and s["strides"] == [16, 16, 8]  # preset from the ckpt
    assert s["nms"] is False and s["mode"] == "gaussian"


def test_pred_dir_on_generated_files(test_script, phantom_root, tmp_path):
    from cogrnet.data.nifti import write_prediction

    store = CaseStore(phantom_root)
    a, b = store.split("test")
    label_a = store.get(a).label
    write_prediction(label_a, tmp_path / f"{a}.nii.gz")
    write_prediction(np.zeros_like(store.get(b).label), tmp_path / f"{b}.nii.gz")
    out = tmp_path / "eval"
    rc = test_script.main(["--dataset", "phantom", "--root_path", str(phantom_root),
                           "--split", "test", "--pred_dir", str(tmp_path), "--out_dir",
                           str(out), "--no_progress"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["cases"][0]["dice"] == 1.0 and s["cases"][0]["hd95"] == 0.0
    assert s["cases"][1]["dice"] == 0.0 and s["cases"][1]["hd95"] is None
    assert s["empty_predictions"] == 1 and s["mean"]["dice"] == pytest.approx(0.5)

    # a file in the reversed (Z, Y, X) order (an older --save_nifti wrote the array as
    # sitk's (k, j, i)) and a missing one: reported per case, exit status 1
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(label_a), str(tmp_path / f"{a}.nii.gz"))
    (tmp_path / f"{b}.nii.gz").unlink()
    rc = test_script.main(["--dataset", "phantom", "--root_path", str(phantom_root),
                           "--split", "test", "--pred_dir", str(tmp_path), "--out_dir",
                           str(out), "--no_progress"])
    assert rc == 1
    failed = json.loads((out / "summary.json").read_text())["failed"]
    assert "axes reversed" in failed[0]["error"] and "not found" in failed[1]["error"]


def test_bad_case_does_not_stop_the_others(test_script, phantom_root, checkpoint, tmp_path,
                                           capsys):
    root = tmp_path / "root"
    shutil.copytree(phantom_root, root)
    store = CaseStore(root)
    a, _ = store.split("test")
    store.path(a).write_bytes(b"not an h5 file")
    out = tmp_path / "out"
    rc = test_script.main(["--root_path", str(root), "--split", "test", "--checkpoint",
                           str(checkpoint), "--device", "cpu", "--overlap", "0.5",
                           "--no_progress", "--out_dir", str(out)])
    assert rc == 1
    s = json.loads((out / "summary.json").read_text())
    assert s["n_cases"] == 1 and s["failed"][0]["case"] == a
    assert "corrupt or unreadable" in capsys.readouterr().err


def test_cli_errors_are_one_line(test_script, phantom_root, checkpoint, tmp_path, capsys):
    net_cfg = network_config(n_filters=4)
    no_ema = tmp_path / "noema.pth"
    atomic_torch_save(make_checkpoint(build_network(net_cfg).state_dict(),
                                      {"network": net_cfg, "patch_size": [32, 32, 16]}, 1,
                                      "pre"), no_ema)
    base = ["--root_path", str(phantom_root), "--device", "cpu", "--no_progress"]
    cases = [(["--checkpoint", str(no_ema), "--ema"], "no EMA"),
             (["--checkpoint", str(tmp_path / "missing.pth")], "checkpoint not found"),
             ([], "exactly one of"),
             (["--checkpoint", str(checkpoint), "--overlap", "1.5"], "--overlap"),
             (["--checkpoint", str(checkpoint), "--split", "nosuch"], "no list file")]
    bad_patch = tmp_path / "badpatch.pth"
    atomic_torch_save(make_checkpoint(build_network(net_cfg).state_dict(),
                                      {"network": net_cfg, "patch_size": [32, 32]}, 1,
                                      "pre"), bad_patch)
    cases.append((["--checkpoint", str(bad_patch)], "badpatch.pth: config patch_size"))
    for extra, msg in cases:
        out = tmp_path / "out"
        assert run_cli(test_script.main, base + extra + ["--out_dir", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and msg in err and "\n" not in err
        assert not out.exists(), extra  # refused before the output folder is made


class Threshold(torch.nn.Module):
    """A 'model' that segments image > 0.5: logits (0, 20 * (x - 0.5))."""

    def forward(self, x):
        fg = 20.0 * (x - 0.5)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def test_evaluate_model_meaningful_metrics(tmp_path):
    from cogrnet.data.dataset import write_case_h5

    for i in range(2):
        label = np.zeros((30, 26, 20), np.uint8)
        label[5:20, 4:18, 3:15 - i] = 1
        label[25:27, 2:4, 2:4] = 1  # a small second component, removed by nms
        write_case_h5(tmp_path / f"c{i}.h5", label.astype(np.float32), label)
    (tmp_path / "val.list").write_text("c0\nc1\n")
    store = CaseStore(tmp_path)
    seen = []
    settings = InferenceSettings((16, 16, 16), (8, 8, 8), keep_largest=False,
                                 device=torch.device("cpu"))
    rows = evaluate_model(Threshold(), store, store.split("val"), settings, 2,
                          spacing=(1.0, 1.0, 2.0),
                          callback=lambda case, pred, prob: seen.append(pred.shape))
    assert [r["dice"] for r in rows] == [1.0, 1.0] and rows[0]["hd95_mm"] == 0.0
    assert seen == [(30, 26, 20)] * 2
    rows = evaluate_model(Threshold(), store, ["c0"],
                          InferenceSettings((16, 16, 16), (8, 8, 8), keep_largest=True), 2)
    assert rows[0]["dice"] < 1.0 and not rows[0]["empty_prediction"]
