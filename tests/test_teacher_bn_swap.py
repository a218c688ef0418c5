"""scripts/teacher_bn_swap.py: a teacher's weights with its student's BatchNorm statistics."""
from __future__ import annotations

import pytest
import torch

from conftest import REPO, load_script
from cogrnet.checkpoints import atomic_torch_save, load_checkpoint, make_checkpoint
from cogrnet.errors import ConfigError
from cogrnet.inference.model import load_model
from cogrnet.networks import build_network, network_config

swap = load_script(REPO / "scripts" / "teacher_bn_swap.py")


def _run_checkpoint(path, with_teacher=True):
    """A checkpoint whose student and teacher differ in every parameter and buffer."""
    cfg = network_config(n_filters=4)
    torch.manual_seed(0)
    student, teacher = build_network(cfg), build_network(cfg)
    with torch.no_grad():
        for i, b in enumerate(student.buffers()):
            b.fill_(1.5 + i if b.dtype.is_floating_point else 7)
        for i, b in enumerate(teacher.buffers()):
            b.fill_(0.25 + i if b.dtype.is_floating_point else 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(make_checkpoint(student.state_dict(), {"network": cfg, "patch_size": [16] * 3},
                                      10, "train", teacher.state_dict() if with_teacher else None,
                                      optimizer_state={"state": {}}), path)
    return student, teacher


def test_keeps_teacher_parameters_and_takes_student_buffers(tmp_path, capsys):
    src, out = tmp_path / "run" / "last.pth", tmp_path / "probe" / "swapped.pth"
    student, teacher = _run_checkpoint(src)
    assert swap.main([str(src), str(out)]) == 0
    model, ckpt = load_model(str(out), ema=True)
    got = dict(model.state_dict())
    buffers = {n for n, _ in student.named_buffers()}
    assert buffers and len(buffers) == ckpt["extra"]["teacher_bn_swap"]["buffers"]
    for name, value in teacher.state_dict().items():
        expected = student.state_dict()[name] if name in buffers else value
        assert torch.equal(got[name], expected), name
    assert not torch.equal(teacher.state_dict()[next(iter(buffers))], got[next(iter(buffers))])
    for name, value in student.state_dict().items():  # the student is left as it was
        assert torch.equal(ckpt["model"][name], value), name
    assert ckpt["optimizer"] is None and load_checkpoint(src)["optimizer"] is not None
    assert "teacher weights" in capsys.readouterr().out


def test_refuses_a_run_without_teacher_and_a_file_beside_the_run(tmp_path):
    src = tmp_path / "run" / "last.pth"
    _run_checkpoint(src, with_teacher=False)
    with pytest.raises(ConfigError, match="no EMA"):
        swap.main([str(src), str(tmp_path / "probe" / "x.pth")])
    with pytest.raises(ConfigError, match="own folder"):
        swap.main([str(src), str(tmp_path / "run" / "x.pth")])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last.pth"]
