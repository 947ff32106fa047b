"""Registry of VLA families. Adding a family = one new module in this package that calls
`register_family(Family(...))`; every module here is imported when the package is."""

from __future__ import annotations

import importlib
import pkgutil

from vla_ros.model.families.base import (
    Family,
    families,
    get_family,
    register_family,
    resolve_family,
)

__all__ = ["Family", "families", "get_family", "register_family", "resolve_family"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
