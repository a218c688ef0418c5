"""CoGRNet and BCP: copy-paste pre-training, then a Mean Teacher with Focus Area mixing.

Stage ``pre`` (labeled patches only): halves ``a``/``b`` of the labeled batch are mixed with
a cuboid mask ``M``: ``a * M + b * (1 - M)``, labels likewise; with ``pre_mix_directions``
2 also ``b * M + a * (1 - M)``, so every labeled patch is the outer part of one mixed image.
Stage ``self``: ``X1 = la * M + ua * (1 - M)`` and ``X2 = ub * M + lb * (1 - M)`` with teacher
pseudo labels on the unlabeled parts; the labeled region has weight 1, the unlabeled one
``u_weight``. The two methods differ in their labels (BCP: full labels), in the Focus Area
ratio (CoGRNet: ``auto`` from the pre-trained model's foreground fraction; BCP: 2/3) and in
their LA schedule (BCP's own 2000 + 15000 iterations; CoGRNet the dataset preset's).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..train_config import TrainConfig
from .base import Method, MethodDefaults, Stage, StepContext, StepOutput, snapshot
from .losses import ce_dice, mixed_loss
from .mixing import cuboid_mask, mix, sample_cuboid
from .pseudo import pseudo_label

FA_WINDOW = 10  # pre-training iterations whose foreground fraction sets the ``auto`` ratio


def auto_fa_ratio(fractions: list[float], lo: float, hi: float) -> float:
    """The Focus Area ratio from the mean foreground fraction of the softmax predictions of
    the last pre-training outputs, clamped to ``[lo, hi]``."""
    if not fractions:
        return lo
    return float(np.clip(np.mean(fractions), lo, hi))


class CoGRNet(Method):
    """CoGRNet: copy-paste pre-training, then self-training with the ``auto`` Focus Area."""

    name = "cogrnet"
    two_stage = True
    #: BCP's LA batch; the iteration counts are the dataset preset's
    defaults = MethodDefaults(batch_size=8, labeled_bs=4)
    settings = ("dice", "student_forwards", "fa_ratio", "fa_ratio_range", "u_weight",
                "pseudo_lcc", "pre_mix_directions", "pre_fa_ratio", "ema_decay", "handover",
                "pre_lr_step")

    @classmethod
    def configure(cls, cfg: TrainConfig) -> TrainConfig:
        """Both streams of the batch are split in halves a and b, so both must be even."""
        cfg = super().configure(cfg)
        if cfg.student_forwards == 2 and cfg.cuda_graphs in ("student", "all"):
            raise ConfigError(f"--student_forwards 2 and --cuda_graphs {cfg.cuda_graphs}: the "
                              "student graph replays one forward of the whole batch; use "
                              "--cuda_graphs teacher or none")
        cls._check_halves(cfg, 1)
        return cfg

    @classmethod
    def _check_halves(cls, cfg: TrainConfig, world: int) -> None:
        """Each process splits its labeled and its unlabeled patches in halves a and b."""
        lbs, ubs = cfg.labeled_bs // world, (cfg.batch_size - cfg.labeled_bs) // world
        if lbs < 2 or lbs % 2 or ubs % 2:
            where = "" if world == 1 else f" per process ({lbs} + {ubs} with {world})"
            raise ConfigError(f"--labeled_bs {cfg.labeled_bs} and --batch_size {cfg.batch_size}: "
                              f"{cfg.method} splits both streams in halves, so both must be "
                              f"even{where}")

    @classmethod
    def check_world(cls, cfg: TrainConfig, world: int) -> None:
        super().check_world(cfg, world)
        if cfg.student_forwards == 2:
            raise ConfigError("--student_forwards 2 runs the student twice before one "
                              "backward, which DistributedDataParallel does not take; use one "
                              "process")
        cls._check_halves(cfg, world)

    def stages(self) -> list[Stage]:
        c = self.cfg
        return [Stage("pre", c.pre_max_iteration, unlabeled=False, teacher=False,
                      best_name="pretrain_best.pth", lr_step=c.pre_lr_step),
                # the teacher starts as the pre-trained weights, constant decay from step one
                Stage("self", c.self_max_iteration, unlabeled=True, teacher=True,
                      ema_warmup=False)]

    def stage_start(self, stage: Stage, state: dict[str, Any]) -> list[str]:
        if stage.name != "self":
            return []
        ratio = self.cfg.fa_ratio
        if ratio == "auto":
            lo, hi = self.cfg.fa_ratio_range
            state["fa_ratio"] = auto_fa_ratio(state.get("fg_fractions", []), lo, hi)
            how = (f"auto from the last {len(state.get('fg_fractions', []))} pre-training "
                   f"outputs, clamped to [{lo}, {hi}]")
        else:
            state["fa_ratio"] = float(ratio)
            how = "fixed"
        return [f"Focus Area ratio for self-training: {state['fa_ratio']:.4f} ({how})"]

    def _labels(self, batch: dict[str, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels of labeled halves a (first n) and b: in two-stream mode half b uses the
        second plane's label set."""
        lab = batch["label"]
        second = batch.get("label_b", lab)
        return lab[:n], second[n:2 * n]

    def _confidence(self, batch: dict[str, torch.Tensor], n: int):
        w = batch.get("weight")
        return (None, None) if w is None else (w[:n], w[n:2 * n])

    def step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> StepOutput:
        return self._pre(batch, ctx) if ctx.stage.name == "pre" else self._self(batch, ctx)

    def _pre(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> StepOutput:
        n = ctx.labeled_bs // 2
        img = batch["image"]
        patch = img.shape[2:]
        start, size = sample_cuboid(ctx.rng, patch, self.cfg.pre_fa_ratio)
        m = cuboid_mask(patch, start, size, img.device)
        la, lb = self._labels(batch, n)
        wa, wb = self._confidence(batch, n)
        x = mix(img[:n], img[n:2 * n], m)
        y = mix(la.float(), lb.float(), m)
        w = None if wa is None else mix(wa, wb, m)
        if self.cfg.pre_mix_directions == 2:  # b into a and a into b
            x = torch.cat([x, mix(img[n:2 * n], img[:n], m)])
            y = torch.cat([y, mix(lb.float(), la.float(), m)])
            w = None if w is None else torch.cat([w, mix(wb, wa, m)])
        y = y.round().long()
        with ctx.autocast():
            logits = ctx.student(x)
        loss = ce_dice(logits, y, w, self.cfg.dice)
        fg = torch.softmax(logits.detach().float(), 1)[:, 1:].sum(1).mean().item()
        fr = ctx.state.setdefault("fg_fractions", [])
        fr.append(fg)
        del fr[:-FA_WINDOW]
        return StepOutput(loss, {"loss/pre": loss.item(), "train/fg_fraction": fg},
                          snapshot(x, y, logits))

    def _self(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> StepOutput:
        lbs = ctx.labeled_bs
        n = lbs // 2
        img = batch["image"]
        ub_n = (img.shape[0] - lbs) // 2
        la_img, lb_img = img[:n], img[n:2 * n]
        ua_img, ub_img = img[lbs:lbs + ub_n], img[lbs + ub_n:lbs + 2 * ub_n]
        with torch.no_grad(), ctx.autocast():
            t_logits = ctx.teacher(torch.cat([ua_img, ub_img]))
        pseudo = pseudo_label(t_logits.float(), lcc=self.cfg.pseudo_lcc)
        pa, pb = pseudo[:ub_n], pseudo[ub_n:]
        patch = img.shape[2:]
        start, size = sample_cuboid(ctx.rng, patch, ctx.state["fa_ratio"])
        m = cuboid_mask(patch, start, size, img.device)
        la, lb = self._labels(batch, n)
        x1, x2 = mix(la_img, ua_img, m), mix(ub_img, lb_img, m)
        y1 = mix(la.float(), pa.float(), m).round().long()
        y2 = mix(pb.float(), lb.float(), m).round().long()
        wa, wb = self._confidence(batch, n)
        with ctx.autocast():
            if self.cfg.student_forwards == 2:  # BatchNorm statistics per mixed image set
                logits = torch.cat([ctx.student(x1), ctx.student(x2)])
            else:
                logits = ctx.student(torch.cat([x1, x2]))
        u_w, dice = self.cfg.u_weight, self.cfg.dice
        mb = m.expand_as(y1.float())
        loss1 = mixed_loss(logits[:n], y1, mb, u_w,
                           None if wa is None else mix(wa, torch.ones_like(wa), m), dice)
        loss2 = mixed_loss(logits[n:], y2, 1 - mb, u_w,
                           None if wb is None else mix(torch.ones_like(wb), wb, m), dice)
        loss = loss1 + loss2
        scalars = {"loss/self": loss.item(), "loss/mix_l_u": loss1.item(),
                   "loss/mix_u_l": loss2.item(), "train/fa_ratio": ctx.state["fa_ratio"],
                   "train/pseudo_fg_fraction": pseudo.float().mean().item()}
        return StepOutput(loss, scalars, snapshot(x1, y1, logits),
                          unlabeled_fg=pseudo.flatten(1).float().mean(1))


class BCP(CoGRNet):
    """Bidirectional copy-paste (Bai et al., CVPR 2023): full labels, fixed ratio 2/3."""

    name = "bcp"
    #: BCP's LA setup
    defaults = MethodDefaults(batch_size=8, labeled_bs=4,
                              la_iterations={"pre_max_iteration": 2000, "self_max_iteration": 15000})

    @classmethod
    def configure(cls, cfg: TrainConfig) -> TrainConfig:
        """BCP's own setting where the command line does not say otherwise: the full labels
        (coarse labels only with a --coarse_dir) and the fixed Focus Area ratio 2/3."""
        if cfg.label_source == "coarse" and cfg.coarse_dir is None:
            cfg = cfg.replace(label_source="full")
        if cfg.fa_ratio == "auto":
            cfg = cfg.replace(fa_ratio=2 / 3)
        return super().configure(cfg)
