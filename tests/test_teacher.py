"""The EMA teacher as the trainer runs it: BatchNorm buffers, the two-stage teacher that keeps
the pre-trained weights, the single-stage warm-up, and the pre-training mixing directions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cogrnet.methods.base import Stage, StepContext
from cogrnet.methods.copy_paste import CoGRNet
from cogrnet.methods.ema import make_teacher, update_ema
from cogrnet.train_config import TrainConfig
from cogrnet.checkpoints import load_checkpoint
from cogrnet.training.config import parse_config
from cogrnet.training.trainer import Trainer

TINY = ["--dataset", "phantom", "--n_filters", "4", "--patch_size", "32", "32", "16",
        "--batch_size", "4", "--labeled_bs", "2", "--device", "cpu", "--no_progress",
        "--num_workers", "1", "--labelnum", "2", "--label_source", "full"]


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2))


def _perturbed(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with other parameters and BatchNorm statistics (one train pass)."""
    other = make_teacher(net)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.train()
    other(torch.randn(2, 1, 5, 5, 5) * 3 + 2)
    return other


@pytest.mark.parametrize("warmup,step,alpha", [(False, 0, 0.99), (True, 0, 0.0), (True, 3, 0.75),
                                               (True, 10_000, 0.99)])
def test_ema_follows_the_rule_for_parameters_and_batchnorm_buffers(warmup, step, alpha):
    teacher = make_teacher(_bn_net())
    student = _perturbed(teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    update_ema(teacher, student, decay=0.99, step=step, warmup=warmup)
    s = student.state_dict()
    for k, t in teacher.state_dict().items():
        if t.dtype.is_floating_point:
            torch.testing.assert_close(t, alpha * before[k] + (1 - alpha) * s[k], msg=k)
            assert alpha == 1 or not torch.equal(t, before[k]), k  # the buffer moved
        else:  # num_batches_tracked: copied
            assert torch.equal(t, s[k]), k
    assert "1.running_mean" in before and not any(p.requires_grad for p in teacher.parameters())


def test_ema_rejects_a_decay_outside_0_1():
    net = _bn_net()
    with pytest.raises(ValueError, match="decay"):
        update_ema(make_teacher(net), net, decay=1.5, step=0)


def _run(root, out, exp, *extra) -> Trainer:
    t = Trainer(parse_config(["--root_path", str(root), "--out_root", str(out), "--exp", exp,
                              *TINY, *extra]))
    t.run()
    return t


def _assert_state_close(got: dict, want: dict, what: str) -> None:
    for k, v in want.items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=f"{what}: {k}")


def test_two_stage_teacher_starts_as_the_pretrained_weights(phantom_root, tmp_path):
    """After the first self-training step the teacher is 0.99 * pre-trained + 0.01 * student
    (the reference and BCP), not the student (UA-MT's warm-up restarted at stage 2)."""
    _run(phantom_root, tmp_path, "cp", "--method", "cogrnet", "--pre_max_iteration", "2",
         "--self_max_iteration", "1", "--val_list", "none", "--dropout", "0")
    pre = load_checkpoint(tmp_path / "cp" / "pretrain_best.pth")["model"]
    last = load_checkpoint(tmp_path / "cp" / "last.pth")
    assert last["stage"] == "self" and last["iteration"] == 3
    student = last["model"]
    want = {k: 0.99 * pre[k] + 0.01 * student[k] if v.dtype.is_floating_point else v
            for k, v in pre.items()}
    _assert_state_close(last["ema"], want, "teacher")
    # the student has moved away from the pre-trained weights, so the check can tell them apart
    moved = max(float((student[k] - pre[k]).abs().max()) for k in pre if pre[k].dtype.is_floating_point)
    assert moved > 1e-4


def test_single_stage_teacher_keeps_the_warm_up(phantom_root, tmp_path):
    """Mean Teacher trains its teacher from scratch: step 0 copies the student (alpha 0)."""
    _run(phantom_root, tmp_path, "mt", "--method", "mt", "--max_iteration", "1",
         "--val_list", "none")
    last = load_checkpoint(tmp_path / "mt" / "last.pth")
    _assert_state_close(last["ema"], last["model"], "teacher after step 0")


class _Recorder(nn.Module):
    """A stand-in student that records its input and predicts background everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.cat([torch.ones_like(x), torch.zeros_like(x)], 1) + self.bias


@pytest.mark.parametrize("directions", [1, 2])
def test_pretraining_mixes_each_labeled_patch_in_the_chosen_directions(directions):
    """Four labeled patches of constant value 1, 2, 3, 4 (halves a = 1, 2 and b = 3, 4; label
    1 on b only): one direction gives a-outside / b-inside mixes only, two directions also
    b-outside / a-inside."""
    patch = (8, 8, 8)
    img = torch.stack([torch.full((1, *patch), float(v)) for v in (1, 2, 3, 4)])
    label = torch.stack([torch.full(patch, v) for v in (0, 0, 1, 1)])
    cfg = TrainConfig(pre_fa_ratio=0.5, pre_mix_directions=directions)
    student = _Recorder()
    ctx = StepContext(student, None, 0, Stage("pre", 1, False, False), np.random.default_rng(0),
                      4, lambda: torch.autocast("cpu", enabled=False))
    out = CoGRNet(cfg).step({"image": img, "label": label}, ctx)
    x = student.seen[0][:, 0]
    assert x.shape[0] == 2 * directions
    # (outside value, inside value) of each mixed image; the cuboid is 4x4x4 of 8x8x8
    pairs = [(float(xi.flatten().mode().values), sorted(set(xi.unique().tolist())))
             for xi in x]
    assert all(float((xi == p[0]).float().mean()) == 1 - 1 / 8 for xi, p in zip(x, pairs))
    want = [(1.0, [1.0, 3.0]), (2.0, [2.0, 4.0])]
    if directions == 2:
        want += [(3.0, [1.0, 3.0]), (4.0, [2.0, 4.0])]
    assert pairs == want
    # the first mixed target: a's label (0) outside the cuboid, b's (1) inside
    target = out.snapshot["target"]
    assert torch.equal(target.bool(), x[0] == 3.0)


class _SignTeacher(nn.Module):
    """Predicts foreground exactly where the input is positive."""

    def forward(self, x):
        return torch.cat([-x, x], 1)


def test_self_training_targets_and_region_weights_are_the_right_way_round(monkeypatch):
    """A batch whose answer is known: labeled la (value 1, label 1) and lb (value 2, label 0),
    unlabeled ua (value -3, teacher says background) and ub (value 3, teacher says
    foreground). X1 = la outside the cuboid, ua inside; X2 = ub outside, lb inside; the
    labeled part of each has region weight 1 and the unlabeled part u_weight."""
    from cogrnet.methods import copy_paste

    calls = []
    real = copy_paste.mixed_loss

    def spy(logits, target, labeled_region, u_weight, confidence=None, dice="pooled_squared"):
        value = real(logits, target, labeled_region, u_weight, confidence, dice)
        calls.append((target.clone(), labeled_region.clone(), u_weight, value))
        return value

    monkeypatch.setattr(copy_paste, "mixed_loss", spy)
    patch = (8, 8, 8)
    img = torch.stack([torch.full((1, *patch), float(v)) for v in (1, 2, -3, 3)])
    label = torch.stack([torch.full(patch, v) for v in (1, 0)])
    student = _Recorder()
    ctx = StepContext(student, _SignTeacher(), 0, Stage("self", 1, True, True),
                      np.random.default_rng(0), 2, lambda: torch.autocast("cpu", enabled=False),
                      {"fa_ratio": 0.5})
    out = CoGRNet(TrainConfig(u_weight=0.3, pseudo_lcc=True)).step({"image": img, "label": label}, ctx)
    x1, x2 = student.seen[0][:, 0]
    inside = x1 == -3.0  # the cuboid: ua's voxels in X1
    assert int(inside.sum()) == 4 ** 3
    assert torch.equal(x1, torch.where(inside, -3.0, 1.0))
    assert torch.equal(x2, torch.where(inside, 2.0, 3.0))
    (t1, r1, w1, v1), (t2, r2, w2, v2) = calls
    assert torch.equal(t1[0].bool(), ~inside)  # label(la) = 1 outside, pseudo(ua) = 0 inside
    assert torch.equal(t2[0].bool(), ~inside)  # pseudo(ub) = 1 outside, label(lb) = 0 inside
    assert torch.equal(r1[0].bool(), ~inside)  # X1: the labeled part is outside
    assert torch.equal(r2[0].bool(), inside)   # X2: the labeled part is inside
    assert w1 == w2 == 0.3
    torch.testing.assert_close(out.loss, v1 + v2)
    assert out.unlabeled_fg.tolist() == [0.0, 1.0]  # teacher labels of ua, ub



@pytest.mark.parametrize("dice", ["pooled_squared", "per_sample_linear"])
def test_two_student_forwards_see_each_mixed_image_set_alone(dice):
    """``student_forwards 2``: X1 and X2 go through the student in two calls (BCP's way:
    BatchNorm statistics per set); for a network without batch statistics the loss equals
    the one-forward loss."""
    patch = (8, 8, 8)
    img = torch.stack([torch.full((1, *patch), float(v)) for v in (1, 2, -3, 3)])
    label = torch.stack([torch.full(patch, v) for v in (1, 0)])
    losses = {}
    for forwards in (1, 2):
        student = _Recorder()
        ctx = StepContext(student, _SignTeacher(), 0, Stage("self", 1, True, True),
                          np.random.default_rng(0), 2, lambda: torch.autocast("cpu", enabled=False),
                          {"fa_ratio": 0.5})
        cfg = TrainConfig(u_weight=0.3, student_forwards=forwards, dice=dice)
        losses[forwards] = CoGRNet(cfg).step({"image": img, "label": label}, ctx).loss
        assert [x.shape[0] for x in student.seen] == ([2] if forwards == 1 else [1, 1])
        if forwards == 2:  # X1 (la outside, ua inside) first, then X2 (ub outside, lb inside)
            assert set(student.seen[0].unique().tolist()) == {1.0, -3.0}
            assert set(student.seen[1].unique().tolist()) == {3.0, 2.0}
    torch.testing.assert_close(losses[2], losses[1])
