"""Files the package ships (config/, msg/), the JSON it writes and directories it builds once."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE_NAME = "vla_ros"
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # <repo> in a source checkout


def share_candidates(*parts: str) -> list[Path]:
    """Where a shipped file may be, in order: the source tree, colcon prefixes, the Python prefix."""
    candidates = [SOURCE_ROOT.joinpath(*parts)]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix, "share", PACKAGE_NAME, *parts))
    candidates.append(Path(sys.prefix, "share", PACKAGE_NAME, *parts))
    return list(dict.fromkeys(candidates))


def find_shared(*parts: str) -> Path | None:
    """The first existing `share/vla_ros/<parts>` (or `<repo>/<parts>`), or None."""
    return next((p for p in share_candidates(*parts) if p.exists()), None)


def json_default(value: object) -> object:
    """json.dumps `default=` for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike[str], payload: Any, indent: int = 1) -> None:
    """Write JSON atomically (a reader never sees half a file), numpy values included."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=indent, default=json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def build_once(final: Path, record: dict[str, Any], make: Callable[[Path], None], marker: str) -> bool:
    """`final` as `make(tmp)` builds it, unless `final/marker` already holds `record` (what it was made
    from); written to a temporary name and renamed, so a half-built directory is never used. True when
    it was built now."""
    try:
        if json.loads((final / marker).read_text()) == record:
            return False
    except (OSError, ValueError):
        pass
    tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    make(tmp)
    (tmp / marker).write_text(json.dumps(record, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return True
