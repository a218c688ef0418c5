"""Devices, seeds, mixed precision and the speed switches: the small runtime helpers every
stage shares."""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cli import add_switch
from .errors import ConfigError
from .train_config import DEFAULTS, TrainConfig


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda``/``cuda:N`` must exist."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine "
                          "(use --device cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device '{name}' (auto, cpu, cuda, cuda:N)") from None


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says
    (often only the architecture, ``x86_64``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _installed(package: str) -> str | None:
    """The installed version of ``package``, ``None`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """What a run's numbers depend on beyond its config: torch's version, the intra-op
    threads (on the CPU a different count changes the float sums, so the same seed takes
    another path), the device and its name, numpy's and scipy's versions (the data's
    augmentation), and on the CPU the processor and the vector instructions torch's kernels
    use (``AVX2``, ``AVX512``: kernels for another set may sum in another order; the same
    seed was measured to take another path on another machine)."""
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "device": str(device), "device_name": name, "python": platform.python_version(),
           "numpy": _installed("numpy"), "scipy": _installed("scipy")}
    if device.type == "cpu":
        env.update(cpu=cpu_model(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    return env


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; on ``deterministic`` ask torch for deterministic kernels
    (CPU runs are then reproducible bit for bit)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def amp_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it, else fp16."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, enabled: bool, cache: bool = True):
    """Autocast context for CUDA mixed precision; a no-op on CPU or when disabled.
    ``cache``: keep the low-precision copies of the weights for the whole context (CUDA
    graphs need it off; the results are the same)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=amp_dtype(device), cache_enabled=cache)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ speed switches
#: ``--sgd_impl`` -> keyword arguments of ``torch.optim.SGD`` (the same update rule)
SGD_IMPLS: dict[str, dict[str, bool]] = {
    "auto": {}, "for_loop": {"foreach": False}, "foreach": {"foreach": True},
    "fused": {"fused": True}}
CUDA_GRAPHS = ("none", "teacher", "student", "all")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The training speed switches (each computes the same step as the plain path); adding
    them twice to one parser is a no-op."""
    if parser.get_default("sgd_impl") is not None:
        return
    g = parser.add_argument_group("speed (the step computes the same; docs/PERFORMANCE.md)")
    g.add_argument("--sgd_impl", choices=tuple(SGD_IMPLS), default=DEFAULTS.sgd_impl,
                   help="SGD kernels: auto (torch's choice), for_loop, foreach or fused")
    g.add_argument("--cuda_graphs", choices=CUDA_GRAPHS, default=DEFAULTS.cuda_graphs,
                   help="replay CUDA graphs of the teacher forward, the student forward + "
                        "backward, or both (CUDA only)")
    add_switch(g, "pin_memory", DEFAULTS.pin_memory,
               "copy batches from page-locked memory, asynchronously (CUDA only)")
    g.add_argument("--compile_mode", choices=COMPILE_MODES, default=DEFAULTS.compile_mode,
                   help="torch.compile mode of the student (implies --compile; default: "
                        "none, --compile alone: torch's default mode)")


def speed_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The speed switches of ``args`` as :class:`cogrnet.train_config.TrainConfig` fields."""
    return {"sgd_impl": args.sgd_impl, "cuda_graphs": args.cuda_graphs,
            "pin_memory": bool(args.pin_memory), "compile_mode": args.compile_mode}


def check_compile(cfg: TrainConfig) -> None:
    """CUDA graphs of the student and ``torch.compile`` do not go together."""
    if cfg.cuda_graphs in ("student", "all") and cfg.compile:
        raise ConfigError(f"--cuda_graphs {cfg.cuda_graphs} and --compile both rewrite the "
                          "student's step; use one of them (--cuda_graphs teacher goes with "
                          "--compile)")


def check_speed(cfg: TrainConfig, device: torch.device, world: int = 1) -> None:
    """The speed switches that need a CUDA device or a single process; one-line errors."""
    graphs = cfg.cuda_graphs
    if graphs != "none" and device.type != "cuda":
        raise ConfigError(f"--cuda_graphs {graphs}: CUDA graphs need a CUDA device (this run is "
                          f"on {device}); use --cuda_graphs none")
    if cfg.pin_memory and device.type != "cuda":
        raise ConfigError(f"--pin_memory 1: page-locked copies are for a CUDA device (this run "
                          f"is on {device}); use --pin_memory 0")
    if graphs in ("student", "all") and world > 1:
        raise ConfigError(f"--cuda_graphs {graphs}: the student graph does not go with several "
                          "processes (DistributedDataParallel); use --cuda_graphs teacher")


def sgd_options(impl: str) -> dict[str, bool]:
    """``torch.optim.SGD`` keyword arguments of ``--sgd_impl``."""
    try:
        return dict(SGD_IMPLS[impl])
    except KeyError:
        raise ConfigError(f"--sgd_impl {impl}: unknown (choose from "
                          f"{', '.join(SGD_IMPLS)})") from None
