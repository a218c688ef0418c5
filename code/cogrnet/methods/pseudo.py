"""Pseudo labels from the teacher: argmax, then (two classes) the largest 26-connected
component of the foreground."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.sliding_window import largest_component


@torch.no_grad()
def _component_ids(mask: torch.Tensor, check_every: int = 8) -> torch.Tensor:
    """Label each foreground voxel with the largest linear index in its 26-connected component
    by repeated 3x3x3 max-pooling (fast on a GPU); background is 0."""
    b = mask.shape[0]
    n = mask[0].numel()
    ids = torch.arange(1, n + 1, device=mask.device, dtype=torch.float32).view(1, 1, *mask.shape[1:])
    ids = ids.expand(b, 1, *mask.shape[1:]) * mask[:, None]
    fg = mask[:, None].float()
    while True:
        prev = ids
        for _ in range(check_every):
            ids = F.max_pool3d(ids, 3, stride=1, padding=1) * fg
        if torch.equal(ids, prev):
            return ids[:, 0]


@torch.no_grad()
def largest_components(mask: torch.Tensor) -> torch.Tensor:
    """Per sample of a bool ``(B, X, Y, Z)`` mask, its largest 26-connected component.
    CPU tensors use scipy; CUDA tensors a max-pooling label propagation on the device."""
    if mask.device.type == "cpu" or mask[0].numel() >= 2 ** 24:
        out = np.stack([largest_component(m) for m in mask.cpu().numpy()])
        return torch.from_numpy(out).to(mask.device)
    ids = _component_ids(mask.bool())
    out = torch.zeros_like(mask, dtype=torch.bool)
    for i in range(mask.shape[0]):
        vals, counts = torch.unique(ids[i][ids[i] > 0], return_counts=True)
        if len(vals):
            out[i] = ids[i] == vals[torch.argmax(counts)]
    return out


@torch.no_grad()
def pseudo_label(logits: torch.Tensor, lcc: bool = True) -> torch.Tensor:
    """Teacher logits ``(B, C, ...)`` -> integer pseudo label ``(B, ...)``; for two classes the
    foreground (prob >= 0.5) is reduced to its largest component when ``lcc``."""
    label = logits.argmax(dim=1)
    if lcc and logits.shape[1] == 2:
        label = largest_components(label > 0).long()
    return label
