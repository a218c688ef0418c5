"""The training command line and its resolution into one :class:`TrainConfig`.

The flags are :class:`TrainConfig`'s fields (:func:`cogrnet.train_config.flag`), added in
field order by :func:`build_parser`, with a short explicit list of the flags that are not
one field each (the network's, and cogrnet.cli's shared device/amp/workers/progress/debug);
the speed options are :func:`cogrnet.runtime.add_speed_arguments`'. :func:`resolve_config`
fills in the dataset preset and the method's own defaults, checks the settings in one pass,
and applies the method's rules (:meth:`cogrnet.methods.base.Method.configure`). The result
is written to ``config.json`` and stored in every checkpoint (:meth:`TrainConfig.to_dict`).
"""
from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

import numpy as np

from ..cli import add_amp, add_debug, add_device, add_progress, add_workers
from ..cli import parser as cli_parser
from ..errors import ConfigError
from ..methods.base import Method
from ..methods.losses import DICE_FORMS
from ..methods.registry import METHODS, method_class
from ..networks import network_config
from ..networks.vnet import NORMS
from ..presets import PRESETS, DatasetPreset, custom_preset, dataset_for_root, get_preset
from ..runtime import add_speed_arguments, check_compile, speed_settings
from ..train_config import DEFAULTS, FieldFlag, TrainConfig, check_fields, flag_fields, given_values

#: argparse's container of a group of flags
Group = argparse._ActionsContainer


def build_parser() -> argparse.ArgumentParser:
    """The training command line: the fields' flags in their four groups (with the flags
    that are not one field each after the field :func:`_other_flags` names), then the speed
    options."""
    p = cli_parser("Train CoGRNet (or a baseline) on coarse dual-plane labels or full labels.")
    groups: dict[str, Group] = {}
    others = _other_flags()
    choices = {"method": sorted(METHODS), "dice": DICE_FORMS}  # the methods layer's names
    for ff in _help_order(flag_fields()):
        if ff.flag.group not in groups:
            groups[ff.flag.group] = p.add_argument_group(ff.flag.group)
        ff.add_to(groups[ff.flag.group], choices.get(ff.name))
        if ff.name in others:
            others[ff.name](groups[ff.flag.group])
    add_speed_arguments(p)
    return p


def _help_order(flags: list[FieldFlag]) -> list[FieldFlag]:
    """``flags`` in ``--help`` order: field order, a flag with ``after`` right behind the
    field it names."""
    order = [ff for ff in flags if not ff.flag.after]
    for ff in flags:
        if ff.flag.after:
            at = [o.name for o in order].index(ff.flag.after)
            order.insert(at + 1, ff)
    return order


def _other_flags() -> dict[str, Callable[[Group], Any]]:
    """The flags that are not one field each, by the field whose flag they follow: the
    network's (one nested field) and the shared vocabulary of :mod:`cogrnet.cli`."""
    return {
        "method": _network_flags,
        "out_root": lambda g: (add_device(g), add_amp(g)),
        "deterministic": lambda g: add_workers(g, "patch-building threads",
                                               default=DEFAULTS.num_workers, dest="num_workers"),
        "overwrite": lambda g: (add_progress(g), add_debug(g)),
    }


def _network_flags(group: Group) -> None:
    """The VNet's flags, resolved into the ``network`` field (defaults: network_config's)."""
    vnet = network_config()
    group.add_argument("--n_filters", type=int, default=vnet["n_filters"], help="VNet base filters")
    group.add_argument("--normalization", default=vnet["normalization"], choices=NORMS,
                       help="VNet normalisation layers (the reference: batchnorm)")
    group.add_argument("--dropout", type=float, default=vnet["dropout"], help="VNet dropout rate")


def _schedule(args: argparse.Namespace, preset: DatasetPreset,
              method: type[Method]) -> dict[str, int | None]:
    """The iterations of each stage: the flag, else (on LA) the method's own LA setup, else
    the dataset preset's schedule; two-stage methods have ``max_iteration`` None, the
    others ``pre_max_iteration`` and ``self_max_iteration`` None."""
    own = method.defaults.la_iterations if preset.name == "la" else {}

    def pick(key: str, fallback: int) -> int:
        value = getattr(args, key)
        return value if value is not None else own.get(key, fallback)

    pre = pick("pre_max_iteration", preset.pre_max_iteration)
    self_iterations = pick("self_max_iteration", preset.self_max_iteration)
    if method.two_stage:
        return {"pre_max_iteration": pre, "self_max_iteration": self_iterations,
                "max_iteration": None}
    return {"pre_max_iteration": None, "self_max_iteration": None,
            "max_iteration": pick("max_iteration", pre + self_iterations)}


def data_preset(args: argparse.Namespace) -> tuple[DatasetPreset, dict[str, Any]]:
    """The preset of ``--dataset``; for ``custom``, made from the data under
    ``--root_path`` (:func:`cogrnet.presets.custom_preset` over the train list's volume
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


def _filled_values(args: argparse.Namespace, preset: DatasetPreset,
                   method: type[Method]) -> dict[str, Any]:
    """The ``filled`` fields: their flag when given, else the preset's or the method's."""
    own = method.defaults
    return dict(
        dataset=preset.name,
        root_path=args.root_path or preset.root_path,
        lists_dir=args.lists_dir or preset.lists_dir,
        labelnum=args.labelnum if args.labelnum is not None else preset.labelnum,
        intensity=args.intensity or preset.intensity,
        num_classes=args.num_classes or preset.num_classes,
        patch_size=list(args.patch_size or preset.patch_size),
        batch_size=args.batch_size if args.batch_size is not None else own.batch_size,
        labeled_bs=args.labeled_bs if args.labeled_bs is not None else own.labeled_bs,
        **_schedule(args, preset, method),
        exp=args.exp or f"{preset.name}_{args.method}",
        compile=args.compile or args.compile_mode is not None,
    )


def _other_values(args: argparse.Namespace, preset: DatasetPreset,
                  num_classes: int) -> dict[str, Any]:
    """The fields that no flag of their own sets (:func:`_other_flags`, the speed options
    and the preset's strides)."""
    return dict(
        network=network_config("vnet", 1, num_classes, args.n_filters, args.normalization,
                               args.dropout),
        device=args.device, amp=None if args.amp is None else bool(args.amp),
        num_workers=args.num_workers, progress=not args.no_progress,
        strides=[preset.stride_xy, preset.stride_xy, preset.stride_z],
        **speed_settings(args),
    )


def _conflict(args: argparse.Namespace, two_stage: bool) -> str | None:
    """The first pair of given flags that do not go together, as its one-line message
    (None: they fit)."""
    if two_stage and args.max_iteration is not None:
        return (f"--max_iteration is for single-stage methods; {args.method} takes "
                "--pre_max_iteration and --self_max_iteration")
    if not two_stage and (args.pre_max_iteration is not None
                          or args.self_max_iteration is not None):
        return (f"--pre_max_iteration/--self_max_iteration are for two-stage methods; "
                f"{args.method} takes --max_iteration")
    if args.label_source == "slices" and args.coarse_mode == "two_stream":
        return ("--label_source slices trains on the two annotated slices only; "
                "--coarse_mode two_stream needs the propagated label sets")
    if args.label_source == "slices" and args.confidence_weighting:
        return ("--label_source slices already weights the labeled voxels (1 on the two "
                "annotated slices, 0 elsewhere); drop --confidence_weighting")
    if args.pre_lr_step is not None and not two_stage:
        return (f"--pre_lr_step is for two-stage methods; {args.method} has one stage: use "
                "--lr_step")
    return None


def _checked(args: argparse.Namespace, values: dict[str, Any], two_stage: bool) -> TrainConfig:
    """The one pass of checks over a run's resolved ``values`` (field name -> value), in
    the order their one-line :class:`ConfigError` is reported: flags that do not go
    together, each field's own check (:func:`cogrnet.train_config.check_fields`), the
    speed options with the rest; the record."""
    conflict = _conflict(args, two_stage)
    if conflict:
        raise ConfigError(conflict)
    cfg = TrainConfig(**check_fields(values))
    check_compile(cfg)
    return cfg


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The one place a run's configuration is made: preset defaults, the method's own
    defaults and rules (:meth:`cogrnet.methods.base.Method.configure`), and the checks that
    the arguments fit together (one-line :class:`ConfigError` otherwise)."""
    preset, preset_info = data_preset(args)
    method = method_class(args.method)
    filled = _filled_values(args, preset, method)
    values = {**given_values(args), **filled, **preset_info,
              **_other_values(args, preset, filled["num_classes"])}
    return method.configure(_checked(args, values, method.two_stage))


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """The run's configuration of ``train.py``'s command line ``argv`` (None: sys.argv)."""
    return resolve_config(build_parser().parse_args(argv))
