"""A trained model from its self-describing checkpoint (written by
:mod:`cogrnet.training.checkpoint`).

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

A checkpoint holds only tensors and plain types (:func:`cogrnet.training.checkpoint.plain`:
NumPy arrays become tensors, NumPy scalars Python numbers, paths strings), so that it loads
with ``torch.load(weights_only=True)``: loading a file someone shared never runs code from
it. ``checksum`` is verified on every load: a file damaged after it was written (a bit
flipped on the disk, a copy cut short) is refused, never used (files written before the
checksum existed load unverified).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError
from ..networks import build_network

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


def load_model(checkpoint: str, ema: bool = False, device: torch.device | str = "cpu"
               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network of a checkpoint and load its student weights (``ema``: the Mean
    Teacher's); returns (model in eval mode on ``device``, checkpoint dict)."""
    ckpt = load_checkpoint(checkpoint)
    try:
        model = build_network(ckpt["config"]["network"])
    except (TypeError, ValueError) as err:
        raise DataError(f"{checkpoint}: cannot rebuild the network ({err})") from None
    if ema:
        if ckpt.get("ema") is None:
            raise ConfigError(f"--ema: {checkpoint} holds no EMA (teacher) weights")
        state = ckpt["ema"]
    else:
        state = ckpt["model"]
    load_weights(model, state, checkpoint)
    return model.to(device).eval(), ckpt


def checkpoint_patch(ckpt: dict[str, Any], path: str) -> tuple[int, int, int]:
    """The training patch ``(X, Y, Z)`` a checkpoint's config records."""
    patch = ckpt["config"].get("patch_size")
    try:
        patch = tuple(int(p) for p in patch)
    except (TypeError, ValueError):
        patch = ()
    if len(patch) != 3 or min(patch) < 1:
        raise DataError(f"{path}: config patch_size {ckpt['config'].get('patch_size')!r} is "
                        "not three positive sizes")
    return patch  # type: ignore[return-value]
