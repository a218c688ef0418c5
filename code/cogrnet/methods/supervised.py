"""``sup``: the network trained on the labeled volumes alone (full or coarse labels)."""
from __future__ import annotations

from ..errors import ConfigError
from ..train_config import TrainConfig
from .base import Method, MethodDefaults, Stage, StepContext, StepOutput, snapshot
from .losses import ce_dice


class Supervised(Method):
    name = "sup"
    defaults = MethodDefaults(batch_size=4, labeled_bs=4, la_iterations={"max_iteration": 6000})
    settings = ("dice",)

    @classmethod
    def configure(cls, cfg: TrainConfig) -> TrainConfig:
        """Labeled patches only: the batch is ``labeled_bs`` of them."""
        if cfg.labeled_bs < 1:
            raise ConfigError("--labeled_bs must be at least 1")
        return cfg.replace(batch_size=cfg.labeled_bs)

    def stages(self) -> list[Stage]:
        return [Stage("train", self.cfg.max_iteration, unlabeled=False, teacher=False)]

    def step(self, batch, ctx: StepContext) -> StepOutput:
        img, lab = batch["image"], batch["label"]
        with ctx.autocast():
            logits = ctx.student(img)
        loss = ce_dice(logits, lab, batch.get("weight"), self.cfg.dice)
        return StepOutput(loss, {"loss/sup": loss.item()}, snapshot(img, lab, logits))
