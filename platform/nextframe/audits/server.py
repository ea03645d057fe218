"""Whether this process is the platform's web server: said by the server's entry point, not guessed.

Start-up audits (`actions.start_startup_audits`) must run in the process that serves live
sessions, once: they use that process's device runtimes and pool, and a CLI command, a Celery
worker or a test must never start them. Guessing from argv missed `python -m nextframe.web`, the
server `nextframe up` and the Procfile run, so every tier stayed `declared`. Instead the entry point
announces itself: `nextframe.web.main()` calls `serving()` before daphne starts. Another ASGI entry
point (a bare `daphne nextframe.asgi:application`, uvicorn, a custom launcher) makes the same call
to get start-up audits.

`serving()` may come before or after `django.setup()`: before, `AuditsConfig.ready()` starts the
audits (via `start_if_serving()`); after, `serving()` starts them itself. Either way at most once.
"""
from __future__ import annotations

import threading

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
    from nextframe.audits.actions import setting, start_startup_audits

    with _lock:
        if not _serving or _started is not None or not setting("NEXTFRAME_AUDIT_ON_STARTUP", True):
            return None
        _started = start_startup_audits()
        return _started
