"""``sup``: the network trained on the labeled volumes alone (full or coarse labels)."""
from __future__ import annotations

from .base import Method, Stage, StepContext, StepOutput, snapshot
from .losses import ce_dice


class Supervised(Method):
    name = "sup"

    def stages(self) -> list[Stage]:
        return [Stage("train", self.cfg["max_iteration"], unlabeled=False, teacher=False)]

    def step(self, batch, ctx: StepContext) -> StepOutput:
        img, lab = batch["image"], batch["label"]
        with ctx.autocast():
            logits = ctx.student(img)
        loss = ce_dice(logits, lab, batch.get("weight"))
        return StepOutput(loss, {"loss/sup": loss.item()}, snapshot(img, lab, logits))
