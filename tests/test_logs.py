"""Structured logs (nextframe.logs): NEXTFRAME_LOG_FORMAT=json gives one JSON object per line with
the request's id; the default stays plain lines; a session's socket binds its session id."""
from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from nextframe import logs

pytestmark = pytest.mark.profile("embedded")


@pytest.fixture
def json_logs(settings):
    """Route every record into a buffer through the JSON formatter (as NEXTFRAME_LOG_FORMAT=json)."""
    settings.LOG_FORMAT = "json"
    config = logs.logging_config("json", "INFO")
    stream = io.StringIO()
    config["handlers"]["console"]["stream"] = stream
    logging.config.dictConfig(config)
    import structlog

    structlog.contextvars.clear_contextvars()
    yield stream
    structlog.contextvars.clear_contextvars()
    logging.config.dictConfig(settings.LOGGING)


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_request_id_given_or_made(json_logs, db):
    response = Client().get("/no/such/page", HTTP_X_REQUEST_ID="req-abc.123")
    assert response.status_code == 404 and response["X-Request-ID"] == "req-abc.123"
    warning = next(r for r in records(json_logs) if r["logger"] == "django.request")
    assert warning["request_id"] == "req-abc.123" and warning["level"] == "warning"
    assert warning["event"].startswith("Not Found: /no/such/page") and warning["timestamp"].endswith("Z")

    # An id that is not a sane token is replaced, never echoed (header and log injection).
    response = Client().get("/no/such/page", HTTP_X_REQUEST_ID='x" injected')
    made = response["X-Request-ID"]
    assert made != 'x" injected' and len(made) == 32
    assert records(json_logs)[-1]["request_id"] == made


def test_ids_bound_to_one_context_do_not_leak_and_exceptions_are_fields(json_logs):
    import contextvars

    def in_socket():
        logs.bind(request_id="sock-1", session_id="ls_1", org="7")
        logging.getLogger("nextframe.live.consumer").warning("tick failed", extra={"tick": 3})
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("nextframe.live.consumer").exception("failed")

    contextvars.copy_context().run(in_socket)
    logging.getLogger("nextframe.elsewhere").info("unrelated")
    tick, failed, unrelated = records(json_logs)[-3:]
    assert (tick["session_id"], tick["org"], tick["request_id"], tick["tick"]) == ("ls_1", "7", "sock-1", 3)
    assert "ValueError: boom" in failed["exception"] and failed["level"] == "error"
    assert "session_id" not in unrelated and "request_id" not in unrelated


def test_the_default_stays_plain_lines_and_a_bad_format_is_refused(settings):
    config = logs.logging_config("console", "INFO")
    assert "formatters" not in config and config["root"]["level"] == "INFO"
    with pytest.raises(ImproperlyConfigured, match="NEXTFRAME_LOG_FORMAT"):
        logs.logging_config("xml", "INFO")
    settings.LOG_FORMAT = "console"
    logs.bind(session_id="ls_x")  # a no-op without JSON: structlog is not even imported for it
    assert Client().get("/healthz")["X-Request-ID"]
