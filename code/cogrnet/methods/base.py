"""What a training method supplies to the one trainer: its stages and its step."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..train_config import TrainConfig


@dataclass(frozen=True)
class Stage:
    """One training stage. ``unlabeled``: the batches carry unlabeled patches;
    ``teacher``: an EMA teacher is kept (created from the student at the stage start);
    ``ema_warmup``: the teacher's decay ramps up from 0 (UA-MT, a teacher trained from
    scratch) instead of being constant from the first step (a pre-trained teacher);
    ``lr_step``: the stage's own step of the lr schedule (``None``: ``--lr_step``)."""

    name: str
    iterations: int
    unlabeled: bool
    teacher: bool
    best_name: str = "best.pth"
    ema_warmup: bool = True
    lr_step: int | None = None


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


@dataclass(frozen=True)
class MethodDefaults:
    """A method's own setup, used where the command line does not say: the batch sizes on
    every dataset, the iteration counts on LA only (elsewhere the dataset preset's
    schedule). docs/METHODS.md gives the sources."""

    batch_size: int = 8
    labeled_bs: int = 4
    la_iterations: dict[str, int] = field(default_factory=dict)  # e.g. {"max_iteration": 6000}


class Method:
    """Base class. Subclasses set ``name`` (and ``two_stage``, ``defaults``) and implement
    :meth:`stages` and :meth:`step`; :meth:`configure` holds their own config rules."""

    name = "base"
    #: pre-training then self-training (``pre_max_iteration`` + ``self_max_iteration``)
    #: instead of one stage of ``max_iteration``
    two_stage = False
    defaults = MethodDefaults()
    #: the settings this method's training reads beyond those every method does
    #: (:data:`cogrnet.training.checkpoint.RESUME_KEYS`): a ``--resume`` must keep them
    settings: tuple[str, ...] = ()

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    @classmethod
    def configure(cls, cfg: TrainConfig) -> TrainConfig:
        """This method's adjustments and checks of a resolved config (a one-line
        :class:`ConfigError` for settings it cannot train with). The base rule: the batch
        holds labeled and unlabeled patches, at least one of each."""
        if not 0 < cfg.labeled_bs < cfg.batch_size:
            raise ConfigError(f"--labeled_bs {cfg.labeled_bs} must be between 1 and "
                              f"--batch_size - 1 ({cfg.batch_size - 1})")
        return cfg

    @classmethod
    def check_world(cls, cfg: TrainConfig, world: int) -> None:
        """A one-line :class:`ConfigError` when ``cfg``'s batch cannot be split over
        ``world`` processes (each takes ``batch_size / world`` patches, ``labeled_bs /
        world`` of them labeled)."""
        for key in ("batch_size", "labeled_bs"):
            if getattr(cfg, key) % world:
                raise ConfigError(f"--{key} {getattr(cfg, key)} is not divisible by the "
                                  f"{world} processes")

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
