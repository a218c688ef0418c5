"""A picture of one case's coarse label, to check the registration stage at a glance."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..evaluation.figures import draw_slice, figure, label_centre, save_figure
from .io import CoarseLabel


def save_coarse_png(image: np.ndarray, coarse: CoarseLabel, path: str | Path,
                    title: str = "", spacing: Sequence[float] | None = None) -> Path:
    """Save the two annotated slices and the third plane (through the coarse label's
    centre) of an ``(X, Y, Z)`` ``image``: the painted strokes outlined in green, the fused
    coarse label in red; ``spacing`` (mm along X, Y, Z) keeps the voxels' aspect."""
    third = next(a for a in range(3) if a not in coarse.axes)
    panels = [(coarse.axes[0], coarse.indices[0], ", plane A"),
              (coarse.axes[1], coarse.indices[1], ", plane B"),
              (third, label_centre(coarse.label)[third], "")]
    strokes = coarse.annotation if coarse.annotation is not None else np.zeros_like(coarse.label)
    fig, axes = figure(3)
    for ax, (axis, index, note) in zip(axes, panels):
        draw_slice(ax, image, axis, index, ((strokes, "lime"), (coarse.label, "red")), note,
                   spacing)
    return save_figure(fig, path, f"{title}  annotation: green, coarse label: red")
