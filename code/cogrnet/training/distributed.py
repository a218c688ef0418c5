"""torchrun / DistributedDataParallel support.

Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1) each rank trains on its share of
the global batch (``batch_size / N`` patches, ``labeled_bs / N`` of them labeled), gradients
are averaged by DDP, BatchNorm statistics stay per rank (plain BatchNorm; DDP broadcasts
rank 0's running statistics at every forward, and the EMA teacher's buffers are broadcast
from rank 0 after each update so the teacher is identical on all ranks). Validation, logging
and checkpoints happen on rank 0. A SIGINT/SIGTERM that reaches any rank stops all of them
after the same iteration.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, Iterator

import torch
import torch.distributed as dist

from ..methods.registry import method_class
from ..train_config import TrainConfig


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


@contextlib.contextmanager
def distributed_context(cfg: TrainConfig) -> Iterator[TrainConfig]:
    """Initialise the process group when launched by torchrun; check the batch splits.
    Yields the config of this process (on CUDA its device is ``cuda:<LOCAL_RANK>``)."""
    world = world_size()
    if world <= 1:
        yield cfg
        return
    method_class(cfg.method).check_world(cfg, world)
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = cfg.device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
        cfg = cfg.replace(device=f"cuda:{local}")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield cfg
        # Tear down together: a rank that finishes first (rank 0 still writes checkpoints)
        # would otherwise close its connections while the others still hold theirs. Not on
        # an error, where the other ranks may never arrive.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _in_group() -> bool:
    """Inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(values: list[float], dtype: torch.dtype, op: Any = None) -> torch.Tensor:
    """``values`` reduced over the ranks (``op``: a ``dist.ReduceOp``, the sum by default;
    on the GPU for NCCL), back on the CPU."""
    t = torch.tensor(values, dtype=dtype)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op)
    return t.cpu()


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module) -> None:
    """Make every rank's buffers equal to rank 0's (no-op outside a process group)."""
    if _in_group():
        for b in module.buffers():
            dist.broadcast(b, src=0)


def average_over_ranks(scalars: dict[str, float]) -> dict[str, float]:
    """Mean of each logged scalar over the ranks (the values of a single process as is)."""
    if not _in_group() or not scalars:
        return scalars
    keys = sorted(scalars)
    t = _all_reduce([float(scalars[k]) for k in keys], torch.float64) / dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (``flag`` as is outside a
    process group). Lets all ranks leave the training loop at the same iteration."""
    if not _in_group():
        return flag
    return bool(_all_reduce([int(flag)], torch.int32, dist.ReduceOp.MAX).item())


def barrier() -> None:
    """Wait for all ranks (no-op outside a process group)."""
    if _in_group():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's copy of a picklable object on every rank (as is outside a process group)."""
    if _in_group():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


class StopFlag:
    """Set by SIGINT/SIGTERM while entered; the loop saves ``last.pth`` and returns at the
    next step. :meth:`agreed` tells every rank when any of them was signalled."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def agreed(self) -> bool:
        """Whether any rank was signalled; read once per iteration and agreed by all ranks,
        so they stop together."""
        stopping = any_rank(self.signal is not None)
        if stopping and self.signal is None:
            self.signal = signal.SIGTERM  # another rank was signalled
        return stopping
