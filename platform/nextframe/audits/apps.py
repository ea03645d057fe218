"""The audits app: measured tier labels. At start it loads extra engines and, in the server process
(the entry point says so: `nextframe.audits.server.serving()`), queues background audits of models
whose evidence is missing or stale."""
from __future__ import annotations

import importlib
import logging

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


class AuditsConfig(AppConfig):
    name = "nextframe.audits"
    label = "audits"

    def ready(self) -> None:
        load_extra_engines()
        from nextframe.audits.server import start_if_serving

        start_if_serving()  # only where the server entry point announced itself before setup
