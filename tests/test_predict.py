"""code/predict.py on generated NIfTI/MHA files: geometry kept, axes right."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from cogrnet.errors import run_cli
from cogrnet.networks import build_network, network_config
from cogrnet.checkpoints import atomic_torch_save, make_checkpoint

sitk = pytest.importorskip("SimpleITK")
CODE = Path(__file__).resolve().parents[1] / "code"


@pytest.fixture(scope="module")
def predict_script():
    spec = importlib.util.spec_from_file_location("_script_predict", CODE / "predict.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    net_cfg = network_config(n_filters=4)
    path = tmp_path_factory.mktemp("ckpt") / "best.pth"
    atomic_torch_save(make_checkpoint(build_network(net_cfg).state_dict(),
                                      {"network": net_cfg, "patch_size": [16, 16, 16]}, 1,
                                      "self"), path)
    return path


def _write_image(path: Path) -> tuple[np.ndarray, "sitk.Image"]:
    """A (Z, Y, X) = (12, 20, 28) image with a bright box off-centre, odd geometry."""
    arr = np.zeros((12, 20, 28), np.float32)
    arr[2:6, 3:9, 15:25] = 10.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.9, 2.5))
    img.SetOrigin((-10.0, 4.0, 33.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(path))
    return arr, img


class Threshold(torch.nn.Module):
    def forward(self, x):
        fg = 20.0 * (x - 1.0)
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


@pytest.mark.parametrize("ext", [".nii.gz", ".mha", ".nrrd"])
def test_predict_keeps_geometry_and_axes(predict_script, checkpoint, tmp_path, monkeypatch,
                                         ext):
    import cogrnet.inference.segment as ev

    arr, img = _write_image(tmp_path / f"scan{ext}")
    real_load = ev.load_model

    def fake_load(path, ema=False, device="cpu"):
        _, ckpt = real_load(path, ema, device)
        return Threshold(), ckpt

    monkeypatch.setattr(ev, "load_model", fake_load)
    out = tmp_path / "mask.nii.gz"
    rc = predict_script.main(["--checkpoint", str(checkpoint), "--input",
                              str(tmp_path / f"scan{ext}"), "--output", str(out),
                              "--device", "cpu", "--overlap", "0.5"])
    assert rc == 0
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == img.GetSize()
    assert np.allclose(mask.GetSpacing(), img.GetSpacing())
    assert np.allclose(mask.GetOrigin(), img.GetOrigin())
    assert np.allclose(mask.GetDirection(), img.GetDirection())
    got = sitk.GetArrayFromImage(mask)
    assert got.dtype == np.uint8
    assert np.array_equal(got, (arr > 0).astype(np.uint8))


def test_predict_real_network_and_folder_output(predict_script, checkpoint, tmp_path):
    _write_image(tmp_path / "a.nii.gz")
    _write_image(tmp_path / "b.mha")
    rc = predict_script.main(["--checkpoint", str(checkpoint), "--input",
                              str(tmp_path / "a.nii.gz"), str(tmp_path / "b.mha"),
                              "--output", str(tmp_path / "masks"), "--device", "cpu",
                              "--stride_xy", "8", "--stride_z", "8", "--nms", "0"])
    assert rc == 0
    for name in ("a_mask.nii.gz", "b_mask.nii.gz"):
        m = sitk.ReadImage(str(tmp_path / "masks" / name))
        assert m.GetSize() == (28, 20, 12)


def test_predict_errors(predict_script, checkpoint, tmp_path, capsys):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.float32)),
                    str(tmp_path / "flat.nii.gz"))
    for inp, msg in (("flat.nii.gz", "image must be 3D"), ("none.nii.gz", "not found")):
        rc = run_cli(predict_script.main, ["--checkpoint", str(checkpoint), "--input",
                                           str(tmp_path / inp), "--output",
                                           str(tmp_path / "o.nii.gz"), "--device", "cpu"])
        assert rc == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err
