"""Settings entry point (DJANGO_SETTINGS_MODULE=nextframe.settings): everything comes from the
environment (see base.py).

base.py is loaded on the first setting read, not when this package is imported. Importing a sibling
settings module (`nextframe.settings.test`) imports this package first; an eager `from .base import *`
here read the environment before that module could prepare it, so test runs got the default data
dir ./.nextframe (the one `nextframe up` uses), the development environment and, in the scaled-out
profile, SQLite and the in-memory layer instead of PostgreSQL and Redis.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def _base() -> ModuleType:
    # import_module, not `from . import base`: that would ask this module's __getattr__ for "base".
    return importlib.import_module("nextframe.settings.base")


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return getattr(_base(), name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | {name for name in dir(_base()) if name.isupper()})
