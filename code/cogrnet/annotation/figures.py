"""A picture of one case's coarse label, to check the registration stage at a glance."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..plotting import draw_slice, figure, label_centre, save_figure
from .io import CoarseLabel


def save_coarse_png(image: np.ndarray, coarse: CoarseLabel, path: str | Path,
                    title: str = "", spacing: Sequence[float] | None = None) -> Path:
    """Save the two annotated slices and the third plane (through the coarse label's
    centre) of an ``(X, Y, Z)`` ``image``: the fused coarse label outlined in red, the
    painted strokes in green over it; ``spacing`` (mm along X, Y, Z) keeps the voxels' aspect."""
    third = next(a for a in range(3) if a not in coarse.axes)
    panels = [(coarse.axes[0], coarse.indices[0], ", plane A"),
              (coarse.axes[1], coarse.indices[1], ", plane B"),
              (third, label_centre(coarse.label)[third], "")]
    strokes = coarse.annotation if coarse.annotation is not None else np.zeros_like(coarse.label)
    fig, axes = figure(3)
    for ax, (axis, index, note) in zip(axes, panels):
        # the strokes last, over the coarse label: on planes A and B the two coincide
        draw_slice(ax, image, axis, index, ((coarse.label, "red"), (strokes, "lime")), note,
                   spacing)
    return save_figure(fig, path, f"{title}  coarse label: red; annotation: green, drawn over "
                                  "it (on planes A and B the coarse label is the annotation)")


def save_distance_png(pooled: dict, path: str | Path, title: str = "") -> Path:
    """Plot :func:`~cogrnet.annotation.quality.pool_quality`'s Dice per slice-distance bin:
    plane A and plane B against the distance from their own annotated slice, the fused label
    against the distance from the nearer one; the right panel gives the foreground voxels
    per bin (how much each bin weighs in the volume's Dice)."""
    from .quality import bin_labels

    dist = pooled["distance"]
    names = bin_labels(dist["edges"])
    x = np.arange(len(names))
    fig, (ax, ax_n) = figure(2)
    for key, colour, text in (("a", "tab:blue", "plane A"), ("b", "tab:orange", "plane B"),
                              ("fused", "tab:red", "fused (nearer slice)")):
        y = np.array([np.nan if v is None else v for v in dist[key]], dtype=float)
        ax.plot(x, y, marker="o", color=colour, label=text)
    ax.set_xticks(x, names, rotation=45)
    ax.set_ylim(0, 1)
    ax.set_xlabel("distance from the annotated slice (slices)")
    ax.set_ylabel("Dice of the voxels in the bin")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax_n.bar(x, dist["foreground_voxels"], color="grey")
    ax_n.set_xticks(x, names, rotation=45)
    ax_n.set_xlabel("distance from the nearer annotated slice (slices)")
    ax_n.set_ylabel("true foreground voxels")
    return save_figure(fig, path, title or "coarse label quality by distance")
