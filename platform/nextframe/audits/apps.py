"""The audits app: measured tier labels. At start it loads extra engines and, in a server process,
queues background audits of models whose evidence is missing or stale."""
from __future__ import annotations

import importlib
import logging
import os
import sys

from django.apps import AppConfig

log = logging.getLogger(__name__)


def extra_engine_modules() -> list[str]:
    """NEXTFRAME_EXTRA_ENGINES: comma-separated modules (environment, else settings) to import at start."""
    from django.conf import settings

    raw = getattr(settings, "NEXTFRAME_EXTRA_ENGINES", [])
    if isinstance(raw, (list, tuple)):
        return [str(m).strip() for m in raw if str(m).strip()]
    return [m.strip() for m in str(raw).split(",") if m.strip()]


def load_extra_engines() -> list[str]:
    """Import each module; one defining `register()` has it called (import side effects also work)."""
    loaded = []
    for name in extra_engine_modules():
        module = importlib.import_module(name)  # a typo must fail the start, not hide an engine
        register = getattr(module, "register", None)
        if callable(register):
            register()
        loaded.append(name)
    return loaded


def _is_server_process() -> bool:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    return "daphne" in sys.argv[0] or argv0 in {"daphne", "uvicorn"} or "runserver" in sys.argv


class AuditsConfig(AppConfig):
    name = "nextframe.audits"
    label = "audits"

    def ready(self) -> None:
        load_extra_engines()
        from nextframe.audits.actions import setting, start_startup_audits

        if setting("NEXTFRAME_AUDIT_ON_STARTUP", True) and _is_server_process():
            start_startup_audits()
