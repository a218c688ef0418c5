"""What a training method supplies to the one trainer: its stages and its step."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Stage:
    """One training stage. ``unlabeled``: the batches carry unlabeled patches;
    ``teacher``: an EMA teacher is kept (created from the student at the stage start);
    ``ema_warmup``: the teacher's decay ramps up from 0 (UA-MT, a teacher trained from
    scratch) instead of being constant from the first step (a pre-trained teacher)."""

    name: str
    iterations: int
    unlabeled: bool
    teacher: bool
    best_name: str = "best.pth"
    ema_warmup: bool = True


@dataclass
class StepContext:
    """Everything a method's step may use; ``rng`` is seeded by (seed, iteration)."""

    student: nn.Module
    teacher: nn.Module | None
    iteration: int  # within the stage
    stage: Stage
    rng: np.random.Generator
    labeled_bs: int
    autocast: Callable[[], Any]
    state: dict[str, Any] = field(default_factory=dict)  # method state saved in checkpoints


@dataclass
class StepOutput:
    loss: torch.Tensor
    scalars: dict[str, float] = field(default_factory=dict)
    # for TensorBoard image snapshots: image (X,Y,Z), target and prediction of one sample
    snapshot: dict[str, torch.Tensor] = field(default_factory=dict)
    # foreground fraction of the teacher's label (pseudo label or prob >= 0.5) per unlabeled
    # sample, in batch order: the trainer keeps the last value per unlabeled volume
    unlabeled_fg: torch.Tensor | None = None


class Method:
    """Base class. Subclasses set ``name`` and implement :meth:`stages` and :meth:`step`."""

    name = "base"

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def stage_start(self, stage: Stage, state: dict[str, Any]) -> list[str]:
        """Hook at the start of a stage; returns log lines."""
        return []

    def step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> StepOutput:
        raise NotImplementedError


def snapshot(image: torch.Tensor, target: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """First sample's image, target and predicted label, detached, for TensorBoard."""
    return {"image": image[0, 0].detach(), "target": target[0].detach(),
            "prediction": logits[0].argmax(0).detach()}
