"""``--status``: the planned runs not finished yet, their state, and the time left at the
measured wall times (:func:`print_status`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cogrnet.benchmark.results import run_path, wall_minutes
from cogrnet.benchmark.runner import ROW_LOCK, TRAINED
from cogrnet.fileio import lock_holder, read_jsonl

def _total_iterations(run_dir: Path, method: str) -> int | None:
    """The iterations of the run's whole training (both stages of a two-stage method), from
    its ``config.json``; ``None`` without a readable one."""
    from cogrnet.methods.registry import method_class

    try:
        config = json.loads((run_dir / "config.json").read_text())
        return int(config["pre_max_iteration"] + config["self_max_iteration"]
                   if method_class(method).two_stage else config["max_iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_progress(run_dir: Path, method: str) -> tuple[str, float]:
    """What the folder of an unfinished run says: ``(state, fraction of its iterations
    done)``; the state names the process running it (its row lock held)."""
    holder = next((pid for pid in (lock_holder(run_dir, ROW_LOCK), lock_holder(run_dir))
                   if pid is not None), None)  # its benchmark.py's lock, or its train.py's
    running = f"running (process {holder}), " if holder is not None else ""
    if (run_dir / TRAINED).exists():
        return running + "trained, not scored", 1.0
    total = _total_iterations(run_dir, method)
    if total is None:
        return running + "not started", 0.0
    rows = read_jsonl(run_dir / "metrics.jsonl")
    done = max((r.get("iteration", 0) for r in rows), default=0)
    return running + f"iteration {done} of {total}", min(done / max(total, 1), 1.0)


def _scaled_minutes(seed: dict[str, Any], method: str) -> float | None:
    """A resumed seed's wall time (min) scaled to a whole run: its recorded time covers the
    iterations from its last start (the last line of its ``environment.jsonl``) to the end,
    and its scoring; both are scaled by total / (total - start), so it overstates a little.
    ``None`` when its run folder does not say (gone, or another machine's)."""
    if not seed.get("seconds") or not seed.get("run_dir"):
        return None
    run = run_path(seed)
    total = _total_iterations(run, method)
    starts = read_jsonl(run / "environment.jsonl")
    start = starts[-1].get("iteration") if starts else None
    if total is None or not isinstance(start, int) or not 0 <= start < total:
        return None
    return seed["seconds"] / 60 * total / (total - start)


def _row_minutes(entry: dict[str, Any], rows: list[dict[str, Any]]
                 ) -> tuple[float | None, str]:
    """``(minutes, basis)``: a run's wall time at its row's seeds that ran in one go
    (``basis`` ``""``); else at its row's resumed seeds scaled to a whole run
    (:func:`_scaled_minutes`); else the same from the first row of the same method that has
    either; ``basis`` says which (``"mt_coarse's time"``, ``"its resumed runs' time scaled to
    a whole run"``); else ``(None, "")``."""
    others = [r for r in rows if r["method"] == entry["method"] and r["name"] != entry["name"]]
    for row in [entry] + others:
        whose = "its" if row is entry else f"{row['name']}'s"
        if walls := wall_minutes(row):
            return float(np.mean(walls)), "" if row is entry else f"{whose} time"
        scaled = [m for s in row["seeds"] if s.get("resumed")
                  if (m := _scaled_minutes(s, row["method"])) is not None]
        if scaled:
            return float(np.mean(scaled)), f"{whose} resumed runs' time scaled to a whole run"
    return None, ""


def print_status(pending: list[tuple], rows: list[dict[str, Any]],
                 scope: str = "the table") -> None:
    """For each pending (row, seed): its state (:func:`run_progress`) and the minutes left
    at its row's measured wall time (:func:`_row_minutes`: else at its resumed runs' scaled
    to a whole run, else at a measured row of ``rows`` with the same method, said as such);
    then the total for ``scope``."""
    minutes_left, measured, scoring, unmeasured = 0.0, 0, 0, set()
    bases: set[str] = set()
    width = max((len(p[2]) for p in pending), default=0)
    for entry, seed, exp, _, _, run_dir in pending:
        state, done = run_progress(run_dir, entry["method"])
        minutes, basis = _row_minutes(entry, rows)
        if done >= 1.0:
            scoring += 1
            estimate = "its scoring left"
        elif minutes is not None:
            left = minutes * (1.0 - done)
            minutes_left, measured = minutes_left + left, measured + 1
            estimate = f"about {left:.0f} min left"
            if basis:
                bases.add(f"{entry['name']} at {basis}")
                estimate += f" at {basis}"
                if not basis.startswith("its "):
                    estimate += " (same method; its row has none yet)"
        else:
            unmeasured.add(entry["name"])
            estimate = "no measured run of its row or of its method yet"
        print(f"{exp:<{width}}  {state}; {estimate}")
    if not pending:
        print(f"nothing left to run in {scope}")
        return
    parts = []
    if measured:
        at = f" ({'; '.join(sorted(bases))})" if bases else ""
        parts.append(f"{measured} of them about {minutes_left / 60:.1f} h at their rows' "
                     f"measured wall times{at} (one after another; divide by the runs side "
                     "by side)")
    if unmeasured:
        parts.append(f"{len(pending) - measured - scoring} of rows without a measured run of "
                     f"their method yet ({', '.join(sorted(unmeasured))})")
    if scoring:
        parts.append(f"{scoring} trained, their scoring left")
    print(f"{len(pending)} run(s) to go in {scope}: " + "; ".join(parts))
