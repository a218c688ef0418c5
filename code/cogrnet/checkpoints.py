"""Self-describing checkpoints: the format, writing (atomically, with a checksum) and
reading back, in one place; training writes them, inference and training read them.

A checkpoint is a dict::

    {"format": "cogrnet-checkpoint-v1",
     "model": state_dict,            # the student
     "ema": state_dict | None,       # the Mean Teacher, when the method has one
     "optimizer": state_dict | None,
     "iteration": int,               # global iterations done (pre-training + self-training)
     "stage": str,                   # the stage it was written in: "pre" | "self" (two-stage
                                     # methods) or "train" (single-stage ones)
     "config": dict,                 # the resolved run config; config["network"] rebuilds it
     "rng": None,                    # kept for the format; exact resume needs no RNG state
                                     # (every draw is seeded by seed and iteration)
     "extra": dict,                  # method state (e.g. the Focus Area ratio), metrics
     "checksum": "sha256:..."}       # content_digest() of everything else

``config["network"]`` is :func:`cogrnet.networks.network_config`'s dict and
``config["patch_size"]`` the training patch ``[X, Y, Z]``.

A checkpoint holds only tensors and plain types (:func:`plain`:
NumPy arrays become tensors, NumPy scalars Python numbers, paths strings), so that it loads
with ``torch.load(weights_only=True)``: loading a file someone shared never runs code from
it. ``checksum`` is verified on every load: a file damaged after it was written (a bit
flipped on the disk, a copy cut short) is refused, never used (files written before the
checksum existed load unverified).
"""
from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .fileio import atomic_write

FORMAT = "cogrnet-checkpoint-v1"
CHECKSUM = "checksum"


def _feed(h: Any, obj: Any) -> None:
    """Add ``obj`` (tensors and plain values, nested) to the hash ``h``, with its types,
    shapes and keys, so that equal content gives equal digests whatever the device or the
    memory layout."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def content_digest(ckpt: dict[str, Any]) -> str:
    """``"sha256:<hex>"`` of a checkpoint's content (every entry but ``checksum``)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ckpt.items() if k != CHECKSUM})
    return f"sha256:{h.hexdigest()}"


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; a clear :class:`DataError` for a missing, corrupt
    (truncated, checksum not matching) or foreign file."""
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
    if CHECKSUM in ckpt and content_digest(ckpt) != ckpt[CHECKSUM]:
        raise DataError(f"{path}: corrupt checkpoint (its content does not match the checksum "
                        "it was written with: the file was damaged after writing)")
    for key in ("model", "config"):
        if key not in ckpt:
            raise DataError(f"{path}: checkpoint lacks '{key}'")
    if "network" not in ckpt["config"] or "patch_size" not in ckpt["config"]:
        raise DataError(f"{path}: checkpoint config lacks 'network' or 'patch_size'")
    return ckpt


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
