"""A registration case function whose worker process dies, for tests/test_faults.py: in a
module of its own, so that the spawned workers that import it stay light."""
from __future__ import annotations

import os
import signal
from typing import Any

from cogrnet.annotation import CaseTask, process_case

VICTIM = "phantom_001"  # the case whose worker is killed, every time it runs


def killed_on_victim(task: CaseTask) -> dict[str, Any]:
    """:func:`process_case`, except that the worker of :data:`VICTIM` dies by SIGKILL (as
    the out-of-memory killer does), before it writes anything."""
    if task.case_id == VICTIM:
        os.kill(os.getpid(), signal.SIGKILL)
    return process_case(task)
