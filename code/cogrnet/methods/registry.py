"""Method names -> classes (``--method``)."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Method
from .copy_paste import BCP, CopyPaste
from .mean_teacher import UAMT, MeanTeacher
from .supervised import Supervised

METHODS: dict[str, type[Method]] = {m.name: m for m in (CopyPaste, BCP, Supervised, MeanTeacher, UAMT)}
TWO_STAGE = ("cogrnet", "bcp")


def build_method(cfg: dict[str, Any]) -> Method:
    try:
        return METHODS[cfg["method"]](cfg)
    except KeyError:
        raise ConfigError(f"--method: unknown method '{cfg['method']}' "
                          f"(choose from {', '.join(METHODS)})") from None
