"""Self-describing checkpoints, written atomically.

A checkpoint is a dict::

    {"format": "cogrnet-checkpoint-v1",
     "model": state_dict,            # the student
     "ema": state_dict | None,       # the Mean Teacher, when the method has one
     "optimizer": state_dict | None,
     "iteration": int,               # global iterations done (pre-training + self-training)
     "stage": "pre" | "self" | "single",
     "config": dict,                 # the resolved run config; config["network"] rebuilds it
     "rng": {...} | None,            # Python / NumPy / torch RNG states, for exact resume
     "extra": dict}                  # method state (e.g. the Focus Area ratio), metrics

``config["network"]`` is :func:`cogrnet.networks.network_config`'s dict and
``config["patch_size"]`` the training patch ``[X, Y, Z]``.

A checkpoint holds only tensors and plain types (:func:`plain`: NumPy arrays become
tensors, NumPy scalars Python numbers, paths strings), so that it loads with
``torch.load(weights_only=True)``: loading a file someone shared never runs code from it.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..fileio import atomic_write

FORMAT = "cogrnet-checkpoint-v1"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`cogrnet.fileio.atomic_write`: a reader (or a crash at
    any moment) sees the old file or the new one, never half of one."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; a clear :class:`DataError` for a missing, corrupt or
    foreign file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    import pickle

    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # an object weights_only will not build names a global (a class or function to
        # import and call); any other unpickling failure is a damaged file
        detail = next((ln.strip() for ln in str(err).splitlines()
                       if "Unsupported global" in ln or "GLOBAL" in ln), None)
        if detail is None:
            raise DataError(f"{path}: corrupt or unreadable checkpoint (UnpicklingError)"
                            ) from None
        raise DataError(f"{path}: refused: the checkpoint holds objects other than tensors "
                        f"and plain types, and loading it could run code ({detail[:160]})"
                        ) from None
    except Exception as err:  # noqa: BLE001 - any other failure means a bad file
        raise DataError(f"{path}: corrupt or unreadable checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataError(f"{path}: not a CoGRNet checkpoint (expected format {FORMAT})")
    for key in ("model", "config"):
        if key not in ckpt:
            raise DataError(f"{path}: checkpoint lacks '{key}'")
    if "network" not in ckpt["config"] or "patch_size" not in ckpt["config"]:
        raise DataError(f"{path}: checkpoint config lacks 'network' or 'patch_size'")
    return ckpt


def load_weights(module: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``load_state_dict`` with a one-line error when the architectures differ."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        # the first line is only "Error(s) in loading state_dict for X:"; the next one says
        # which parameter differs (size mismatch / missing / unexpected keys)
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "RuntimeError")
        if len(detail) > 200:
            detail = detail[:197] + "..."
        raise DataError(f"{path}: weights do not fit the network ({detail})") from None


RESUME_KEYS = ("method", "network", "intensity")
_KEY_DEFAULTS = {"intensity": "none"}  # settings older checkpoints do not record


def check_resume(path: str | Path, cfg: dict[str, Any]) -> None:
    """Before a ``--resume`` run writes anything: ``path`` (the run's ``last.pth``) must be a
    readable checkpoint of the same method and network as ``cfg``; a one-line error naming
    the file and the differing settings otherwise. No file: nothing to check."""
    path = Path(path)
    if not path.exists():
        return
    old = load_checkpoint(path, map_location="cpu")["config"]
    diffs = []
    for key in RESUME_KEYS:
        a, b = old.get(key, _KEY_DEFAULTS.get(key)), cfg.get(key, _KEY_DEFAULTS.get(key))
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
