"""What ``--resume`` continues and checks: the run's ``last.pth`` (or the generation
before it) must be an intact checkpoint of the same method and network. The checkpoint
format, writing and reading: :mod:`cogrnet.checkpoints`.
"""
from __future__ import annotations

from pathlib import Path

from ..checkpoints import load_checkpoint
from ..errors import ConfigError, DataError
from ..train_config import TrainConfig

RESUME_KEYS = ("method", "network", "intensity")
_KEY_DEFAULTS = {"intensity": "none"}  # settings older checkpoints do not record


def resume_checkpoint(last: str | Path, previous: str | Path) -> Path | None:
    """The checkpoint ``--resume`` continues: ``last`` (the run's ``last.pth``), or, when it
    is missing (removed by hand, or left by an older version's save), ``previous`` (the generation
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
