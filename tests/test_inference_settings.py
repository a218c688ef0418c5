"""The inference flags and the settings they resolve to against a checkpoint's config."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from cogrnet.presets import get_preset
from cogrnet.errors import ConfigError, DataError
from cogrnet.inference import InferenceFlags, InferenceSettings, strides_from_overlap

CPU = torch.device("cpu")
CODE = Path(__file__).resolve().parents[1] / "code"


def _ckpt(**config) -> dict:
    return {"config": {"network": {}, "patch_size": [32, 32, 16], **config}}


@pytest.mark.parametrize("build", [
    lambda: InferenceFlags(overlap=1.5),
    lambda: InferenceSettings((32, 32, 16), overlap=1.5),
    lambda: strides_from_overlap((32, 32, 16), 1.5),
])
def test_a_bad_overlap_is_refused_in_one_line(build):
    with pytest.raises(ConfigError) as err:
        build()
    assert str(err.value) == "--overlap 1.5: must be in [0, 1)"


@pytest.mark.parametrize("kwargs,message", [
    ({"sw_batch_size": 0}, "--sw_batch_size 0: must be >= 1"),
    ({"stride_xy": 0}, "--stride_xy 0: must be >= 1"),
    ({"stride_z": -2}, "--stride_z -2: must be >= 1"),
    ({"mode": "median"}, "--mode median: choose from constant, gaussian"),
])
def test_bad_flags_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ConfigError) as err:
        InferenceFlags(**kwargs)
    assert str(err.value) == message


def test_settings_are_frozen_and_checked():
    settings = InferenceSettings([32, 32, 16], [8, 8, 4])
    assert settings.patch == (32, 32, 16) and settings.strides == (8, 8, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.mode = "gaussian"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="need 3 values >= 1"):
        InferenceSettings((32, 32, 16), (8, 0, 4))
    with pytest.raises(ConfigError, match="need three sizes >= 1"):
        InferenceSettings((32, 32))


def test_defaults_from_a_checkpoint_config():
    phantom = get_preset("phantom")
    flags = InferenceFlags()
    # the strides the checkpoint records, its patch, AMP off on the CPU, the flags' defaults
    s = InferenceSettings.from_checkpoint(_ckpt(strides=[10, 10, 6]), "best.pth", flags,
                                          phantom, False, CPU)
    assert (s.patch, s.strides, s.overlap) == ((32, 32, 16), (10, 10, 6), None)
    assert (s.mode, s.sw_batch_size, s.keep_largest, s.device, s.amp) == (
        "constant", 4, True, CPU, False)
    assert s.record() == {"patch_size": [32, 32, 16], "strides": [10, 10, 6], "overlap": None,
                          "protocol": "paper (strides)", "mode": "constant",
                          "sw_batch_size": 4, "nms": True, "device": "cpu", "amp": False}
    # no record: the preset's strides; a preset named on the command line wins over it
    assert InferenceSettings.from_checkpoint(_ckpt(), "b.pth", flags, phantom, False,
                                             CPU).strides == (16, 16, 8)
    assert InferenceSettings.from_checkpoint(_ckpt(strides=[10, 10, 6]), "b.pth", flags,
                                             phantom, True, CPU).strides == (16, 16, 8)
    # the flags win; an overlap replaces the strides
    given = InferenceFlags(stride_xy=5, amp=True, keep_largest=False, mode="gaussian")
    s = InferenceSettings.from_checkpoint(_ckpt(strides=[10, 10, 6]), "b.pth", given,
                                          phantom, False, CPU)
    assert (s.strides, s.amp, s.keep_largest, s.mode) == ((5, 5, 6), True, False, "gaussian")
    s = InferenceSettings.from_checkpoint(_ckpt(), "b.pth", InferenceFlags(overlap=0.5),
                                          phantom, False, CPU)
    assert s.strides is None and s.window_strides() == (16, 16, 8)
    assert s.record()["protocol"] == "fast (overlap)"


def test_a_custom_model_keeps_its_strides_when_custom_is_named():
    """``custom``'s preset strides are for LA's patch (56, 56, 40): a custom model keeps the
    half-patch strides it records even with ``--dataset custom``; a preset's strides wider
    than the model's patch (they would leave voxels between windows unpredicted) are cut to
    it; such strides given as flags are refused in one line."""
    record = _ckpt(strides=[16, 16, 8])
    for named in (False, True):
        assert InferenceSettings.from_checkpoint(record, "b.pth", InferenceFlags(),
                                                 get_preset("custom"), named,
                                                 CPU).strides == (16, 16, 8)
    assert InferenceSettings.from_checkpoint(_ckpt(), "b.pth", InferenceFlags(),
                                             get_preset("custom"), True,
                                             CPU).strides == (32, 32, 16)
    assert InferenceSettings.from_checkpoint(  # la's recorded 18/18/4 on a 16-voxel patch
        _ckpt(strides=[18, 18, 4], patch_size=[16, 16, 16]), "b.pth", InferenceFlags(),
        get_preset("la"), False, CPU).strides == (16, 16, 4)
    with pytest.raises(ConfigError, match=r"strides \[40, 40, 8\] are larger than the "
                                          r"window \[32, 32, 16\]"):
        InferenceSettings.from_checkpoint(_ckpt(), "b.pth", InferenceFlags(stride_xy=40),
                                          get_preset("phantom"), False, CPU)


def test_a_bad_checkpoint_patch_names_the_file():
    with pytest.raises(DataError, match="b.pth: config patch_size"):
        InferenceSettings.from_checkpoint(_ckpt(patch_size=[32, 32]), "b.pth",
                                          InferenceFlags(), get_preset("la"), False, CPU)


@pytest.mark.parametrize("script", ["test", "predict"])
def test_flags_from_a_scripts_arguments(script):
    spec = importlib.util.spec_from_file_location(f"_script_{script}", CODE / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    need = ["--checkpoint", "c.pth"] + (["--input", "x", "--out", "o"] if script == "predict"
                                         else [])
    assert InferenceFlags.from_args(mod.build_parser().parse_args(need)) == InferenceFlags()
    args = mod.build_parser().parse_args(need + ["--ema", "--overlap", "0.25", "--nms", "0",
                                                 "--sw_batch_size", "2", "--device", "cpu"])
    assert InferenceFlags.from_args(args) == InferenceFlags(
        ema=True, overlap=0.25, keep_largest=False, sw_batch_size=2, device="cpu")
