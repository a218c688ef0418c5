"""Prove the CUDA path and measure it at the paper configuration, in a few minutes.

    python scripts/gpu_check.py --root_path data/LA --json model/gpu_check.json

Runs pre-training and self-training steps of CoGRNet (VNet-16, patch 112x112x80, batch 8 =
4 labeled + 4 unlabeled, full labels so that no coarse labels are needed), then the
sliding-window test of one volume with the paper protocol (stride 18/4) and the fast one
(overlap 0.5). Prints it/s (after warm-up), peak GPU memory, the data-wait fraction and
seconds per test volume, and writes them as JSON. ``--reduced`` shrinks everything so the
same code runs on a CPU in seconds (used by the tests).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

try:
    import cogrnet  # noqa: F401  (nothing else: a script outside code/ needs the install)
except ImportError:
    sys.exit("cogrnet is not installed: run `make setup` or `pip install -e .`")

import torch  # noqa: E402

from cogrnet.errors import run_cli  # noqa: E402


def _train(args, exp: str, extra: list[str]) -> dict:
    from cogrnet.training.config import parse_config
    from cogrnet.training.trainer import Trainer

    argv = ["--dataset", args.dataset, "--root_path", args.root_path, "--label_source", "full",
            "--labelnum", str(args.labelnum), "--val_list", "none", "--out_root", args.out_root,
            "--exp", exp, "--overwrite", "--no_progress", "--device", args.device,
            "--save_interval", "1000000", "--image_interval", "1000000",
            "--num_workers", str(args.num_workers), "--nondeterministic", *extra]
    if args.reduced:
        argv += ["--n_filters", "4", "--patch_size", "32", "32", "16"]
    cfg = parse_config(argv)
    if cfg.device != "cpu" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.run()
    timing = trainer.timing
    out = {"args": extra, "wall_seconds": round(time.perf_counter() - t0, 1), "amp": trainer.cfg.amp,
           "stages": {k: {kk: (round(vv, 4) if isinstance(vv, float) else vv)
                          for kk, vv in v.items()} for k, v in timing.items()}}
    if trainer.device.type == "cuda":
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(trainer.device) / 2 ** 30, 2)
    return out


def _test_volume(args, run_dir: Path) -> dict:
    from cogrnet.data.dataset import CaseStore
    from cogrnet.inference.sliding_window import predict_volume
    from cogrnet.networks import build_network
    from cogrnet.runtime import resolve_device
    from cogrnet.checkpoints import load_checkpoint

    device = resolve_device(args.device)
    ckpt = load_checkpoint(run_dir / "best.pth", map_location=device)
    model = build_network(ckpt["config"]["network"]).to(device).eval()
    model.load_state_dict(ckpt["model"])
    store = CaseStore(args.root_path)
    case = store.get(store.split("train")[-1], with_label=False)
    patch = ckpt["config"]["patch_size"]
    amp = device.type == "cuda"
    results = {"volume_shape": list(case.shape)}
    protocols = {"paper_stride": dict(strides=(args.stride_xy, args.stride_xy, args.stride_z)),
                 "fast_overlap_0.5": dict(overlap=0.5)}
    for name, kw in protocols.items():
        for sw in args.sw_batch_sizes:
            predict_volume(model, case.image, patch, sw_batch_size=sw, device=device, amp=amp, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            reps = args.test_repeats
            for _ in range(reps):
                predict_volume(model, case.image, patch, sw_batch_size=sw, device=device, amp=amp, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            results[f"{name}_sw{sw}_seconds"] = round((time.perf_counter() - t0) / reps, 3)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root_path", default="data/LA")
    p.add_argument("--dataset", default="la")
    p.add_argument("--labelnum", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--out_root", default="model")
    p.add_argument("--json", default=None, help="write the results here too")
    p.add_argument("--pre_iters", type=int, default=40)
    p.add_argument("--self_iters", type=int, default=100)
    p.add_argument("--variants", nargs="*", default=["default", "amp", "fp32"],
                   help="training variants: default (the train.py defaults), amp, "
                        "amp_channels_last, fp32, amp_compile")
    p.add_argument("--variant_iters", type=int, default=40, help="self-training iterations of extra variants")
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--stride_xy", type=int, default=18)
    p.add_argument("--stride_z", type=int, default=4)
    p.add_argument("--sw_batch_sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--test_repeats", type=int, default=2)
    p.add_argument("--reduced", action="store_true", help="tiny network and patch (CPU smoke run)")
    p.add_argument("--debug", action="store_true")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    report = {"python": platform.python_version(), "torch": torch.__version__,
              "device": (torch.cuda.get_device_name(0) if torch.cuda.is_available() and a.device != "cpu"
                         else platform.processor() or "cpu"),
              "reduced": a.reduced, "train": {}}
    flags = {"default": [], "amp": ["--amp", "1", "--channels_last", "0"],
             "amp_channels_last": ["--amp", "1", "--channels_last", "1"],
             "fp32": ["--amp", "0", "--channels_last", "0"],
             "amp_compile": ["--amp", "1", "--channels_last", "1", "--compile"]}
    for i, variant in enumerate(a.variants):
        pre, slf = (a.pre_iters, a.self_iters) if i == 0 else (0, a.variant_iters)
        extra = flags[variant] + ["--pre_max_iteration", str(pre), "--self_max_iteration", str(slf)]
        try:
            report["train"][variant] = _train(a, f"gpu_check_{variant}", extra)
        except Exception as err:  # noqa: BLE001 - record and go on to the next measurement
            report["train"][variant] = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps({variant: report["train"][variant]}), flush=True)
    report["test"] = _test_volume(a, Path(a.out_root) / f"gpu_check_{a.variants[0]}")
    text = json.dumps(report, indent=2)
    print(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
