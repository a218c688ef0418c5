"""Segmentation losses with per-voxel weights.

``logits``: ``(B, C, X, Y, Z)``; ``target``: integer ``(B, X, Y, Z)``; ``weight``: float
``(B, X, Y, Z)`` (a region mask, a confidence map, or their product).

Two soft-Dice forms (``--dice``): ``pooled_squared`` (the default, the CoGRNet reference's:
sums over the whole batch, squared probabilities in the denominator) and
``per_sample_linear`` (a Dice per sample and class with a linear denominator, then their
mean, as in BCP's LA code).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_ce(logits: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy averaged over the weighted voxels."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    if weight is None:
        return ce.mean()
    return (ce * weight).sum() / weight.sum().clamp_min(1e-6)


DICE_FORMS = ("pooled_squared", "per_sample_linear")


def weighted_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                       weight: torch.Tensor | None = None, smooth: float = 1e-5,
                       form: str = "pooled_squared") -> torch.Tensor:
    """``1 - soft Dice``, each voxel counted with its weight. ``pooled_squared``: one Dice
    per class over the whole batch, ``sum(p^2) + sum(y)`` in the denominator, averaged over
    the classes; ``per_sample_linear``: one Dice per (sample, class) with ``sum(p) +
    sum(y)``, averaged over both (a sample without weighted voxels scores 1 through
    ``smooth``)."""
    if form not in DICE_FORMS:
        raise ValueError(f"unknown Dice form {form!r} (choose from {', '.join(DICE_FORMS)})")
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    w = torch.ones_like(probs[:, :1]) if weight is None else weight[:, None].to(probs.dtype)
    if form == "per_sample_linear":
        dims = (2, 3, 4)
        inter = (probs * onehot * w).sum(dims)
        denom = (probs * w).sum(dims) + (onehot * w).sum(dims)
    else:
        dims = (0, 2, 3, 4)
        inter = (probs * onehot * w).sum(dims)
        denom = (probs * probs * w).sum(dims) + (onehot * w).sum(dims)
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()


def ce_dice(logits: torch.Tensor, target: torch.Tensor,
            weight: torch.Tensor | None = None, dice: str = "pooled_squared") -> torch.Tensor:
    """The method's supervised loss: ``(CE + Dice) / 2`` (``dice``: the Dice form)."""
    return 0.5 * (weighted_ce(logits, target, weight)
                  + weighted_dice_loss(logits, target, weight, form=dice))


def mixed_loss(logits: torch.Tensor, target: torch.Tensor, labeled_region: torch.Tensor,
               u_weight: float, confidence: torch.Tensor | None = None,
               dice: str = "pooled_squared") -> torch.Tensor:
    """Loss of a copy-paste mixed batch: the region that came from the labeled image
    (``labeled_region`` = 1) has weight 1 (times ``confidence`` when given), the region from
    the unlabeled image weight ``u_weight``: ``ce_dice(L) + u_weight * ce_dice(U)``."""
    lab = labeled_region if confidence is None else labeled_region * confidence
    return (ce_dice(logits, target, lab, dice)
            + u_weight * ce_dice(logits, target, 1 - labeled_region, dice))
