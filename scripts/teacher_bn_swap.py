"""A diagnostic for a Mean Teacher run: its EMA teacher's weights with the student's
BatchNorm running statistics, written as a checkpoint that ``code/test.py --ema`` scores.

UA-MT runs its teacher's passes in train mode (as UA-MT's code does), so the teacher's
running statistics mostly come from its own passes on noisy unlabeled patches; MT's
teacher, in eval mode, keeps an EMA of the student's. Scoring the teacher's weights once
with its own statistics (``bench_test_ema``) and once with the student's tells whether
those statistics, and not the weights, are what sets it apart from its student::

    python scripts/teacher_bn_swap.py model/RUN/last.pth model/RUN/probe_bn/last_student_bn.pth
    python code/test.py ... --checkpoint model/RUN/probe_bn/last_student_bn.pth --ema \\
        --out_dir model/RUN/probe_bn/test_ema

Only buffers change (running mean, variance and batch count, named by the network the
checkpoint's config rebuilds); every parameter of the teacher and of the student is kept.
The new checkpoint records what was done in ``extra["teacher_bn_swap"]``; its optimizer
state is dropped (it is for scoring, not for training on), and it is written outside the
run's folder, where ``--resume`` and the benchmark would read it.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from cogrnet.checkpoints import atomic_torch_save, load_checkpoint, make_checkpoint
from cogrnet.errors import ConfigError, DataError, run_cli
from cogrnet.networks import build_network


def buffer_names(config: dict[str, Any], path: str | Path) -> list[str]:
    """The state-dict keys of the buffers of the network ``config["network"]`` rebuilds."""
    try:
        net = build_network(config["network"])
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: cannot rebuild the network ({err})") from None
    return [name for name, _ in net.named_buffers()]


def teacher_with_student_buffers(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """``ckpt`` (a checkpoint dict) with its EMA teacher's buffers replaced by the student's;
    parameters untouched. A :class:`ConfigError` when it has no teacher."""
    if ckpt.get("ema") is None:
        raise ConfigError(f"{path}: holds no EMA (teacher) weights; nothing to swap")
    names = buffer_names(ckpt["config"], path)
    missing = [n for n in names if n not in ckpt["model"] or n not in ckpt["ema"]]
    if missing:
        raise DataError(f"{path}: weights lack the buffer {missing[0]!r} of the network its "
                        "config describes")
    ema = dict(ckpt["ema"])
    for name in names:
        ema[name] = ckpt["model"][name].clone()
    extra = {**ckpt.get("extra", {}),
             "teacher_bn_swap": {"source": str(path), "buffers": len(names),
                                 "note": "EMA parameters with the student's buffers; a "
                                         "diagnostic, not a training checkpoint"}}
    return make_checkpoint(ckpt["model"], ckpt["config"], ckpt["iteration"], ckpt["stage"],
                           ema_state=ema, optimizer_state=None, extra=extra)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a Mean Teacher run's checkpoint (last.pth)")
    p.add_argument("out", help="the checkpoint to write (not beside the run's own .pth files)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    src, out = Path(a.checkpoint), Path(a.out)
    if out.parent.resolve() == src.parent.resolve():
        raise ConfigError(f"{out}: write the swapped checkpoint into its own folder, not "
                          "beside the run's checkpoints (resume and the benchmark read those)")
    swapped = teacher_with_student_buffers(load_checkpoint(src), src)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(swapped, out)
    print(f"{out}: teacher weights of {src} with the student's "
          f"{swapped['extra']['teacher_bn_swap']['buffers']} buffers")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
