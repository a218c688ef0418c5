"""Image-driven refinement of the fused coarse label near its boundary.

``intensity``: learn the object's and the background's intensity histograms from the two
annotated slices (the voxels near the fused boundary, where the two classes meet), and let
the log-likelihood ratio of each voxel's intensity (a Gaussian-smoothed map of it) move
the fused boundary. Per voxel, with ``s`` the fusion score (signed distance in voxels, positive
inside) and ``d`` the slice distance to the nearer annotated slice::

    posterior = s / (sigma + sigma_per_slice * d) + LLR(intensity)

and the voxel is foreground where ``posterior > 0``, but only inside the band
``|s| <= band + band_per_slice * d``; further away the fused label is kept. The geometry
is trusted most next to the annotated slices, the image more far from them. Both annotated
slices stay exact.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from .dpa import DPA, slices_mask
from .fuse import FusionParams, fusion_score, label_from_score
from .quality import slice_distance

#: the coarse-label refinements (registration.py --refine)
REFINEMENTS = ("none", "intensity")


@dataclass(frozen=True)
class RefineParams:
    """Settings of the ``intensity`` refinement (module docstring); ``score``: the fusion
    score in voxels."""

    method: str = "none"  # none or intensity
    # chosen on the first 40 IDs of LA's train.list at full resolution (docs/REGISTRATION.md)
    sigma: float = 0.5  # voxels of score weighing as much as one nat of intensity evidence
    sigma_per_slice: float = 0.15  # added to sigma per slice of distance from the annotation
    band: float = 3.0  # how far (voxels of score) from the fused boundary a voxel may change
    band_per_slice: float = 0.45  # added to band per slice of distance
    smooth: float = 2.0  # Gaussian sigma of the LLR map: mm (voxels without spacing, LA h5)
    # not tuned
    bins: int = 40  # intensity histogram bins
    sample: float = 8.0  # annotated-slice voxels with |score| <= sample train the histograms

    def __post_init__(self) -> None:
        if self.method not in REFINEMENTS:
            raise ConfigError(f"--refine {self.method}: unknown (choose from "
                              f"{', '.join(REFINEMENTS)})")
        for name in ("sigma", "sample"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"refinement {name} must be > 0, got {getattr(self, name)}")
        for name in ("sigma_per_slice", "band", "band_per_slice", "smooth"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"refinement {name} must be >= 0, got {getattr(self, name)}")
        if self.bins < 2:
            raise ConfigError(f"refinement bins must be >= 2, got {self.bins}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_refine(refine: RefineParams, fusion: FusionParams) -> None:
    """A refinement needs the ``sdf`` fusion's score: a one-line error otherwise."""
    if refine.method != "none" and fusion.method != "sdf":
        raise ConfigError(f"--refine {refine.method} refines the sdf fusion, not "
                          f"--fusion {fusion.method}")


def intensity_llr(image: np.ndarray, fg: np.ndarray, bg: np.ndarray,
                  bins: int) -> np.ndarray | None:
    """``log p(I | object) - log p(I | background)`` per voxel of ``image`` (float32, same
    shape), from histograms of the intensities ``fg`` and ``bg`` (1D samples; +1 per bin
    keeps empty bins finite) over the image's 0.5-99.5 percentile range. ``None`` when a
    sample is empty or the image is constant."""
    if fg.size == 0 or bg.size == 0:
        return None
    lo, hi = np.percentile(image, [0.5, 99.5])
    if not hi > lo:
        return None
    edges = np.linspace(lo, hi, bins + 1)
    h_fg = np.histogram(fg, edges)[0] + 1.0
    h_bg = np.histogram(bg, edges)[0] + 1.0
    table = np.log(h_fg / h_fg.sum()) - np.log(h_bg / h_bg.sum())
    return table[np.clip(np.digitize(image, edges) - 1, 0, bins - 1)].astype(np.float32)


def refine_label(image: np.ndarray, label_a: np.ndarray, label_b: np.ndarray, dpa: DPA,
                 fusion: FusionParams | None = None, params: RefineParams | None = None,
                 spacing: Sequence[float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """The ``intensity`` refinement of the ``sdf`` fusion of ``label_a``/``label_b`` over
    ``image`` (all ``(X, Y, Z)``; ``spacing``: mm per voxel along X, Y, Z, default 1).
    Returns ``(label uint8, weight float32)`` like
    :func:`~cogrnet.annotation.fuse.fuse_planes`, or ``None`` when the annotated slices hold
    no object or no background to learn from, or the image is constant (the caller keeps
    the fused label). The weight is the confidence of the posterior in voxels of score."""
    fusion = fusion or FusionParams()
    return refine_score(image, fusion_score(label_a, label_b, dpa, fusion), dpa, params,
                        spacing, fusion.tau)


def refine_score(image: np.ndarray, score: np.ndarray, dpa: DPA,
                 params: RefineParams | None = None, spacing: Sequence[float] | None = None,
                 tau: float = FusionParams.tau) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`refine_label` from the fusion's score (:func:`~cogrnet.annotation.fuse.fusion_score`,
    ``(X, Y, Z)`` voxels), for a caller that also needs the unrefined label of that score;
    ``tau``: the fusion's confidence scale."""
    params = params or RefineParams(method="intensity")
    shape = score.shape
    truth = dpa.sparse.astype(bool)
    near = slices_mask(shape, dpa.axes, dpa.indices) & (np.abs(score) <= params.sample)
    img = image.astype(np.float32, copy=False)
    llr = intensity_llr(img, img[near & truth], img[near & ~truth], params.bins)
    if llr is None:
        return None
    if params.smooth > 0:
        mm = np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64)
        llr = ndimage.gaussian_filter(llr, tuple(params.smooth / mm))
    d = np.minimum(slice_distance(shape, dpa.axes[0], dpa.indices[0]),
                   slice_distance(shape, dpa.axes[1], dpa.indices[1])).astype(np.float32)
    sigma = params.sigma + params.sigma_per_slice * d
    band = np.abs(score) <= params.band + params.band_per_slice * d
    posterior = np.where(band, score + sigma * llr, score)  # in voxels of score
    return label_from_score(posterior, dpa, tau)
