"""``mt`` (Mean Teacher, Tarvainen & Valpola 2017) and ``uamt`` (uncertainty-aware MT,
Yu et al. 2019) as set up for LA by UA-MT: supervised ``(CE + Dice) / 2`` on the labeled
patches plus a ramped MSE consistency between student and teacher softmax on the unlabeled
ones (teacher input with clipped Gaussian noise). ``uamt`` keeps only voxels whose
predictive entropy over ``T`` stochastic teacher passes is below a ramped threshold.
"""
from __future__ import annotations

import math

import torch

from .base import Method, MethodDefaults, Stage, StepContext, StepOutput, snapshot
from .losses import ce_dice
from .ramps import sigmoid_rampup


def _noisy(x: torch.Tensor, gen_scale: float = 0.1, clip: float = 0.2) -> torch.Tensor:
    return x + torch.clamp(torch.randn_like(x) * gen_scale, -clip, clip)


class MeanTeacher(Method):
    name = "mt"
    #: UA-MT's LA setup
    defaults = MethodDefaults(batch_size=4, labeled_bs=2, la_iterations={"max_iteration": 6000})
    settings = ("dice", "consistency", "consistency_rampup", "ema_decay")

    def stages(self) -> list[Stage]:
        return [Stage("train", self.cfg.max_iteration, unlabeled=True, teacher=True)]

    def consistency_weight(self, it: int) -> float:
        """``consistency * sigmoid_rampup(it, consistency_rampup * max_iteration)``: with the
        default fraction 1.0 the weight ramps over the whole run, as in UA-MT's LA code
        (``sigmoid_rampup(iter // 150, 40)`` over its 6000 iterations, here without the
        150-iteration steps)."""
        rampup = self.cfg.consistency_rampup * self.cfg.max_iteration
        return self.cfg.consistency * sigmoid_rampup(it, rampup)

    def _teacher_probs(self, ctx: StepContext, u: torch.Tensor):
        with torch.no_grad(), ctx.autocast():
            return torch.softmax(ctx.teacher(_noisy(u)).float(), 1), None

    def step(self, batch, ctx: StepContext) -> StepOutput:
        img, lab = batch["image"], batch["label"]
        lbs = ctx.labeled_bs
        with ctx.autocast():
            logits = ctx.student(img)
        sup = ce_dice(logits[:lbs], lab, batch.get("weight"), self.cfg.dice)
        s_prob = torch.softmax(logits[lbs:].float(), 1)
        t_prob, mask = self._teacher_probs(ctx, img[lbs:])
        sq = (s_prob - t_prob) ** 2
        if mask is None:
            cons = sq.mean()
        else:
            m = mask[:, None].float()
            cons = (sq * m).sum() / (sq.shape[1] * m.sum()).clamp_min(1e-6)
        w = self.consistency_weight(ctx.iteration)
        loss = sup + w * cons
        scalars = {"loss/total": loss.item(), "loss/sup": sup.item(),
                   "loss/consistency": cons.item(), "train/consistency_weight": w}
        if mask is not None:
            scalars["train/certain_fraction"] = mask.float().mean().item()
        return StepOutput(loss, scalars, snapshot(img, lab, logits),
                          unlabeled_fg=(t_prob[:, 1:].sum(1) >= 0.5).flatten(1).float().mean(1))


class UAMT(MeanTeacher):
    name = "uamt"
    settings = MeanTeacher.settings + ("uamt_passes",)

    def _teacher_probs(self, ctx: StepContext, u: torch.Tensor):
        T = self.cfg.uamt_passes
        teacher = ctx.teacher
        was_training = teacher.training
        # train mode, as UA-MT's code keeps its teacher: dropout on, BatchNorm on batch
        # statistics; each pass also moves the teacher's running statistics toward this
        # batch's (update_ema then blends them at the decay with the student's)
        teacher.train()
        probs = []
        with torch.no_grad(), ctx.autocast():
            probs.append(torch.softmax(teacher(_noisy(u)).float(), 1))
            for _ in range(T - 1):
                probs.append(torch.softmax(teacher(_noisy(u)).float(), 1))
        teacher.train(was_training)
        mean = torch.stack(probs).mean(0)
        entropy = -(mean * torch.log(mean + 1e-6)).sum(1)
        return probs[0], entropy < self.uncertainty_threshold(ctx.iteration, mean.shape[1])

    def uncertainty_threshold(self, it: int, num_classes: int) -> float:
        """The entropy below which a voxel counts: ``(0.75 + 0.25 * sigmoid_rampup(it,
        max_iteration)) * ln(num_classes)``, ramped over the whole run as in UA-MT's code
        (whatever ``--consistency_rampup`` says)."""
        ramp = sigmoid_rampup(it, self.cfg.max_iteration)
        return (0.75 + 0.25 * ramp) * math.log(num_classes)
