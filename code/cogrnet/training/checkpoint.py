"""Self-describing checkpoints, written atomically; the format, and reading it back:
:mod:`cogrnet.inference.model`. What goes in is made :func:`plain` first, so that the file
loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..fileio import atomic_write
from ..inference.model import CHECKSUM, FORMAT, content_digest, load_checkpoint
from ..train_config import TrainConfig


def atomic_torch_save(obj: Any, path: str | Path, previous: str | Path | None = None) -> None:
    """``torch.save`` through :func:`cogrnet.fileio.atomic_write`: a reader (or a crash at
    any moment) sees the old file or the new one, never half of one; ``previous``: the old
    one is kept there. Serialised in memory first, so that a failed write (a full disk) is
    a one-line :class:`~cogrnet.errors.WriteError` naming ``path``, not an error from
    inside the zip writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    atomic_write(path, lambda f: f.write(data), previous=previous)


RESUME_KEYS = ("method", "network", "intensity")
_KEY_DEFAULTS = {"intensity": "none"}  # settings older checkpoints do not record


def resume_checkpoint(last: str | Path, previous: str | Path) -> Path | None:
    """The checkpoint ``--resume`` continues: ``last`` (the run's ``last.pth``), or, when it
    is missing (a crash between the two renames of a save), ``previous`` (the generation
    before, ``last_prev.pth``); ``None`` when there is neither."""
    for path in map(Path, (last, previous)):
        if path.exists():
            return path
    return None


def _damaged(err: DataError, last: Path, previous: Path) -> DataError:
    """``err`` (``last`` is damaged) with what to do: continue from ``previous`` when it
    loads, else ``--overwrite``."""
    try:
        ok = load_checkpoint(previous, map_location="cpu")
    except DataError:
        return DataError(f"{err}; no good previous checkpoint ({previous.name}): --overwrite "
                         "starts over")
    return DataError(f"{err}; the previous checkpoint {previous} (iteration "
                     f"{ok['iteration']}) is good: move {last.name} away and --resume "
                     "continues from it")


def check_resume(path: str | Path, cfg: TrainConfig, previous: str | Path | None = None) -> None:
    """Before a ``--resume`` run writes anything: ``path`` (the run's ``last.pth``, else
    ``previous``: see :func:`resume_checkpoint`) must be an intact checkpoint of the same
    method and network as ``cfg``; a one-line error naming the file and the differing
    settings otherwise. A damaged ``last.pth`` is refused, naming ``previous`` when that one
    is good. No file: nothing to check."""
    last = Path(path)
    path = resume_checkpoint(last, previous if previous is not None else last)
    if path is None:
        return
    try:
        ckpt = load_checkpoint(path, map_location="cpu")
    except DataError as err:
        if previous is None or path != last or not Path(previous).exists():
            raise
        raise _damaged(err, last, Path(previous)) from None
    old, new = ckpt["config"], cfg.to_dict()
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
    """The checkpoint dict (see the module doc), made :func:`plain`, with the checksum of
    its content."""
    ckpt = plain({"format": FORMAT, "model": model_state, "ema": ema_state,
                  "optimizer": optimizer_state, "iteration": int(iteration), "stage": stage,
                  "config": config, "rng": rng, "extra": extra or {}})
    return {**ckpt, CHECKSUM: content_digest(ckpt)}
