"""Sliding-window inference over whole volumes, and the post-processing of its output.

Conventions: volumes are ``(X, Y, Z)``; tensors ``(N, C, X, Y, Z)``; patch sizes, strides
and window starts are in voxels. The window maths lives in small pure functions
(:func:`window_starts`, :func:`window_grid`, :func:`gaussian_importance_map`) so that it
can be tested on its own.

Protocol (UA-MT / BCP): zero-pad a volume smaller than the patch symmetrically, slide the
patch with the given strides (the last window on each axis is moved back to end at the
border), average the softmax of all windows covering a voxel (``constant`` mode: equal
weights; ``gaussian``: weights from an importance map that favours window centres), crop the
padding away, foreground = argmax (for two classes: foreground probability > 0.5).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from ..errors import ConfigError, DataError
from ..runtime import autocast

Predictor = Callable[[torch.Tensor], torch.Tensor]
MODES = ("constant", "gaussian")


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start indices of the windows along one axis of length ``size`` (>= ``patch``).

    ``ceil((size - patch) / stride) + 1`` windows at ``i * stride``, the last one clamped to
    ``size - patch`` so that the windows cover the axis exactly (the reference protocol); a
    ConfigError when a stride above the patch would leave voxels between two windows."""
    if patch < 1 or stride < 1:
        raise ConfigError(f"window: patch ({patch}) and stride ({stride}) must be >= 1")
    if size < patch:
        raise ConfigError(f"window: axis of length {size} is shorter than the patch {patch} "
                          "(pad it first)")
    n = math.ceil((size - patch) / stride) + 1
    starts = sorted({min(i * stride, size - patch) for i in range(n)})
    if any(b - a > patch for a, b in zip(starts, starts[1:])):
        raise ConfigError(f"window: stride {stride} is larger than the patch {patch}: the "
                          "voxels between two windows would get no prediction")
    return starts


def window_grid(shape: Sequence[int], patch: Sequence[int],
                strides: Sequence[int]) -> list[tuple[int, ...]]:
    """All window start corners ``(x0, y0, z0)`` over a volume of ``shape``, in C order."""
    axes = [window_starts(s, p, st) for s, p, st in zip(shape, patch, strides)]
    return list(itertools.product(*axes))


def check_overlap(overlap: float) -> None:
    """A window overlap is a fraction in [0, 1): a one-line :class:`ConfigError` otherwise."""
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap {overlap}: must be in [0, 1)")


def check_sw_batch_size(sw_batch_size: int) -> None:
    """At least one window per forward pass: a one-line :class:`ConfigError` otherwise."""
    if sw_batch_size < 1:
        raise ConfigError(f"--sw_batch_size {sw_batch_size}: must be >= 1")


def check_mode(mode: str) -> None:
    """A window weighting of :data:`MODES`: a one-line :class:`ConfigError` otherwise."""
    if mode not in MODES:
        raise ConfigError(f"--mode {mode}: choose from {', '.join(MODES)}")


def checked_roi(roi_size: Sequence[int]) -> tuple[int, ...]:
    """The window ``roi_size`` as three ints >= 1 (a :class:`ConfigError` otherwise)."""
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != 3 or min(roi) < 1:
        raise ConfigError(f"roi_size {list(roi_size)}: need three sizes >= 1")
    return roi


def strides_from_overlap(patch: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Strides for a fractional ``overlap`` in [0, 1): ``max(1, int(p * (1 - overlap)))``."""
    check_overlap(overlap)
    return tuple(max(1, int(p * (1.0 - overlap))) for p in patch)


def gaussian_importance_map(patch: Sequence[int], sigma_scale: float = 1.0 / 8,
                            min_value: float = 1e-6) -> np.ndarray:
    """Window weights ``(px, py, pz)`` float32: a separable Gaussian centred on the patch
    centre ``(p - 1) / 2`` with ``sigma = sigma_scale * p`` per axis (nnU-Net / MONAI's
    sigma = patch / 8), scaled to a maximum of 1 and floored at ``min_value`` so that every
    voxel of every window keeps a positive weight."""
    if sigma_scale <= 0:
        raise ConfigError(f"gaussian_importance_map: sigma_scale {sigma_scale} must be > 0")
    weights = np.ones((), dtype=np.float64)
    for p in patch:
        x = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
        g = np.exp(-0.5 * (x / (sigma_scale * p)) ** 2)
        weights = np.multiply.outer(weights, g)
    weights /= weights.max()
    return np.maximum(weights, min_value).astype(np.float32)


def pad_to_patch(volume: torch.Tensor, patch: Sequence[int]
                 ) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the last three axes of ``volume`` ``(..., X, Y, Z)`` symmetrically up to
    ``patch`` where they are smaller; return the padded tensor and the slices of the last
    three axes that crop the original back."""
    shape = volume.shape[-3:]
    before = [max(p - s, 0) // 2 for s, p in zip(shape, patch)]
    after = [max(p - s, 0) - b for s, p, b in zip(shape, patch, before)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, shape))
    if not any(before) and not any(after):
        return volume, crop
    pad: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):  # F.pad wants the last axis first
        pad += [b, a]
    return torch.nn.functional.pad(volume, pad, mode="constant", value=0.0), crop


def resolve_strides(roi_size: Sequence[int], overlap: float | None,
                    strides: Sequence[int] | None) -> tuple[int, ...]:
    """The strides in voxels the windows of ``roi_size`` are slid by: those of ``overlap``
    when given, else ``strides`` (one per axis, each in [1, the window's size]), else those
    of overlap 0.5."""
    if overlap is not None:
        return strides_from_overlap(roi_size, overlap)
    if strides is None:
        return strides_from_overlap(roi_size, 0.5)
    strides = tuple(int(s) for s in strides)
    if len(strides) != len(roi_size) or min(strides) < 1:
        raise ConfigError(f"strides {list(strides)}: need {len(roi_size)} values >= 1")
    if any(s > p for s, p in zip(strides, roi_size)):
        raise ConfigError(f"strides {list(strides)} are larger than the window "
                          f"{list(roi_size)}: the voxels between two windows would get no "
                          "prediction (give strides at most the patch, or --overlap)")
    return strides


def _window_probabilities(predictor: Predictor, batch: torch.Tensor, roi: tuple[int, ...],
                          amp: bool, apply_softmax: bool) -> torch.Tensor:
    """Float32 class probabilities ``(B, K, px, py, pz)`` of a batch of windows
    ``(B, C, px, py, pz)`` (the logits themselves unless ``apply_softmax``)."""
    with autocast(batch.device, amp):
        logits = predictor(batch)
    logits = logits.float()
    if logits.shape[0] != batch.shape[0] or tuple(logits.shape[2:]) != roi:
        raise DataError(f"predictor returned shape {tuple(logits.shape)} for windows "
                        f"{tuple(batch.shape)}")
    return torch.softmax(logits, dim=1) if apply_softmax else logits


def _blend_windows(volume: torch.Tensor, corners: list[tuple[int, ...]], roi: tuple[int, ...],
                   sw_batch_size: int, score_windows: Predictor,
                   weight: torch.Tensor | None) -> torch.Tensor:
    """The weighted mean ``(K, X, Y, Z)`` of ``score_windows`` over the windows of ``roi`` at
    ``corners`` of one volume ``(C, X, Y, Z)``, ``sw_batch_size`` windows at a time;
    ``weight`` ``roi``-shaped, or ``None`` for equal weights."""
    shape = volume.shape[1:]
    score = None
    count = torch.zeros(shape, dtype=torch.float32, device=volume.device)
    for i in range(0, len(corners), sw_batch_size):
        slices = [tuple(slice(c, c + r) for c, r in zip(corner, roi))
                  for corner in corners[i:i + sw_batch_size]]
        probs = score_windows(torch.stack([volume[(slice(None),) + s] for s in slices]))
        if score is None:
            score = torch.zeros((probs.shape[1], *shape), dtype=torch.float32,
                                device=volume.device)
        for k, s in enumerate(slices):
            if weight is None:
                score[(slice(None),) + s] += probs[k]
                count[s] += 1.0
            else:
                score[(slice(None),) + s] += probs[k] * weight
                count[s] += weight
    assert score is not None
    score /= count
    return score


@torch.no_grad()
def sliding_window_inference(inputs: torch.Tensor, roi_size: Sequence[int],
                             sw_batch_size: int, predictor: Predictor,
                             overlap: float | None = None,
                             strides: Sequence[int] | None = None,
                             mode: str = "constant", sigma_scale: float = 1.0 / 8,
                             amp: bool = False, apply_softmax: bool = True) -> torch.Tensor:
    """Averaged class probabilities of ``predictor`` over sliding windows.

    ``inputs``: ``(N, C, X, Y, Z)`` on the device ``predictor`` runs on. ``roi_size``: the
    patch ``(px, py, pz)``. Windows are taken ``sw_batch_size`` at a time (one forward pass
    per batch). Strides: ``strides`` in voxels, or ``overlap`` (a fraction, which wins
    when both are given), or overlap 0.5 when neither is. ``predictor`` maps
    ``(B, C, px, py, pz)`` to logits ``(B, K, px, py, pz)``; the softmax over K is applied
    unless ``apply_softmax`` is False. ``amp``: CUDA autocast. Returns float32
    ``(N, K, X, Y, Z)`` on the input's device; no autograd graph is built."""
    if inputs.ndim != 5:
        raise DataError(f"sliding_window_inference: inputs must be (N, C, X, Y, Z), "
                        f"got shape {tuple(inputs.shape)}")
    check_mode(mode)
    roi = checked_roi(roi_size)
    check_sw_batch_size(sw_batch_size)
    steps = resolve_strides(roi, overlap, strides)
    padded, crop = pad_to_patch(inputs, roi)
    corners = window_grid(padded.shape[2:], roi, steps)
    weight = None
    if mode == "gaussian":
        weight = torch.from_numpy(gaussian_importance_map(roi, sigma_scale)).to(padded.device)
    score_windows = functools.partial(_window_probabilities, predictor, roi=roi, amp=amp,
                                      apply_softmax=apply_softmax)
    return torch.stack([_blend_windows(volume, corners, roi, sw_batch_size, score_windows,
                                       weight)[(slice(None),) + crop] for volume in padded])


def predict_volume(model: torch.nn.Module, image: np.ndarray, patch: Sequence[int],
                   strides: Sequence[int] | None = None, overlap: float | None = None,
                   sw_batch_size: int = 1, mode: str = "constant",
                   device: torch.device | str = "cpu", amp: bool = False) -> np.ndarray:
    """Class probabilities ``(K, X, Y, Z)`` float32 of one image ``(X, Y, Z)``.

    Puts ``model`` in eval mode for the call (and restores its mode afterwards); the image
    travels to ``device``, where the windows are scored and averaged."""
    if image.ndim != 3:
        raise DataError(f"predict_volume: image must be (X, Y, Z), got shape {image.shape}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        prob = sliding_window_inference(x.to(device), patch, sw_batch_size, model,
                                        overlap=overlap, strides=strides, mode=mode, amp=amp)
    finally:
        model.train(was_training)
    return prob[0].cpu().numpy()


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a binary mask (BCP's ``getLargestCC``, which
    uses scikit-image's full connectivity); an empty mask is returned unchanged."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def postprocess(prob: np.ndarray, nms: bool = True) -> np.ndarray:
    """Class map ``(X, Y, Z)`` uint8 from probabilities ``(K, X, Y, Z)``: argmax, then (when
    ``nms``) each foreground class reduced to its largest connected component."""
    pred = np.argmax(prob, axis=0).astype(np.uint8)
    if nms:
        for c in range(1, prob.shape[0]):
            m = pred == c
            if m.any():
                keep = largest_component(m)
                pred[m & ~keep] = 0
    return pred
