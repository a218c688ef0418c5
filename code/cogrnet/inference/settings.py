"""What a checkpoint's config says about inference: its dataset preset, its sliding-window
strides, and the preprocessing that turns a raw scan into what the network saw in training.
``test.py`` and ``predict.py`` both read them here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import DatasetPreset, dataset_for_root, get_preset
from ..data.dataset import normalize_intensity


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
                      preset_given: bool = False) -> tuple[int, int, int]:
    """Sliding-window strides ``(X, Y, Z)`` in voxels: the flags when given, else the
    strides the checkpoint records (``custom`` models: made from their data), else the
    preset's; a preset named on the command line (``preset_given``) wins over the
    checkpoint's record."""
    recorded = (config or {}).get("strides")
    if recorded is not None and not preset_given:
        rxy, rz = int(recorded[0]), int(recorded[2])
    else:
        rxy, rz = preset.stride_xy, preset.stride_z
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
