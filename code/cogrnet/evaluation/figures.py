"""One picture per case: three orthogonal slices with label and prediction contours."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..plotting import draw_slice, figure, label_centre, save_figure


def save_case_png(image: np.ndarray, label: np.ndarray, pred: np.ndarray, path: str | Path,
                  title: str = "") -> Path:
    """Save the slices through the label's centre on each axis of ``(X, Y, Z)`` volumes:
    the image in grey, the label contour in green, the prediction contour in red."""
    centre = label_centre(label)
    fig, axes = figure(3)
    for axis, ax in enumerate(axes):
        draw_slice(ax, image, axis, centre[axis], ((label, "lime"), (pred, "red")))
    return save_figure(fig, path, f"{title}  label: green, prediction: red")
