"""What a checkpoint's config says about inference: its dataset preset, its sliding-window
strides, and the preprocessing that turns a raw scan into what the network saw in training;
and the inference flags (:class:`InferenceFlags`) resolved against a checkpoint into the
settings of its sliding-window inference (:class:`InferenceSettings`).
``test.py`` and ``predict.py`` both read them here."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.dataset import normalize_intensity
from ..errors import ConfigError
from ..presets import DatasetPreset, dataset_for_root, get_preset
from .model import checkpoint_patch
from .sliding_window import (check_mode, check_overlap, check_sw_batch_size, checked_roi,
                             resolve_strides)


def checkpoint_dataset(config: dict[str, Any]) -> str | None:
    """The dataset name a checkpoint's config records (``None`` when it records none)."""
    ds = config.get("dataset")
    return ds.get("name") if isinstance(ds, dict) else ds


def inference_preset(config: dict[str, Any] | None, dataset: str | None = None,
                     root_path: str | Path | None = None) -> DatasetPreset:
    """The preset for inference: ``dataset`` when given, else the checkpoint's, else
    ``custom`` for a root made by code/import_dataset.py, else LA's."""
    recorded = checkpoint_dataset(config) if config else None
    return get_preset(dataset_for_root(dataset or recorded, root_path, "la"))


def inference_strides(config: dict[str, Any] | None, preset: DatasetPreset,
                      stride_xy: int | None = None, stride_z: int | None = None,
                      preset_given: bool = False,
                      patch: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """Sliding-window strides ``(X, Y, Z)`` in voxels: the flags when given, else the
    strides the checkpoint records (``custom`` models: made from their data), else the
    preset's; a preset named on the command line (``preset_given``) wins over the
    checkpoint's record, except ``custom``, whose strides are made from each dataset's
    patch (its preset's are for LA's patch). The record and the preset's strides are for
    the preset's patch: with the model's ``patch`` given, they are cut to it (wider ones
    would leave voxels between windows without a prediction); flags are taken as given."""
    recorded = (config or {}).get("strides")
    if recorded is not None and (not preset_given or preset.name == "custom"):
        rxy, rz = int(recorded[0]), int(recorded[2])
    else:
        rxy, rz = preset.stride_xy, preset.stride_z
    if patch is not None:
        rxy, rz = min(rxy, patch[0], patch[1]), min(rz, patch[2])
    sxy = stride_xy if stride_xy is not None else rxy
    sz = stride_z if stride_z is not None else rz
    return sxy, sxy, sz


@dataclass(frozen=True)
class ScanPreprocessing:
    """Raw scan -> network input, in order: clip to ``window`` and scale to [0, 1] (the CT
    presets' Hounsfield window), normalise as the stored h5 images were (``stored``), then
    as the training loader did (``intensity``); see
    :func:`cogrnet.data.dataset.normalize_intensity`."""

    window: tuple[float, float] | None
    stored: str
    intensity: str

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``(X, Y, Z)`` scan -> float32 ``(X, Y, Z)`` network input."""
        image = image.astype(np.float32)
        if self.window is not None:
            from ..data.ct_transforms import window_unit

            image = window_unit(image, self.window).astype(np.float32)
        return normalize_intensity(normalize_intensity(image, self.stored), self.intensity)

    def describe(self) -> str:
        """One line for the console, in words: each step the scan goes through."""
        steps = [f"clip to the window {list(self.window)} and scale to [0, 1]"] if self.window else []
        words = {"zscore": "z-score over the volume", "none": "none"}
        steps.append(f"as the dataset files were stored: {words.get(self.stored, self.stored)}")
        steps.append(f"as training loaded them: {words.get(self.intensity, self.intensity)}")
        return "intensity " + "; then ".join(steps)


def scan_preprocessing(config: dict[str, Any], preset: DatasetPreset,
                       window: Sequence[float] | None = None,
                       stored: str | None = None) -> ScanPreprocessing:
    """The preprocessing a checkpoint's model expects of a raw scan: the CT window of the
    KiTS/LiTS presets (or ``window``), the preset's stored-image normalisation (or
    ``stored``), and the checkpoint's training ``intensity`` (``none`` for checkpoints that
    predate the setting)."""
    if window is None and preset.preprocess is not None:
        window = preset.preprocess.window_hu
    return ScanPreprocessing(tuple(float(w) for w in window) if window is not None else None,
                             stored or preset.stored_intensity,
                             str(config.get("intensity", "none")))


@dataclass(frozen=True)
class InferenceFlags:
    """The inference flags of ``test.py`` and ``predict.py`` as given (``None``: the
    checkpoint's or the default), checked on construction: ``ema`` (the teacher's weights),
    ``stride_xy``/``stride_z`` (voxels), ``overlap`` (a fraction in [0, 1), wins over the
    strides), ``mode``, ``sw_batch_size`` (windows per forward pass), ``keep_largest``,
    ``device`` (a name, ``auto`` included) and ``amp`` (``None``: on CUDA only)."""

    ema: bool = False
    stride_xy: int | None = None
    stride_z: int | None = None
    overlap: float | None = None
    mode: str = "constant"
    sw_batch_size: int = 4
    keep_largest: bool = True
    device: str = "auto"
    amp: bool | None = None

    def __post_init__(self) -> None:
        check_sw_batch_size(self.sw_batch_size)
        for name, value in (("stride_xy", self.stride_xy), ("stride_z", self.stride_z)):
            if value is not None and value < 1:
                raise ConfigError(f"--{name} {value}: must be >= 1")
        if self.overlap is not None:
            check_overlap(self.overlap)
        check_mode(self.mode)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> InferenceFlags:
        """The flags of a script's parsed arguments (the options of
        :func:`cogrnet.cli.add_sliding_window` and :func:`cogrnet.cli.add_run_switches`,
        and ``--ema``)."""
        return cls(ema=args.ema, stride_xy=args.stride_xy, stride_z=args.stride_z,
                   overlap=args.overlap, mode=args.mode, sw_batch_size=args.sw_batch_size,
                   keep_largest=bool(args.keep_largest), device=args.device, amp=args.amp)


@dataclass(frozen=True)
class InferenceSettings:
    """How whole volumes are segmented, checked on construction: windows of ``patch``
    ``(X, Y, Z)`` voxels slid by ``strides`` (voxels) or, when ``overlap`` (a fraction in
    [0, 1)) is given or neither is, by the strides of that overlap (0.5 when neither);
    ``mode`` weighting, ``sw_batch_size`` windows per forward pass, the largest component
    kept per class (``keep_largest``), on ``device``, with CUDA autocast when ``amp``."""

    patch: tuple[int, int, int]
    strides: tuple[int, int, int] | None = None
    overlap: float | None = None
    mode: str = "constant"
    sw_batch_size: int = 1
    keep_largest: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch", checked_roi(self.patch))
        if self.strides is not None:
            object.__setattr__(self, "strides", resolve_strides(self.patch, None, self.strides))
        check_sw_batch_size(self.sw_batch_size)
        if self.overlap is not None:
            check_overlap(self.overlap)
        check_mode(self.mode)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], path: str, flags: InferenceFlags,
                        preset: DatasetPreset, preset_given: bool,
                        device: torch.device) -> InferenceSettings:
        """The settings of ``flags`` for the checkpoint ``ckpt`` (read from ``path``): its
        training patch, the strides of :func:`inference_strides` unless ``flags.overlap``
        is given (``preset_given``: ``preset`` was named on the command line), and AMP on
        CUDA unless ``flags.amp`` says otherwise."""
        patch = checkpoint_patch(ckpt, path)
        strides = None if flags.overlap is not None else inference_strides(
            ckpt["config"], preset, flags.stride_xy, flags.stride_z, preset_given, patch)
        use_amp = (device.type == "cuda") if flags.amp is None else bool(flags.amp)
        return cls(patch, strides, flags.overlap, flags.mode, flags.sw_batch_size,
                   flags.keep_largest, device, use_amp)

    def window_strides(self) -> tuple[int, ...]:
        """The strides ``(X, Y, Z)`` in voxels the windows are slid by."""
        return resolve_strides(self.patch, self.overlap, self.strides)

    def record(self) -> dict[str, Any]:
        """The settings as a report records them (``summary.json``'s ``settings``)."""
        return {"patch_size": list(self.patch), "strides": list(self.window_strides()),
                "overlap": self.overlap,
                "protocol": "fast (overlap)" if self.strides is None else "paper (strides)",
                "mode": self.mode, "sw_batch_size": self.sw_batch_size,
                "nms": bool(self.keep_largest), "device": str(self.device), "amp": self.amp}
