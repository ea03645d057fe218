"""Logging: readable lines by default, one JSON object per line with NEXTFRAME_LOG_FORMAT=json.

JSON is for log shippers (Loki, Elasticsearch, CloudWatch): every record of every library (Django,
daphne, Celery, ours) goes through the standard library and is rendered by structlog's
ProcessorFormatter with `timestamp` (UTC, ISO 8601), `level`, `logger`, `event`, the ids bound to
the request or socket that logged it (`request_id`, `session_id`, `org`), any `extra=` fields, and
`exception` when there is one. daphne's access log becomes records of the `nextframe.access`
logger with `client`, `request`, `status` and `bytes` fields.

Binding ids: `RequestIdMiddleware` binds a `request_id` for each HTTP request (the client's
`X-Request-ID` when it is a sane token, else a fresh one, echoed in the response header); the live
consumer binds one per socket and adds `session_id` and `org` once a session starts. The ids live
in context variables, so they follow the request's task and the threads asgiref hands its sync
work to; they never leak into another request.

structlog is imported only in JSON mode: the default console output costs nothing new.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the settings import this module: nothing of Django's at import time
    from django.http import HttpRequest, HttpResponse

FORMATS = ("console", "json")
# A client's X-Request-ID is kept only when it looks like an id (no spaces, quotes or control bytes).
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """The LOGGING dict of the settings for `fmt` (console: the plain lines of before)."""
    if fmt not in FORMATS:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"NEXTFRAME_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": {"class": "logging.StreamHandler"}},
        "root": {"handlers": ["console"], "level": level},
    }
    if fmt == "json":
        config["formatters"] = {"json": {"()": "nextframe.logs.json_formatter"}}
        config["handlers"]["console"]["formatter"] = "json"
    return config


def json_formatter():
    """structlog's ProcessorFormatter rendering every standard-library record as one JSON line."""
    import structlog

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def json_enabled() -> bool:
    from django.conf import settings

    return getattr(settings, "LOG_FORMAT", "console") == "json"


def new_id() -> str:
    return uuid.uuid4().hex


def bind(**ids: str) -> None:
    """Bind ids to everything this task (and the sync threads it calls) logs from now on."""
    if json_enabled():
        import structlog

        structlog.contextvars.bind_contextvars(**ids)


class RequestIdMiddleware:
    """A `request_id` for every HTTP request: bound for its logs, echoed as `X-Request-ID`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _SANE_ID.match(given) else new_id()
        if json_enabled():
            import structlog

            # Bound for the rest of the request, not just this call: Django logs a 4xx/5xx after the
            # middleware chain returns. Under ASGI every request is a task with its own context (no
            # leak between requests); a thread reused for the next request starts from clear.
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(request_id=request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response
