"""The resolved configuration of one training run, as one typed record, and its flags.

:func:`cogrnet.training.config.resolve_config` builds it from the command line (dataset
preset, method defaults and checks applied, in that one place); the trainer and the
methods read its fields. It is written as ``config.json`` beside the checkpoints and stored
inside each of them (:meth:`TrainConfig.to_dict`, plain JSON); ``config["network"]`` of a
stored one rebuilds the network (:func:`cogrnet.networks.build_network`; the dict is
:func:`cogrnet.networks.network_config`'s).

Each field that is a ``train.py`` flag of its own is declared by :func:`flag`: its default
(the command line's, which ``train.py --help`` shows), its group, help, choices and check
sit in the field (:class:`Flag`), and :func:`cogrnet.training.config.build_parser` makes
the command line from them. The values a dataset preset or a method sets are filled in by
the resolution.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields, replace
from types import UnionType
from typing import Any, Callable, Sequence, Union, get_args, get_origin, get_type_hints

from .cli import add_switch
from .errors import ConfigError
from .presets import IMPORT_RECORD, MODEL_DIR


#: the labels a labeled case trains on (``--label_source``)
LABEL_SOURCES = ("coarse", "full", "slices")
#: the preset of a run whose ``--dataset`` is not given and whose root was not imported
DEFAULT_DATASET = "la"
#: the key of a field's :class:`Flag` in its metadata
FLAG = "flag"
#: train.py's argument groups (``--help`` lists them in the order of the fields)
DATA, MODEL, OPTIMISATION, RUN = "data", "method and network", "optimisation", "run"


def ratio(text: str) -> str | float:
    """argparse type of the Focus Area ratios: ``auto`` or a number in (0, 1]."""
    if text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected 'auto' or a number in (0, 1]") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return v


# ------------------------------------------------------------------ checks of one value
# each takes (the flag, the resolved value) and returns the value to keep, or raises a
# one-line ConfigError
def at_least_one(option: str, value: int | None) -> int | None:
    """A step length: unset (None) or at least 1."""
    if value is not None and value < 1:
        raise ConfigError(f"{option} {value}: must be at least 1")
    return value


def not_negative(option: str, value: int | None) -> int | None:
    """An iteration count: unset (None) or at least 0."""
    if value is not None and value < 0:
        raise ConfigError(f"{option} must be >= 0")
    return value


def sides_of_16(option: str, patch: list[int]) -> list[int]:
    """A patch (X, Y, Z voxels) whose every side is a positive multiple of 16."""
    if any(p < 16 or p % 16 for p in patch):
        raise ConfigError(f"{option} {' '.join(map(str, patch))}: each side must be a "
                          "multiple of 16 (VNet has four stride-2 stages)")
    return patch


def every_one_or_more(option: str, value: int) -> int:
    """An interval in iterations: 0 or less means every iteration (1)."""
    return max(1, value)


@dataclass(frozen=True)
class Flag:
    """How a :class:`TrainConfig` field appears on ``train.py``'s command line.

    ``option``: the flag when it is not ``--<field>`` (for a field that is on by default:
    the plain flag that turns it off). ``parse``: the argparse type when the field's
    annotation does not give it. ``filled``: the resolution sets the field (from the dataset
    preset, the method or other flags), so a valued flag defaults to None, "not given".
    ``check``: ``(flag, resolved value) -> value kept``, a one-line :class:`ConfigError`
    for a bad one. ``after``: ``--help`` lists the flag right after this field's, not in
    field order."""

    group: str
    help: str
    option: str | None = None
    choices: Sequence[Any] | None = None
    parse: Callable[[str], Any] | None = None
    metavar: tuple[str, ...] | None = None
    filled: bool = False
    check: Callable[[str, Any], Any] | None = None
    after: str | None = None


def flag(default: Any, group: str, help: str, *, option: str | None = None,
         choices: Sequence[Any] | None = None, parse: Callable[[str], Any] | None = None,
         metavar: tuple[str, ...] | None = None, filled: bool = False,
         check: Callable[[str, Any], Any] | None = None, after: str | None = None) -> Any:
    """A :class:`TrainConfig` field with ``default`` that is a ``train.py`` flag
    (:class:`Flag` holds the rest); a list default is copied for each record."""
    spec = Flag(group, help, option, choices, parse, metavar, filled, check, after)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={FLAG: spec})
    return field(default=default, metadata={FLAG: spec})


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings (frozen; :meth:`replace` makes a changed copy)."""

    # ---------------------------------------------------------------- data
    dataset: str = flag(
        DEFAULT_DATASET, DATA, filled=True,
        help="preset: la, kits, lits, phantom, or custom (your own data from "
             "code/import_dataset.py: --root_path required; patch from the data) "
             f"(default: custom when --root_path holds the importer's {IMPORT_RECORD}, "
             f"else {DEFAULT_DATASET})")
    root_path: str = flag("", DATA, "dataset root (default: the preset's)", filled=True)
    lists_dir: str | None = flag(
        None, DATA, "extra folder holding train/val/test lists (default: the preset's)",
        filled=True)
    coarse_dir: str | None = flag(
        None, DATA, "coarse labels for --label_source coarse: the output of "
                    "code/utils/registration.py (default: none)")
    labelnum: int = flag(0, DATA, "first N train IDs are labeled (default: the preset's)",
                         filled=True)
    label_source: str = flag(
        "coarse", DATA, choices=LABEL_SOURCES,
        help="labels of the labeled cases: coarse (the registration's 3D labels), full (the "
             "dense ground truth), slices (only the two annotated slices of --coarse_dir: "
             "the loss ignores every other voxel, nnU-Net's 'ignore' label); bcp without "
             "--coarse_dir: full")
    coarse_mode: str = flag("fused", DATA, choices=("fused", "two_stream"),
                            help="fused label, or the reference's plane-A / plane-B label sets")
    confidence_weighting: bool = flag(
        False, DATA, "weight labeled voxels by the registration confidence map")
    val_list: str = flag(
        "auto", DATA, "'auto' (val.list beside the lists, else the last 10%% of train; none "
                      "when those cases have no dense label), 'none', or a split name / list "
                      "path")
    augment: bool = flag(True, DATA, "no rot90/flip augmentation", option="--no_augment")
    intensity: str = flag(
        "zscore", DATA, choices=("none", "zscore"), filled=True,
        help="per-volume intensity normalisation applied on loading (default: the preset's, "
             "zscore for every preset; none: the reference; test.py reads it from the "
             "checkpoint)")
    # ---------------------------------------------------------------- method and network
    # (the choices of --method are cogrnet.methods.registry's)
    method: str = flag("cogrnet", MODEL, "CoGRNet or a baseline (docs/METHODS.md)")
    num_classes: int = flag(
        2, MODEL, "output classes, background included (default: the preset's, 2 for a "
                  "foreground/background target)", filled=True)
    network: dict[str, Any] = field(default_factory=dict)  # cogrnet.networks.network_config
    patch_size: list[int] = flag([112, 112, 80], MODEL, "X Y Z (default: the preset's)",
                                 filled=True, check=sides_of_16)  # voxels
    # ---------------------------------------------------------------- optimisation
    batch_size: int = flag(
        8, OPTIMISATION, "(default: the method's own, docs/METHODS.md; 8 for cogrnet/bcp)",
        filled=True)
    labeled_bs: int = flag(4, OPTIMISATION, "(default: the method's own; 4 for cogrnet/bcp)",
                           filled=True)
    # two-stage methods have pre_ and self_max_iteration, the others max_iteration (the
    # other ones None)
    pre_max_iteration: int | None = flag(
        None, OPTIMISATION, "two-stage methods (default: the method's LA setup on LA, if "
                            "any, else the preset's)", filled=True, check=not_negative)
    self_max_iteration: int | None = flag(
        None, OPTIMISATION, "two-stage methods (default: the method's LA setup on LA, if "
                            "any, else the preset's)", filled=True, check=not_negative)
    max_iteration: int | None = flag(
        None, OPTIMISATION, "single-stage methods (default: the method's LA setup on LA, "
                            "else pre + self of the preset)", filled=True, check=not_negative)
    base_lr: float = flag(0.01, OPTIMISATION, "SGD learning rate")
    momentum: float = flag(0.9, OPTIMISATION, "SGD momentum")
    weight_decay: float = flag(1e-4, OPTIMISATION, "SGD weight decay")
    lr_step: int = flag(2500, OPTIMISATION, "lr x lr_gamma every N iterations",
                        check=at_least_one)  # of a stage
    pre_lr_step: int | None = flag(
        None, OPTIMISATION, "two-stage methods: --lr_step of the pre-training stage "
                            "(default: --lr_step); both count iterations from the start of "
                            "their stage", check=at_least_one)
    lr_gamma: float = flag(0.1, OPTIMISATION, "lr factor of --lr_step")
    ema_decay: float = flag(0.99, OPTIMISATION, "EMA teacher decay")
    u_weight: float = flag(0.5, OPTIMISATION, "weight of the unlabeled region")  # copy-paste
    fa_ratio: float | str = flag(
        "auto", OPTIMISATION, "Focus Area ratio for self-training: 'auto' or a number",
        parse=ratio)
    fa_ratio_range: list[float] = flag([0.6, 0.733], OPTIMISATION,
                                       "range of the 'auto' Focus Area ratio",
                                       metavar=("LO", "HI"))
    pre_fa_ratio: float = flag(2 / 3, OPTIMISATION, "ratio in pre-training (default: 2/3)",
                               parse=ratio)  # of the pre-training cuboid
    pseudo_lcc: bool = flag(True, OPTIMISATION,
                            "keep all pseudo-label components (default: largest only)",
                            option="--no_pseudo_lcc", after="student_forwards")
    pre_mix_directions: int = flag(
        1, OPTIMISATION, choices=(1, 2),
        help="pre-training mixes per pair of labeled patches: 1 (a into b, the reference: 4 "
             "labeled patches give 2 mixed images) or 2 (also b into a: 4 mixed images); "
             "docs/METHODS.md gives the measurement")
    # (the choices of --dice are cogrnet.methods.losses's)
    dice: str = flag(
        "pooled_squared", OPTIMISATION,
        "soft-Dice form of every supervised loss: pooled_squared (the reference: one Dice "
        "over the batch, squared denominator) or per_sample_linear (BCP's: per sample, "
        "linear denominator)")
    student_forwards: int = flag(
        1, OPTIMISATION, choices=(1, 2),
        help="copy-paste self-training: one student forward over both mixed images (the "
             "reference) or one per mixed image (BCP's; BatchNorm statistics per image set)")
    consistency: float = flag(0.1, OPTIMISATION, "mt/uamt weight")
    consistency_rampup: float = flag(
        1.0, OPTIMISATION, "mt/uamt consistency ramp-up length as a fraction of "
                           "max_iteration (1.0: the whole run, as UA-MT's code; the uamt "
                           "uncertainty threshold always ramps over the whole run)")
    uamt_passes: int = flag(8, OPTIMISATION, "uamt stochastic passes T")
    handover: str = flag(
        "best", OPTIMISATION, choices=("best", "last"),
        help="two-stage methods: self-training starts from the pre-training checkpoint "
             "chosen on the validation list (best) or from its last weights (last: nothing "
             "is selected on the validation list)")
    seed: int = flag(1337, OPTIMISATION, "random seed")
    skip_nonfinite: bool = flag(False, OPTIMISATION,
                                "skip steps with a non-finite loss instead of stopping")
    # ---------------------------------------------------------------- run
    exp: str = flag("", RUN, "run name: <out_root>/<exp>/ (default: <dataset>_<method>)",
                    filled=True)
    out_root: str = flag(
        str(MODEL_DIR), RUN, "folder of the runs: a run is <out_root>/<exp> (not --out_dir: "
                             "--resume and the benchmark tables find runs by name) (default: "
                             "model/ in the repository)")
    # device, amp, num_workers and progress are flags of cogrnet.cli's shared vocabulary
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    amp: bool | None = None              # None: on for CUDA (the trainer decides)
    channels_last: bool | None = flag(
        None, RUN, "channels-last 3D memory (default: 1 on CUDA, where it is faster)")
    # also on with --compile_mode
    compile: bool = flag(False, RUN, "torch.compile the student", filled=True)
    # the speed switches (cogrnet.runtime.add_speed_arguments)
    compile_mode: str | None = None
    sgd_impl: str = "auto"               # auto | for_loop | foreach | fused
    cuda_graphs: str = "none"            # none | teacher | student | all
    pin_memory: bool = False
    deterministic: bool = flag(
        True, RUN, "allow cudnn benchmark (faster on GPU, not bit-reproducible)",
        option="--nondeterministic")
    num_workers: int = 2                 # patch-building threads
    val_interval: int = flag(200, RUN, "validate every N iterations",
                             check=every_one_or_more)
    val_overlap: float = flag(0.5, RUN, "sliding-window overlap in validation")
    save_interval: int = flag(200, RUN, "save last.pth every N iterations",
                              check=every_one_or_more)
    image_interval: int = flag(200, RUN, "TensorBoard image snapshots",
                               check=every_one_or_more)
    resume: bool = flag(False, RUN, "continue <out_root>/<exp>/last.pth")
    overwrite: bool = flag(False, RUN, "start over in an existing run folder (its earlier log, "
                                      "metrics, TensorBoard events and checkpoints are "
                                      "removed)")
    progress: bool = True
    # sliding-window strides of test.py / predict.py for this model (voxels X, Y, Z)
    strides: list[int] = field(default_factory=lambda: [18, 18, 4])
    # the custom preset only: how its patch was made from the data
    patch_source: str | None = None
    median_shape: list[int] | None = None

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes`` (the record itself is frozen)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``config.json``, the checkpoints' ``config``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str = "config") -> "TrainConfig":
        """The record :meth:`to_dict` wrote (keys a newer version added take their defaults;
        a key this version does not know is a one-line error naming ``where``)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} (written by "
                              "another version of cogrnet?)")
        return cls(**record)


#: the command line's defaults, read by the flags (one place per default)
DEFAULTS = TrainConfig()


@dataclass(frozen=True)
class FieldFlag:
    """A :class:`TrainConfig` field's flag with what the field's annotation says of it:
    ``kind`` is the type of one value (``int``, ``str``, ``bool``, ...; a union of several
    is kept whole), ``optional`` whether None is allowed, ``nargs`` the values of a list."""

    name: str
    flag: Flag
    kind: Any
    optional: bool
    nargs: int | None

    @property
    def option(self) -> str:
        """The flag as written on the command line."""
        return self.flag.option or f"--{self.name}"

    @property
    def dest(self) -> str:
        """The name argparse stores the flag's value under."""
        return self.option[2:]

    def add_to(self, group: argparse._ActionsContainer, choices: Sequence[Any] | None = None
               ) -> None:
        """Add the flag to ``group``: an on/off flag, a ``0|1`` switch for an optional one,
        else a valued option (``choices``: those of another layer, else the field's)."""
        spec, default = self.flag, getattr(DEFAULTS, self.name)
        if self.kind is bool and self.optional:
            add_switch(group, self.name, default, spec.help)
        elif self.kind is bool:
            group.add_argument(self.option, action="store_true", help=spec.help)
        else:
            group.add_argument(
                self.option, type=spec.parse or (self.kind if self.kind in (int, float) else None),
                nargs=self.nargs, choices=choices or spec.choices, metavar=spec.metavar,
                default=None if spec.filled else tuple(default) if self.nargs else default,
                help=spec.help)

    def given(self, args: argparse.Namespace) -> Any:
        """The field's value as the parsed flag gives it (a flag that turns a field off
        negated, a switch and a number in the field's type, a list as a list)."""
        value = getattr(args, self.dest)
        if self.kind is bool and not self.optional and getattr(DEFAULTS, self.name):
            return not value
        if value is None:
            return None
        if self.nargs:
            return list(value)
        return self.kind(value) if self.kind in (bool, float) else value


def flag_fields() -> list[FieldFlag]:
    """The flags of :class:`TrainConfig`'s fields, in field order."""
    hints = get_type_hints(TrainConfig)
    found = []
    for f in fields(TrainConfig):
        if FLAG not in f.metadata:
            continue
        hint = hints[f.name]
        kinds = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
        values = [k for k in kinds if k is not type(None)]
        kind = values[0] if len(values) == 1 else hint
        nargs = len(getattr(DEFAULTS, f.name)) if get_origin(kind) is list else None
        found.append(FieldFlag(f.name, f.metadata[FLAG], get_args(kind)[0] if nargs else kind,
                               len(values) < len(kinds), nargs))
    return found


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The fields that their flags alone set (not ``filled``), from parsed ``args``."""
    return {ff.name: ff.given(args) for ff in flag_fields() if not ff.flag.filled}


def check_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Each field's own check over resolved ``values`` (field name -> value): the given
    flags first, then the values the preset or the method filled in; the values kept."""
    checked = dict(values)
    for ff in sorted(flag_fields(), key=lambda ff: ff.flag.filled):
        if ff.flag.check:
            checked[ff.name] = ff.flag.check(ff.option, checked[ff.name])
    return checked
