"""Method names -> classes (``--method``)."""
from __future__ import annotations

from ..errors import ConfigError
from ..train_config import TrainConfig
from .base import Method
from .copy_paste import BCP, CoGRNet
from .mean_teacher import UAMT, MeanTeacher
from .supervised import Supervised

METHODS: dict[str, type[Method]] = {m.name: m for m in (CoGRNet, BCP, Supervised, MeanTeacher, UAMT)}


def has_teacher(name: str) -> bool:
    """Whether method ``name`` keeps an EMA teacher (some stage of it has one), so that its
    checkpoints hold the teacher's weights too."""
    probe = TrainConfig(method=name, pre_max_iteration=1, self_max_iteration=1, max_iteration=1)
    return any(stage.teacher for stage in method_class(name)(probe).stages())


def method_class(name: str) -> type[Method]:
    """The class of ``--method name``; a one-line error for an unknown name."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"--method: unknown method '{name}' "
                          f"(choose from {', '.join(METHODS)})") from None


def build_method(cfg: TrainConfig) -> Method:
    return method_class(cfg.method)(cfg)
