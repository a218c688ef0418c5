"""The resolved configuration of one training run, as one typed record.

:func:`cogrnet.training.config.resolve_config` builds it from the command line (dataset
preset, method defaults and checks applied, in that one place); the trainer and the
methods read its fields. It is written as ``config.json`` beside the checkpoints and stored
inside each of them (:meth:`TrainConfig.to_dict`, plain JSON); ``config["network"]`` of a
stored one rebuilds the network (:func:`cogrnet.networks.build_network`; the dict is
:func:`cogrnet.networks.network_config`'s).

The defaults here are the command line's defaults (``train.py --help`` shows them); the
ones a dataset preset or a method sets are filled in by the resolution.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .config import MODEL_DIR
from .errors import ConfigError


#: the labels a labeled case trains on (``--label_source``)
LABEL_SOURCES = ("coarse", "full", "slices")


@dataclass(frozen=True)
class TrainConfig:
    # ---------------------------------------------------------------- data
    dataset: str = "la"                  # preset name (cogrnet.config.PRESETS)
    root_path: str = ""                  # folder of <ID>/mri_norm2.h5 (or <ID>.h5)
    lists_dir: str | None = None         # extra folder holding train/val/test lists
    coarse_dir: str | None = None        # registration.py's output (label_source coarse/slices)
    labelnum: int = 0                    # the first N train IDs are labeled
    label_source: str = "coarse"         # labels of the labeled cases: coarse | full | slices
    coarse_mode: str = "fused"           # fused | two_stream (the reference's two label sets)
    confidence_weighting: bool = False   # weight labeled voxels by the confidence map
    val_list: str = "auto"               # auto | none | split name | list path
    augment: bool = True                 # rot90/flip augmentation
    intensity: str = "zscore"            # per-volume normalisation on loading: zscore | none
    # ---------------------------------------------------------------- method and network
    method: str = "cogrnet"
    num_classes: int = 2
    network: dict[str, Any] = field(default_factory=dict)  # cogrnet.networks.network_config
    patch_size: list[int] = field(default_factory=lambda: [112, 112, 80])  # X, Y, Z voxels
    # ---------------------------------------------------------------- optimisation
    batch_size: int = 8
    labeled_bs: int = 4
    pre_max_iteration: int | None = None   # two-stage methods (None for the others)
    self_max_iteration: int | None = None  # two-stage methods
    max_iteration: int | None = None       # single-stage methods (None for two-stage ones)
    base_lr: float = 0.01                # SGD learning rate
    momentum: float = 0.9                # SGD momentum
    weight_decay: float = 1e-4           # SGD weight decay
    lr_step: int = 2500                  # lr x lr_gamma every lr_step iterations of a stage
    pre_lr_step: int | None = None       # the pre-training stage's lr_step (None: lr_step)
    lr_gamma: float = 0.1
    ema_decay: float = 0.99              # EMA teacher decay
    u_weight: float = 0.5                # copy-paste: weight of the unlabeled region
    fa_ratio: float | str = "auto"       # Focus Area ratio of self-training, or "auto"
    fa_ratio_range: list[float] = field(default_factory=lambda: [0.6, 0.733])  # of "auto"
    pre_fa_ratio: float = 2 / 3          # cuboid ratio of pre-training
    pseudo_lcc: bool = True              # pseudo labels: largest component only
    pre_mix_directions: int = 1          # 1: a into b (the reference); 2: also b into a
    dice: str = "pooled_squared"         # soft-Dice form: pooled_squared | per_sample_linear
    student_forwards: int = 1            # copy-paste self-training: 1 over [X1, X2], or 2
    consistency: float = 0.1             # mt/uamt consistency weight
    consistency_rampup: float = 1.0      # mt/uamt ramp-up, fraction of max_iteration (UA-MT: all)
    uamt_passes: int = 8                 # uamt stochastic teacher passes T
    handover: str = "best"               # two-stage: stage 2 starts from pre-training's best | last
    seed: int = 1337
    skip_nonfinite: bool = False         # skip non-finite steps instead of stopping
    # ---------------------------------------------------------------- run
    exp: str = ""                        # run name: <out_root>/<exp>/
    out_root: str = str(MODEL_DIR)       # model/ in the repository
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    amp: bool | None = None              # None: on for CUDA (the trainer decides)
    channels_last: bool | None = None    # None: on for CUDA
    compile: bool = False                # torch.compile the student
    compile_mode: str | None = None
    sgd_impl: str = "auto"               # auto | for_loop | foreach | fused
    cuda_graphs: str = "none"            # none | teacher | student | all
    pin_memory: bool = False
    deterministic: bool = True           # False: cudnn benchmark (not bit-reproducible)
    num_workers: int = 2                 # patch-building threads
    val_interval: int = 200              # validate every N iterations
    val_overlap: float = 0.5             # sliding-window overlap of validation
    save_interval: int = 200             # last.pth every N iterations
    image_interval: int = 200            # TensorBoard image snapshots every N steps
    resume: bool = False
    overwrite: bool = False
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


#: the command line's defaults, read by the argparse definitions (one place per default)
DEFAULTS = TrainConfig()
