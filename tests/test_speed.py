"""The speed switches of train.py compute the plain path's step: the SGD kernels give the
same updates and losses, the CUDA-graph wrapper undoes what its capture did and replays the
student once per step, the flags reach the config, and switches that need CUDA fail in one
line elsewhere."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import REPO, load_script
from cogrnet.errors import ConfigError
from cogrnet.runtime import SGD_IMPLS, add_speed_arguments, check_speed, sgd_options
from cogrnet.train_config import TrainConfig
from cogrnet.training import graphs
from cogrnet.training.config import build_parser
from cogrnet.training.graphs import GraphedCall
from cogrnet.training.trainer import Trainer

_gpu_benchmark = load_script(REPO / "scripts" / "gpu_benchmark.py")
loss_curve, speed_config = _gpu_benchmark.loss_curve, _gpu_benchmark.speed_config

TINY = ["--dataset", "phantom", "--n_filters", "4", "--patch_size", "32", "32", "16",
        "--batch_size", "4", "--labeled_bs", "2", "--device", "cpu", "--no_progress",
        "--num_workers", "1", "--labelnum", "2", "--label_source", "full", "--val_list", "none"]


def _net(dropout: float = 0.0) -> torch.nn.Module:
    """A small 3D network with what matters here: BatchNorm statistics and dropout."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.BatchNorm3d(4),
                               torch.nn.ReLU(), torch.nn.Dropout3d(dropout),
                               torch.nn.Conv3d(4, 2, 1))


def test_every_sgd_impl_makes_the_plain_updates():
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    params = {}
    for impl in SGD_IMPLS:
        net = _net()
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4,
                              **sgd_options(impl))
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            net(x).square().mean().backward()
            opt.step()
        params[impl] = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert not torch.equal(params["auto"], torch.cat([p.flatten() for p in _net().parameters()]))
    for impl, p in params.items():
        torch.testing.assert_close(p, params["auto"], rtol=1e-5, atol=1e-6, msg=impl)
    with pytest.raises(ConfigError, match="--sgd_impl nope: unknown"):
        sgd_options("nope")


def test_training_losses_with_fused_sgd_equal_the_plain_path(phantom_root, tmp_path):
    curves = {}
    for impl in ("auto", "fused"):
        cfg = speed_config(["--root_path", str(phantom_root), "--out_root", str(tmp_path),
                            "--exp", impl, *TINY, "--pre_max_iteration", "1",
                            "--self_max_iteration", "2", "--sgd_impl", impl])
        assert cfg.sgd_impl == impl
        trainer = Trainer(cfg)
        trainer.run()
        curves[impl] = loss_curve(trainer.run_dir)
    assert len(curves["auto"]) == 3
    assert curves["fused"] == pytest.approx(curves["auto"], rel=1e-5, abs=1e-6)


def test_speed_flags_reach_the_config_and_conflicts_are_one_line(phantom_root, tmp_path):
    parser = build_parser()
    add_speed_arguments(parser)
    add_speed_arguments(parser)  # the hook in build_parser plus a script's call: no clash
    base = ["--root_path", str(phantom_root), "--out_root", str(tmp_path), *TINY]
    cfg = speed_config(base)
    assert (cfg.sgd_impl, cfg.cuda_graphs, cfg.pin_memory, cfg.compile_mode) == \
        ("auto", "none", False, None)
    assert not cfg.compile
    cfg = speed_config(base + ["--compile_mode", "reduce-overhead"])
    assert cfg.compile and cfg.compile_mode == "reduce-overhead"
    with pytest.raises(ConfigError, match="--cuda_graphs all and --compile"):
        speed_config(base + ["--cuda_graphs", "all", "--compile"])
    for extra, message in ((["--cuda_graphs", "teacher"], "CUDA graphs need a CUDA device"),
                           (["--pin_memory", "1"], "--pin_memory 1: page-locked")):
        with pytest.raises(ConfigError, match=message):
            Trainer(speed_config(base + ["--exp", "x"] + extra))
    with pytest.raises(ConfigError, match="does not go with several processes"):
        check_speed(TrainConfig(cuda_graphs="student"), torch.device("cuda"), world=2)
    check_speed(TrainConfig(cuda_graphs="teacher"), torch.device("cuda"), world=2)


def _eager_capture(counter: list):
    """A stand-in for a CUDA-graph capture on the CPU: it has a capture's side effects
    (warm-up calls with a backward pass: BatchNorm statistics, dropout draws) and replays
    eagerly."""

    def capture(module, x):
        counter.append(tuple(x.shape))
        for _ in range(graphs.WARMUP_CALLS + 1):
            out = module(x)
            if torch.is_grad_enabled():
                torch.autograd.grad(out.sum(), list(module.parameters()))
        return module

    return capture


def test_graphed_student_undoes_the_capture_and_replays_once_per_step():
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    plain = _net(dropout=0.5).train()
    student = copy.deepcopy(plain)
    captures: list = []
    wrapped = GraphedCall(student, training=True, capture=_eager_capture(captures))

    def step(model):
        torch.manual_seed(5)
        out = model(x)
        out.square().mean().backward()
        return out.detach()

    torch.testing.assert_close(step(wrapped), step(plain), rtol=0, atol=0)
    assert captures == [(2, 1, 8, 8, 8)] and wrapped.replays == 1
    for a, b in zip(student.buffers(), plain.buffers()):  # BatchNorm statistics: one step's
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(student.parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    wrapped(x)  # a second call in the same step runs eagerly
    assert (wrapped.replays, wrapped.eager_calls) == (1, 1)
    wrapped.begin_step()
    wrapped(x)
    assert (wrapped.replays, len(captures)) == (2, 1)
    student.eval()
    wrapped.begin_step()
    with torch.no_grad():
        wrapped(x)
    assert wrapped.eager_calls == 2


def test_graphed_teacher_replays_only_eval_no_grad_calls_of_known_shapes():
    teacher = _net(dropout=0.5).eval()
    captures: list = []
    wrapped = GraphedCall(teacher, training=False, capture=_eager_capture(captures))
    assert not wrapped.training
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        ref = teacher(x)
        torch.testing.assert_close(wrapped(x), ref, rtol=0, atol=0)
        wrapped(x)
        wrapped(torch.randn(1, 1, 8, 8, 8))
        wrapped(torch.randn(1, 1, 16, 8, 8))  # a third signature: eager
    assert (len(captures), wrapped.replays, wrapped.eager_calls) == (2, 3, 1)
    wrapped(x)  # gradients on: eager
    was_training = wrapped.training
    wrapped.train()  # what UA-MT does for its stochastic passes
    with torch.no_grad():
        wrapped(x)
    wrapped.train(was_training)
    assert not teacher.training and wrapped.eager_calls == 3


def test_loss_curve_reads_the_main_loss_of_each_iteration(tmp_path):
    rows = [{"iteration": 1, "loss/pre": 0.5}, {"iteration": 2, "loss/pre": 0.4},
            {"iteration": 2, "val/dice": 0.1}, {"iteration": 3, "loss/self": 0.3}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    assert loss_curve(tmp_path) == [0.5, 0.4, 0.3]
