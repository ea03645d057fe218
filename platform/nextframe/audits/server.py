"""Start-up audits, in the platform's web server process only: said by the server's entry point.

Start-up audits (`start_startup_audits`) must run in the process that serves live sessions, once:
they use that process's device runtimes and pool, and a CLI command, a Celery worker or a test must
never start them. Guessing from argv missed `python -m nextframe.web`, the server `nextframe up` and
the Procfile run, so every tier stayed `declared`. Instead the entry point announces itself:
`nextframe.web.main()` calls `serving()` before daphne starts. Another ASGI entry point (a bare
`daphne nextframe.asgi:application`, uvicorn, a custom launcher) makes the same call to get
start-up audits.

`serving()` may come before or after `django.setup()`: before, `AuditsConfig.ready()` starts the
audits (via `start_if_serving()`); after, `serving()` starts them itself. Either way at most once.
After NEXTFRAME_AUDIT_STARTUP_DELAY_S, every model whose evidence is missing or stale is queued
(`queue_startup_audits`) for the background worker.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

_lock = threading.Lock()
_serving = False
_started: threading.Thread | None = None


def serving() -> None:
    """Declare this process the web server: start-up audits run here (NEXTFRAME_AUDIT_ON_STARTUP)."""
    global _serving
    with _lock:
        _serving = True
    from django.apps import apps

    if apps.ready:  # Django is already set up: AuditsConfig.ready() has run and found no server
        start_if_serving()


def is_server_process() -> bool:
    """True once the entry point called `serving()`."""
    return _serving


def start_if_serving() -> threading.Thread | None:
    """Start the start-up audits if this is the server and they are on; the thread, or None."""
    global _started
    from django.conf import settings

    with _lock:
        if not _serving or _started is not None or not settings.NEXTFRAME_AUDIT_ON_STARTUP:
            return None
        _started = start_startup_audits()
        return _started


def queue_startup_audits() -> list[str]:
    """Queue audits of every model whose evidence is missing or stale; returns their ids."""
    from inference.engines import list_specs
    from nextframe.audits import queueing
    from nextframe.audits.evidence import needs_audit

    queued = []
    for spec in list_specs():
        if needs_audit(spec.id):
            queueing.request_audit(spec.id, source="startup")
            queued.append(spec.id)
    return queued


def start_startup_audits(delay_s: float | None = None) -> threading.Thread:
    """After `delay_s` (the server is up by then), queue_startup_audits() in a background thread."""
    from django.conf import settings
    from django.db import close_old_connections

    delay = float(settings.NEXTFRAME_AUDIT_STARTUP_DELAY_S) if delay_s is None else delay_s

    def later() -> None:
        threading.Event().wait(delay)
        try:
            queue_startup_audits()
        except Exception:
            log.exception("start-up audits could not be queued")
        finally:
            close_old_connections()

    t = threading.Thread(target=later, name="nf-audit-startup", daemon=True)
    t.start()
    return t
