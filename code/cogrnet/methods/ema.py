"""The Mean Teacher: an exponential moving average of the student."""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` (no gradients)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def update_ema(teacher: nn.Module, student: nn.Module, decay: float, step: int,
               warmup: bool = True) -> None:
    """``t = a * t + (1 - a) * s`` for parameters and floating-point buffers (BatchNorm
    running statistics); integer buffers are copied.

    ``warmup``: ``a = min(1 - 1/(step + 1), decay)``, UA-MT's fast start for a teacher that
    begins as an untrained copy (``step`` 0 copies the student). Without it ``a = decay``
    from the first step, which keeps a pre-trained teacher (BCP, the CoGRNet reference)."""
    if not 0 <= decay <= 1:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    alpha = min(1.0 - 1.0 / (step + 1), decay) if warmup else decay
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.dtype.is_floating_point:
            t.mul_(alpha).add_(s, alpha=1 - alpha)
        else:
            t.copy_(s)
