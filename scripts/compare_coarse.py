"""Compare two registration outputs case by case (the fused Dice of their summary.json).

    python scripts/compare_coarse.py model/reg_held40_full model/reg_held40_full_refine

Prints the cases both scored, the mean of each, how many cases gain / lose / tie going from
the first to the second, the largest gain and loss with their IDs (none: null), and the cases below a
Dice threshold in each.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from cogrnet.errors import DataError, run_cli


def case_dice(folder: str | Path) -> dict[str, float]:
    """``case ID -> fused Dice`` of the scored cases of a registration output folder."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise DataError(f"{path}: no summary.json (not a code/utils/registration.py output?)")
    try:
        cases = json.loads(path.read_text())["cases"]
        return {c["id"]: float(c["dice"]) for c in cases if c.get("dice") is not None}
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{path}: not a registration summary (no cases with id and dice)") from None


def compare(before: dict[str, float], after: dict[str, float], below: float = 0.8) -> dict[str, Any]:
    """The comparison of two ``case -> Dice`` maps over their common cases."""
    ids = sorted(set(before) & set(after))
    if not ids:
        raise DataError("the two outputs have no scored case in common")
    delta = {i: after[i] - before[i] for i in ids}
    best, worst = max(ids, key=delta.get), min(ids, key=delta.get)
    return {"cases": len(ids),
            "mean_before": round(sum(before[i] for i in ids) / len(ids), 4),
            "mean_after": round(sum(after[i] for i in ids) / len(ids), 4),
            "gain": sum(d > 0 for d in delta.values()), "loss": sum(d < 0 for d in delta.values()),
            "tie": sum(d == 0 for d in delta.values()),
            "largest_gain": [best, round(delta[best], 4)] if delta[best] > 0 else None,
            "largest_loss": [worst, round(delta[worst], 4)] if delta[worst] < 0 else None,
            f"below_{below}_before": sum(before[i] < below for i in ids),
            f"below_{below}_after": sum(after[i] < below for i in ids)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", help="registration output folder (summary.json)")
    p.add_argument("after", help="registration output folder to compare with it")
    p.add_argument("--below", type=float, default=0.8, help="Dice threshold to count cases under")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    print(json.dumps(compare(case_dice(a.before), case_dice(a.after), a.below), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
