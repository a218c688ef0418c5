"""A trained model from its self-describing checkpoint (the format, writing and reading:
:mod:`cogrnet.checkpoints`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoints import load_checkpoint
from ..errors import ConfigError, DataError
from ..networks import build_network

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
