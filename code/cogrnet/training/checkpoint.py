"""Self-describing checkpoints, written atomically; the format, and reading it back:
:mod:`cogrnet.inference.model`. What goes in is made :func:`plain` first, so that the file
loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..fileio import atomic_write
from ..inference.model import FORMAT, load_checkpoint
from ..train_config import TrainConfig


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`cogrnet.fileio.atomic_write`: a reader (or a crash at
    any moment) sees the old file or the new one, never half of one."""
    atomic_write(path, lambda f: torch.save(obj, f))


RESUME_KEYS = ("method", "network", "intensity")
_KEY_DEFAULTS = {"intensity": "none"}  # settings older checkpoints do not record


def check_resume(path: str | Path, cfg: TrainConfig) -> None:
    """Before a ``--resume`` run writes anything: ``path`` (the run's ``last.pth``) must be a
    readable checkpoint of the same method and network as ``cfg``; a one-line error naming
    the file and the differing settings otherwise. No file: nothing to check."""
    path = Path(path)
    if not path.exists():
        return
    old, new = load_checkpoint(path, map_location="cpu")["config"], cfg.to_dict()
    diffs = []
    for key in RESUME_KEYS:
        a, b = old.get(key, _KEY_DEFAULTS.get(key)), new[key]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k} {a.get(k)!r} (checkpoint) vs {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            diffs.append(f"{key} {a!r} (checkpoint) vs {b!r}")
    if diffs:
        raise ConfigError(f"--resume: {path} was written with other settings: "
                          f"{'; '.join(diffs)} (pass the run's own settings, or --overwrite "
                          "to start over)")


def plain(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with only what ``torch.load(weights_only=True)`` rebuilds: tensors, Python
    numbers, strings, ``None`` and dicts/lists/tuples of them. NumPy arrays (e.g. RNG
    states) become tensors, NumPy scalars Python numbers, paths strings; anything else is a
    ``TypeError`` naming where it sits (``where``), raised before a file is written."""
    if isinstance(obj, np.generic):  # before float: np.float64 is a float subclass
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, torch.Tensor,
                                       torch.Size, torch.dtype, torch.device)):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        items = {k: plain(v, f"{where}.{k}") for k, v in obj.items()}
        if type(obj) in (dict, OrderedDict) and all(items[k] is v for k, v in obj.items()):
            return obj  # already plain: a state_dict keeps its type and version metadata
        return items
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: {type(obj).__name__} cannot go into a checkpoint (only tensors "
                    "and plain types load without running code)")


def make_checkpoint(model_state: dict, config: dict, iteration: int, stage: str,
                    ema_state: dict | None = None, optimizer_state: dict | None = None,
                    rng: dict | None = None, extra: dict | None = None) -> dict[str, Any]:
    """The checkpoint dict (see the module doc), made :func:`plain`."""
    return plain({"format": FORMAT, "model": model_state, "ema": ema_state,
                  "optimizer": optimizer_state, "iteration": int(iteration), "stage": stage,
                  "config": config, "rng": rng, "extra": extra or {}})
