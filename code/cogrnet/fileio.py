"""Result files written whole or not at all."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | Path, obj: Any, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented JSON to a temporary file beside ``path``, then rename it over
    ``path``: a reader, or a crash at any moment, sees the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
    os.replace(tmp, path)
    return path
