"""The training command line and its resolution into one :class:`TrainConfig`.

The argparse groups take their defaults from :data:`cogrnet.train_config.DEFAULTS`;
:func:`resolve_config` fills in the dataset preset and the method's own defaults and
checks (:meth:`cogrnet.methods.base.Method.configure`). The result is written to
``config.json`` and stored in every checkpoint (:meth:`TrainConfig.to_dict`).
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

import numpy as np

from ..config import (IMPORT_RECORD, PRESETS, DatasetPreset, custom_preset,
                      dataset_for_root, get_preset)
from ..errors import ConfigError
from ..methods.base import Method
from ..methods.losses import DICE_FORMS
from ..methods.registry import METHODS, method_class
from ..networks import network_config
from ..cli import add_amp, add_debug, add_device, add_progress, add_switch, add_workers
from ..cli import parser as cli_parser
from ..runtime import add_speed_arguments, check_compile, speed_settings
from ..train_config import DEFAULTS, LABEL_SOURCES, TrainConfig


def _ratio(text: str) -> str | float:
    if text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected 'auto' or a number in (0, 1]") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The training command line: its four groups, then the speed options."""
    p = cli_parser("Train CoGRNet (or a baseline) on coarse dual-plane labels or full labels.")
    for add_group in (_data_arguments, _method_arguments, _optimisation_arguments,
                      _run_arguments):
        add_group(p)
    add_speed_arguments(p)
    return p


def _data_arguments(p: argparse.ArgumentParser) -> None:
    """Where the cases and their labels come from."""
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default=None,
                   help="preset: la, kits, lits, phantom, or custom (your own data from "
                        "code/import_dataset.py: --root_path required; patch from the data) "
                        f"(default: custom when --root_path holds the importer's "
                        f"{IMPORT_RECORD}, else {DEFAULTS.dataset})")
    d.add_argument("--root_path", help="dataset root (default: the preset's)")
    d.add_argument("--lists_dir", help="extra folder holding train/val/test lists (default: the preset's)")
    d.add_argument("--coarse_dir", help="coarse labels for --label_source coarse: the output of "
                        "code/utils/registration.py (default: none)")
    d.add_argument("--labelnum", type=int, help="first N train IDs are labeled (default: the preset's)")
    d.add_argument("--label_source", choices=LABEL_SOURCES, default=DEFAULTS.label_source,
                   help="labels of the labeled cases: coarse (the registration's 3D labels), "
                        "full (the dense ground truth), slices (only the two annotated slices "
                        "of --coarse_dir: the loss ignores every other voxel, nnU-Net's "
                        "'ignore' label); bcp without --coarse_dir: full")
    d.add_argument("--coarse_mode", choices=("fused", "two_stream"), default=DEFAULTS.coarse_mode,
                   help="fused label, or the reference's plane-A / plane-B label sets")
    d.add_argument("--confidence_weighting", action="store_true",
                   help="weight labeled voxels by the registration confidence map")
    d.add_argument("--val_list", default=DEFAULTS.val_list,
                   help="'auto' (val.list beside the lists, else the last 10%% of train; "
                        "none when those cases have no dense label), 'none', or a split name "
                        "/ list path")
    d.add_argument("--no_augment", action="store_true", help="no rot90/flip augmentation")
    d.add_argument("--intensity", choices=("none", "zscore"), default=None,
                   help="per-volume intensity normalisation applied on loading (default: the "
                        "preset's, zscore for every preset; none: the reference; test.py "
                        "reads it from the checkpoint)")



def _method_arguments(p: argparse.ArgumentParser) -> None:
    """The method and its network."""
    m = p.add_argument_group("method and network")
    m.add_argument("--method", default=DEFAULTS.method, choices=sorted(METHODS),
                   help="CoGRNet or a baseline (docs/METHODS.md)")
    m.add_argument("--n_filters", type=int, default=16, help="VNet base filters")
    m.add_argument("--normalization", default="batchnorm",
                   choices=("batchnorm", "groupnorm", "instancenorm", "none"),
                   help="VNet normalisation layers (the reference: batchnorm)")
    m.add_argument("--dropout", type=float, default=0.5, help="VNet dropout rate")
    m.add_argument("--num_classes", type=int, default=None,
                   help="output classes, background included (default: the preset's, 2 for "
                        "a foreground/background target)")
    m.add_argument("--patch_size", type=int, nargs=3, help="X Y Z (default: the preset's)")



def _optimisation_arguments(p: argparse.ArgumentParser) -> None:
    """The schedule, the optimizer and the method's weights."""
    o = p.add_argument_group("optimisation")
    o.add_argument("--batch_size", type=int, default=None,
                   help="(default: the method's own, docs/METHODS.md; 8 for cogrnet/bcp)")
    o.add_argument("--labeled_bs", type=int, default=None, help="(default: the method's own; 4 for cogrnet/bcp)")
    o.add_argument("--pre_max_iteration", type=int, help="two-stage methods (default: the method's LA setup on LA, if any, else the preset's)")
    o.add_argument("--self_max_iteration", type=int,
                   help="two-stage methods (default: the method's LA setup on LA, if any, else the preset's)")
    o.add_argument("--max_iteration", type=int,
                   help="single-stage methods (default: the method's LA setup on LA, else pre + "
                        "self of the preset)")
    o.add_argument("--base_lr", type=float, default=DEFAULTS.base_lr, help="SGD learning rate")
    o.add_argument("--momentum", type=float, default=DEFAULTS.momentum, help="SGD momentum")
    o.add_argument("--weight_decay", type=float, default=DEFAULTS.weight_decay, help="SGD weight decay")
    o.add_argument("--lr_step", type=int, default=DEFAULTS.lr_step, help="lr x lr_gamma every N iterations")
    o.add_argument("--pre_lr_step", type=int, default=None,
                   help="two-stage methods: --lr_step of the pre-training stage (default: "
                        "--lr_step); both count iterations from the start of their stage")
    o.add_argument("--lr_gamma", type=float, default=DEFAULTS.lr_gamma, help="lr factor of --lr_step")
    o.add_argument("--ema_decay", type=float, default=DEFAULTS.ema_decay, help="EMA teacher decay")
    o.add_argument("--u_weight", type=float, default=DEFAULTS.u_weight, help="weight of the unlabeled region")
    o.add_argument("--fa_ratio", type=_ratio, default=DEFAULTS.fa_ratio,
                   help="Focus Area ratio for self-training: 'auto' or a number")
    o.add_argument("--fa_ratio_range", type=float, nargs=2, metavar=("LO", "HI"),
                   default=tuple(DEFAULTS.fa_ratio_range),
                   help="range of the 'auto' Focus Area ratio")
    o.add_argument("--pre_fa_ratio", type=_ratio, default=DEFAULTS.pre_fa_ratio,
                   help="ratio in pre-training (default: 2/3)")
    o.add_argument("--pre_mix_directions", type=int, choices=(1, 2), default=DEFAULTS.pre_mix_directions,
                   help="pre-training mixes per pair of labeled patches: 1 (a into b, the "
                        "reference: 4 labeled patches give 2 mixed images) or 2 (also b into a: "
                        "4 mixed images); docs/METHODS.md gives the measurement")
    o.add_argument("--dice", choices=DICE_FORMS, default=DEFAULTS.dice,
                   help="soft-Dice form of every supervised loss: pooled_squared (the "
                        "reference: one Dice over the batch, squared denominator) or "
                        "per_sample_linear (BCP's: per sample, linear denominator)")
    o.add_argument("--student_forwards", type=int, choices=(1, 2), default=DEFAULTS.student_forwards,
                   help="copy-paste self-training: one student forward over both mixed "
                        "images (the reference) or one per mixed image (BCP's; BatchNorm "
                        "statistics per image set)")
    o.add_argument("--no_pseudo_lcc", action="store_true",
                   help="keep all pseudo-label components (default: largest only)")
    o.add_argument("--consistency", type=float, default=DEFAULTS.consistency, help="mt/uamt weight")
    o.add_argument("--consistency_rampup", type=float, default=DEFAULTS.consistency_rampup,
                   help="mt/uamt consistency ramp-up length as a fraction of max_iteration "
                        "(1.0: the whole run, as UA-MT's code; the uamt uncertainty threshold "
                        "always ramps over the whole run)")
    o.add_argument("--uamt_passes", type=int, default=DEFAULTS.uamt_passes, help="uamt stochastic passes T")
    o.add_argument("--handover", choices=("best", "last"), default=DEFAULTS.handover,
                   help="two-stage methods: self-training starts from the pre-training "
                        "checkpoint chosen on the validation list (best) or from its last "
                        "weights (last: nothing is selected on the validation list)")
    o.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed")
    o.add_argument("--skip_nonfinite", action="store_true",
                   help="skip steps with a non-finite loss instead of stopping")



def _run_arguments(p: argparse.ArgumentParser) -> None:
    """The run folder, the device and how the run is recorded."""
    r = p.add_argument_group("run")
    r.add_argument("--exp", default=None, help="run name: <out_root>/<exp>/ (default: <dataset>_<method>)")
    r.add_argument("--out_root", default=DEFAULTS.out_root,
                   help="folder of the runs: a run is <out_root>/<exp> (not --out_dir: --resume "
                        "and the benchmark tables find runs by name) (default: model/ in "
                        "the repository)")
    add_device(r)
    add_amp(r)
    add_switch(r, "channels_last", None,
               "channels-last 3D memory (default: 1 on CUDA, where it is faster)")
    r.add_argument("--compile", action="store_true", help="torch.compile the student")
    r.add_argument("--nondeterministic", action="store_true",
                   help="allow cudnn benchmark (faster on GPU, not bit-reproducible)")
    add_workers(r, "patch-building threads", default=DEFAULTS.num_workers, dest="num_workers")
    r.add_argument("--val_interval", type=int, default=DEFAULTS.val_interval, help="validate every N iterations")
    r.add_argument("--val_overlap", type=float, default=DEFAULTS.val_overlap, help="sliding-window overlap in validation")
    r.add_argument("--save_interval", type=int, default=DEFAULTS.save_interval, help="save last.pth every N iterations")
    r.add_argument("--image_interval", type=int, default=DEFAULTS.image_interval, help="TensorBoard image snapshots")
    r.add_argument("--resume", action="store_true", help="continue <out_root>/<exp>/last.pth")
    r.add_argument("--overwrite", action="store_true", help="start over in an existing run folder")
    add_progress(r)
    add_debug(r)


def _schedule(args: argparse.Namespace, preset: DatasetPreset,
              method: type[Method]) -> tuple[int | None, int | None, int | None]:
    """``(pre, self, max)`` iterations: the flag, else (on LA) the method's own LA setup,
    else the dataset preset's schedule; two-stage methods have ``max`` None, the others
    ``pre`` and ``self`` None."""
    own = method.defaults.la_iterations if preset.name == "la" else {}

    def pick(key: str, fallback: int) -> int:
        value = getattr(args, key)
        return value if value is not None else own.get(key, fallback)

    pre = pick("pre_max_iteration", preset.pre_max_iteration)
    slf = pick("self_max_iteration", preset.self_max_iteration)
    max_it = pick("max_iteration", pre + slf)
    for name, v in (("--pre_max_iteration", pre), ("--self_max_iteration", slf), ("--max_iteration", max_it)):
        if v < 0:
            raise ConfigError(f"{name} must be >= 0")
    return (pre, slf, None) if method.two_stage else (None, None, max_it)


def data_preset(args: argparse.Namespace) -> tuple[DatasetPreset, dict[str, Any]]:
    """The preset of ``--dataset``; for ``custom``, made from the data under
    ``--root_path`` (:func:`cogrnet.config.custom_preset` over the train list's volume
    shapes, ``labelnum`` from code/import_dataset.py's record). Also returns what the config
    records of how the preset was made (empty for the fixed presets)."""
    preset = get_preset(dataset_for_root(args.dataset, args.root_path, DEFAULTS.dataset))
    if preset.name != "custom":
        return preset, {}
    from ..data.dataset import CaseStore, image_shape
    from ..prepare.import_nifti import read_import_record

    if not args.root_path:
        raise ConfigError("--dataset custom: --root_path is required (the folder "
                          "code/import_dataset.py wrote)")
    store = CaseStore(args.root_path)
    train = store.split("train", args.lists_dir)
    shapes = [image_shape(store.path(i)) for i in train]
    record = read_import_record(args.root_path) or {}
    preset = custom_preset(args.root_path, shapes, record.get("labelnum"), args.patch_size)
    if args.labelnum is None and not preset.labelnum:
        raise ConfigError("--dataset custom: give --labelnum (the number of annotated cases "
                          "leading train.list; no import.json records it)")
    median = [int(v) for v in np.median(np.asarray(shapes), axis=0)]
    source = ("given by --patch_size" if args.patch_size else
              f"LA's {'x'.join(map(str, PRESETS['custom'].patch_size))} shrunk to the median "
              f"volume shape {median} of {len(shapes)} train case(s), multiples of 16")
    return preset, {"patch_source": source, "median_shape": median}


def _check_labels(args: argparse.Namespace, method: type[Method]) -> None:
    """The label and schedule flags that do not go together (one-line errors)."""
    if args.label_source == "slices":
        if args.coarse_mode == "two_stream":
            raise ConfigError("--label_source slices trains on the two annotated slices only; "
                              "--coarse_mode two_stream needs the propagated label sets")
        if args.confidence_weighting:
            raise ConfigError("--label_source slices already weights the labeled voxels (1 on "
                              "the two annotated slices, 0 elsewhere); drop "
                              "--confidence_weighting")
    if args.pre_lr_step is not None and not method.two_stage:
        raise ConfigError(f"--pre_lr_step is for two-stage methods; {args.method} has one "
                          "stage: use --lr_step")
    for name in ("lr_step", "pre_lr_step"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} {value}: must be at least 1")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The one place a run's configuration is made: preset defaults, the method's own
    defaults and rules (:meth:`cogrnet.methods.base.Method.configure`), and the checks that
    the arguments fit together (one-line :class:`ConfigError` otherwise)."""
    preset, preset_info = data_preset(args)
    method = method_class(args.method)
    if method.two_stage and args.max_iteration is not None:
        raise ConfigError(f"--max_iteration is for single-stage methods; {args.method} takes "
                          "--pre_max_iteration and --self_max_iteration")
    if not method.two_stage and (args.pre_max_iteration is not None or args.self_max_iteration is not None):
        raise ConfigError(f"--pre_max_iteration/--self_max_iteration are for two-stage methods; "
                          f"{args.method} takes --max_iteration")
    _check_labels(args, method)
    patch = list(args.patch_size or preset.patch_size)
    bad = [p for p in patch if p < 16 or p % 16]
    if bad:
        raise ConfigError(f"--patch_size {' '.join(map(str, patch))}: each side must be a "
                          "multiple of 16 (VNet has four stride-2 stages)")
    pre, slf, max_it = _schedule(args, preset, method)
    num_classes = args.num_classes or preset.num_classes
    cfg = TrainConfig(
        dataset=preset.name,
        root_path=args.root_path or preset.root_path,
        lists_dir=args.lists_dir or preset.lists_dir,
        coarse_dir=args.coarse_dir,
        labelnum=args.labelnum if args.labelnum is not None else preset.labelnum,
        label_source=args.label_source, coarse_mode=args.coarse_mode,
        confidence_weighting=args.confidence_weighting,
        val_list=args.val_list, augment=not args.no_augment,
        intensity=args.intensity or preset.intensity,
        method=args.method, num_classes=num_classes,
        network=network_config("vnet", 1, num_classes, args.n_filters, args.normalization,
                               args.dropout),
        patch_size=patch,
        batch_size=args.batch_size if args.batch_size is not None else method.defaults.batch_size,
        labeled_bs=args.labeled_bs if args.labeled_bs is not None else method.defaults.labeled_bs,
        pre_max_iteration=pre, self_max_iteration=slf, max_iteration=max_it,
        base_lr=args.base_lr, momentum=args.momentum, weight_decay=args.weight_decay,
        lr_step=args.lr_step, pre_lr_step=args.pre_lr_step, lr_gamma=args.lr_gamma, ema_decay=args.ema_decay,
        u_weight=args.u_weight, fa_ratio=args.fa_ratio, fa_ratio_range=list(args.fa_ratio_range),
        pre_fa_ratio=float(args.pre_fa_ratio), pseudo_lcc=not args.no_pseudo_lcc,
        pre_mix_directions=args.pre_mix_directions, dice=args.dice,
        student_forwards=args.student_forwards,
        consistency=args.consistency, consistency_rampup=args.consistency_rampup,
        uamt_passes=args.uamt_passes, handover=args.handover, seed=args.seed,
        skip_nonfinite=args.skip_nonfinite,
        exp=args.exp or f"{preset.name}_{args.method}", out_root=args.out_root,
        device=args.device, amp=None if args.amp is None else bool(args.amp),
        channels_last=None if args.channels_last is None else bool(args.channels_last),
        compile=args.compile or args.compile_mode is not None,
        **speed_settings(args),
        deterministic=not args.nondeterministic, num_workers=args.num_workers,
        val_interval=max(1, args.val_interval), val_overlap=args.val_overlap,
        save_interval=max(1, args.save_interval), image_interval=max(1, args.image_interval),
        resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
        strides=[preset.stride_xy, preset.stride_xy, preset.stride_z],
        **preset_info,
    )
    check_compile(cfg)
    return method.configure(cfg)


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    return resolve_config(build_parser().parse_args(argv))
