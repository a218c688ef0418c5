"""Segmentation losses with per-voxel weights.

``logits``: ``(B, C, X, Y, Z)``; ``target``: integer ``(B, X, Y, Z)``; ``weight``: float
``(B, X, Y, Z)`` (a region mask, a confidence map, or their product).
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


def weighted_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                       weight: torch.Tensor | None = None, smooth: float = 1e-5) -> torch.Tensor:
    """``1 - soft Dice`` per class (squared-sum denominator), averaged over classes,
    each voxel counted with its weight."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    w = torch.ones_like(probs[:, :1]) if weight is None else weight[:, None].to(probs.dtype)
    dims = (0, 2, 3, 4)
    inter = (probs * onehot * w).sum(dims)
    denom = (probs * probs * w).sum(dims) + (onehot * w).sum(dims)
    return (1 - (2 * inter + smooth) / (denom + smooth)).mean()


def ce_dice(logits: torch.Tensor, target: torch.Tensor,
            weight: torch.Tensor | None = None) -> torch.Tensor:
    """The method's supervised loss: ``(CE + Dice) / 2``."""
    return 0.5 * (weighted_ce(logits, target, weight) + weighted_dice_loss(logits, target, weight))


def mixed_loss(logits: torch.Tensor, target: torch.Tensor, labeled_region: torch.Tensor,
               u_weight: float, confidence: torch.Tensor | None = None) -> torch.Tensor:
    """Loss of a copy-paste mixed batch: the region that came from the labeled image
    (``labeled_region`` = 1) has weight 1 (times ``confidence`` when given), the region from
    the unlabeled image weight ``u_weight``: ``ce_dice(L) + u_weight * ce_dice(U)``."""
    lab = labeled_region if confidence is None else labeled_region * confidence
    return ce_dice(logits, target, lab) + u_weight * ce_dice(logits, target, 1 - labeled_region)
