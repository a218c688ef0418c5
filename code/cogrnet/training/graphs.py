"""CUDA graphs of the teacher forward and of the student's forward + backward (``--cuda_graphs``).

The training step has static shapes, so its two network calls can be captured once and
replayed: :class:`GraphedCall` wraps a module and replays a graph for every call that looks
like the captured one (same shape, strides, dtype and autocast setting, the same train/eval
mode and grad mode), and calls the module eagerly otherwise. Capturing runs the module a
few extra times (warm-up); the module's buffers (BatchNorm statistics) and the RNG state are
put back afterwards, so the replayed call computes what the eager call would. The student
graph replays at most once per training step (:meth:`GraphedCall.begin_step`): a second call
in the same step would overwrite the first one's saved activations, so it runs eagerly.
:func:`student_call` and :func:`teacher_call` give the networks as the training step calls
them (with DDP and ``torch.compile`` for the student, as the run's config says).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from ..train_config import TrainConfig

WARMUP_CALLS = 3  # eager calls on a side stream before a capture (cudnn/cuBLAS workspaces)
MAX_GRAPHS = 2  # input signatures captured per wrapper; others run eagerly

Replay = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def preserved_state(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Restore ``module``'s buffers and the device's RNG state on exit (the extra calls of a
    capture must not count as training steps)."""
    buffers = [b.detach().clone() for b in module.buffers()]
    cuda = device.type == "cuda"
    rng = torch.cuda.get_rng_state(device) if cuda else torch.get_rng_state()
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in zip(module.buffers(), buffers):
                b.copy_(saved)
        if cuda:
            torch.cuda.set_rng_state(rng, device)
        else:
            torch.set_rng_state(rng)


def capture_inference(module: nn.Module, x: torch.Tensor) -> Replay:
    """A CUDA graph of ``module(x)`` without gradients; the replay returns a copy of the
    output (the graph's own output buffer is overwritten by the next replay)."""
    static_in = x.detach().clone()
    stream = torch.cuda.Stream(x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        for _ in range(WARMUP_CALLS):
            module(static_in)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = module(static_in)

    def replay(inp: torch.Tensor) -> torch.Tensor:
        static_in.copy_(inp)
        graph.replay()
        return static_out.clone()

    return replay


class _Call(nn.Module):
    """``module(x)`` as a module of its own, so that capturing patches this wrapper's
    ``forward`` and never the student's (which the teacher is deep-copied from)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def capture_training(module: nn.Module, x: torch.Tensor) -> Replay:
    """Graphs of ``module``'s forward and backward (``torch.cuda.make_graphed_callables``):
    the replay is differentiable and gives the parameters their gradients."""
    sample = x.detach().clone().requires_grad_(x.requires_grad)
    return torch.cuda.make_graphed_callables(_Call(module), (sample,),
                                             num_warmup_iters=WARMUP_CALLS)


class GraphedCall(nn.Module):
    """``module`` whose calls replay CUDA graphs where they can (see the module docstring).

    ``training``: graphs of the forward + backward of a module in train mode with gradients
    on (the student); else of a module in eval mode under ``torch.no_grad`` (the teacher).
    ``capture`` makes a replay function from ``(module, example input)``; the default is
    :func:`capture_training` / :func:`capture_inference`.
    """

    def __init__(self, module: nn.Module, training: bool,
                 capture: Callable[[nn.Module, torch.Tensor], Replay] | None = None):
        super().__init__()
        self.module = module
        self.for_training = training
        self._capture = capture or (capture_training if training else capture_inference)
        self._graphs: dict[tuple, Replay] = {}
        self._replayed_this_step = False
        self.replays = 0
        self.eager_calls = 0
        self.train(module.training)  # a method's ``ctx.teacher.train(was_training)`` sees the truth

    def begin_step(self) -> None:
        """A new training step: the student graph may replay once more."""
        self._replayed_this_step = False

    def _signature(self, x: torch.Tensor) -> tuple:
        kind = x.device.type
        amp = torch.is_autocast_enabled(kind)
        return (tuple(x.shape), x.stride(), x.dtype, x.requires_grad, amp,
                torch.get_autocast_dtype(kind) if amp else None)

    def _eligible(self) -> bool:
        if self.for_training:
            return (self.module.training and torch.is_grad_enabled()
                    and not self._replayed_this_step)
        return not self.module.training and not torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._signature(x)
        replay = self._graphs.get(key) if self._eligible() else None
        if replay is None and self._eligible() and len(self._graphs) < MAX_GRAPHS:
            with preserved_state(self.module, x.device):
                replay = self._graphs[key] = self._capture(self.module, x)
        if replay is None:
            self.eager_calls += 1
            return self.module(x)
        self.replays += 1
        self._replayed_this_step = self.for_training
        return replay(x)


def student_call(student: nn.Module, cfg: TrainConfig, world: int,
                 device: torch.device) -> nn.Module:
    """The student as the step calls it: under DDP when ``world`` > 1, compiled with
    ``--compile``, replaying CUDA graphs with ``--cuda_graphs student|all``."""
    model = student
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model, mode=cfg.compile_mode)
    if cfg.cuda_graphs in ("student", "all"):
        model = GraphedCall(model, training=True)
    return model


def teacher_call(teacher: nn.Module | None, cfg: TrainConfig) -> nn.Module | None:
    """The teacher as the step calls it: replaying CUDA graphs with ``--cuda_graphs
    teacher|all``, else as is (``None`` without a teacher)."""
    if teacher is not None and cfg.cuda_graphs in ("teacher", "all"):
        return GraphedCall(teacher, training=False)
    return teacher
