"""Score settings of the plane fusion and the coarse-label refinement on stored registration
outputs.

Both act on the two per-plane labels that ``code/utils/registration.py`` stores
(``label_a``/``label_b``), so a sweep needs no new registration: for each case of
``--coarse_dir`` with a full label under ``--root_path``, fuse and refine with every setting
and report the mean and the worst Dice against the full label, fused and refined. A setting
names fields of ``FusionParams`` (``gamma``, ``threshold``, ``clip``) and of ``RefineParams``.
Choose the settings on one set of IDs and report on another (docs/REGISTRATION.md).

    python scripts/refine_sweep.py --root_path data/LA --coarse_dir model/reg_tune40_full \\
        --set smooth=0,1,2 sigma_per_slice=0,0.1 gamma=0.9,0.95
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Sequence

import numpy as np

from cogrnet.annotation import (DPA, FusionParams, RefineParams, dice, fusion_score,
                                label_from_score, read_coarse_label, refine_score)
from cogrnet.data.dataset import CaseStore
from cogrnet.errors import ConfigError, run_cli

REFINE_FIELDS = {f.name for f in fields(RefineParams)} - {"method"}
FUSION_FIELDS = {"gamma", "threshold", "clip"}  # tau and method do not change the sdf label
FIELDS = sorted(REFINE_FIELDS | FUSION_FIELDS)


def split_setting(setting: dict[str, float]) -> tuple[FusionParams, RefineParams]:
    """One combination -> the fusion and the refinement settings it names."""
    fusion = {k: v for k, v in setting.items() if k in FUSION_FIELDS}
    refine = {k: v for k, v in setting.items() if k in REFINE_FIELDS}
    return FusionParams(**fusion), RefineParams(method="intensity", **refine)


def parse_settings(items: Sequence[str]) -> list[dict[str, float]]:
    """``["smooth=0,2", "band=3"]`` -> every combination as keyword dicts."""
    axes: list[list[tuple[str, float]]] = []
    for item in items:
        name, _, values = item.partition("=")
        if name not in FIELDS or not values:
            raise ConfigError(f"--set {item}: expected NAME=V1,V2 with NAME one of "
                              f"{', '.join(FIELDS)}")
        cast = int if name == "bins" else float
        try:
            axes.append([(name, cast(v)) for v in values.split(",")])
        except ValueError:
            raise ConfigError(f"--set {item}: values must be numbers") from None
    return [dict(combo) for combo in itertools.product(*axes)] or [{}]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root_path", required=True, help="dataset root with the full labels")
    p.add_argument("--coarse_dir", required=True, help="registration.py --out_dir")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=V1,V2",
                   help="FusionParams / RefineParams values to combine (default: the defaults only)")
    p.add_argument("--out", default=None, help="also write the table as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = parse_settings(args.set)
    params = [split_setting(s) for s in settings]
    summary_path = Path(args.coarse_dir) / "summary.json"
    if not summary_path.is_file():
        raise ConfigError(f"--coarse_dir: {summary_path} not found (the output folder of "
                          "code/utils/registration.py)")
    summary = json.loads(summary_path.read_text())
    ids = [c["id"] for c in summary["cases"] if c["status"] == "ok"]
    store = CaseStore(args.root_path, cache=False)
    fused: list[list[float]] = [[] for _ in params]
    refined: list[list[float]] = [[] for _ in params]
    for case_id in ids:
        case = store.get(case_id, with_label=True)
        coarse = read_coarse_label(args.coarse_dir, case_id, expected_shape=case.shape)
        dpa = DPA(coarse.annotation, coarse.axes, coarse.indices)
        for k, (fusion, refine) in enumerate(params):
            score = fusion_score(coarse.label_a, coarse.label_b, dpa, fusion)
            label = label_from_score(score, dpa, fusion.tau)[0]
            fused[k].append(dice(label, case.label))
            out = refine_score(case.image, score, dpa, refine, case.spacing, fusion.tau)
            refined[k].append(dice(out[0] if out is not None else label, case.label))
    rows = [{"setting": s, "fused_mean_dice": round(float(np.mean(f)), 4),
             "fused_min_dice": round(float(np.min(f)), 4),
             "mean_dice": round(float(np.mean(r)), 4), "min_dice": round(float(np.min(r)), 4)}
            for s, f, r in zip(settings, fused, refined)]
    print(f"{len(ids)} cases of {args.coarse_dir}; mean / min Dice, fused then refined")
    for row in rows:
        print(f"{row['fused_mean_dice']:.4f} / {row['fused_min_dice']:.4f}   "
              f"{row['mean_dice']:.4f} / {row['min_dice']:.4f}   {row['setting'] or 'defaults'}")
    if args.out:
        Path(args.out).write_text(json.dumps({"ids": ids, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
