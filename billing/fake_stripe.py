"""A faithful fake of the parts of Stripe's API that billing uses, on loopback, for tests.

No emulator implements Billing Meters (shared/DEPENDENCIES.md), so this one is the project's own:
a real HTTP server the official `stripe` client talks to through STRIPE_API_BASE. It does what
Stripe documents for these endpoints, and nothing the code under test does not need:

- authentication: `Authorization: Bearer sk_...` (else 401, as Stripe answers);
- `POST /v1/customers`, `GET /v1/customers/{id}`; `Idempotency-Key`: the same key replays the first
  response (with `Idempotent-Replayed: true`), the same key with other parameters is a 400
  `idempotency_error`;
- `POST /v1/billing/meter_events`: `event_name` and `payload` required, the payload's
  `stripe_customer_id` must name a customer and `value` must be a number, `timestamp` within the past
  35 days or 5 minutes ahead; `identifier` unique (Stripe enforces it over at least 24 hours): a
  second event with the same identifier is refused with a 400 `invalid_request_error`
  (`resource_already_exists`) and not counted;
- on demand (`fail_next`): 429 `rate_limit` (with Retry-After) or 5xx `api_error` responses.

`accepted` holds the meter events Stripe would aggregate, in order.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

MAX_PAST_S = 35 * 24 * 3600
MAX_FUTURE_S = 300


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as Stripe encodes them (`payload[value]=1`) into nested dicts."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class FakeStripe:
    def __init__(self) -> None:
        self.customers: dict[str, dict[str, Any]] = {}
        self.accepted: list[dict[str, Any]] = []
        self.identifiers: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self._idempotent: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = {}
        self._failures: list[tuple[int, float | None]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- control from the test ------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 429, retry_after_s: float | None = None) -> None:
        """Answer the next `count` API requests with `status` (429: rate limited; 500, 503: errors)."""
        with self._lock:
            self._failures.extend([(status, retry_after_s)] * count)

    def clear_failures(self) -> None:
        """Forget failures asked for but not yet served."""
        with self._lock:
            self._failures.clear()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def values_by_identifier(self) -> dict[str, Decimal]:
        return {e["identifier"]: Decimal(e["payload"]["value"]) for e in self.accepted}

    # --- the API -----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.requests.append((method, path))
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer sk_"):
                return 401, _error("invalid_request_error", "Invalid API Key provided", None), {}
            if self._failures:
                status, retry = self._failures.pop(0)
                extra = {"Retry-After": str(retry)} if retry is not None else {}
                if status == 429:
                    return 429, _error("invalid_request_error", "Too many requests hit the API too quickly.",
                                       "rate_limit"), extra
                return status, _error("api_error", "An unexpected error occurred.", None), extra
            params = _nest(parse_qsl(body, keep_blank_values=True))
            key = headers.get("idempotency-key")
            if method == "POST" and key:
                replay = self._idempotent.get(key)
                if replay is not None:
                    first_params, status, response = replay
                    if first_params != params:
                        return 400, _error("idempotency_error", "Keys for idempotent requests can only be used "
                                           "with the same parameters they were first used with.", None), {}
                    return status, response, {"Idempotent-Replayed": "true"}
            status, response = self._route(method, path, params)
            if method == "POST" and key and status < 500:
                self._idempotent[key] = (params, status, response)
            return status, response, {}

    def _route(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path == "/v1/customers":
            customer = {"id": f"cus_{secrets.token_hex(7)}", "object": "customer", "created": int(time.time()),
                        "name": params.get("name"), "email": params.get("email"),
                        "metadata": params.get("metadata", {}), "livemode": False}
            self.customers[customer["id"]] = customer
            return 200, customer
        if method == "GET" and path.startswith("/v1/customers/"):
            found = self.customers.get(path.rsplit("/", 1)[1])
            if found is None:
                return 404, _error("invalid_request_error", "No such customer", "resource_missing")
            return 200, found
        if method == "POST" and path == "/v1/billing/meter_events":
            return self._meter_event(params)
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({method}: {path}).", None)

    def _meter_event(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name, payload = params.get("event_name"), params.get("payload")
        if not name:
            return 400, _error("invalid_request_error", "Missing required param: event_name.", "parameter_missing", "event_name")
        if not isinstance(payload, dict):
            return 400, _error("invalid_request_error", "Missing required param: payload.", "parameter_missing", "payload")
        customer = payload.get("stripe_customer_id")
        if customer not in self.customers:
            return 400, _error("invalid_request_error", f"No such customer: '{customer}'", "resource_missing",
                               "payload[stripe_customer_id]")
        try:
            value = Decimal(payload.get("value", ""))
            if not value.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            return 400, _error("invalid_request_error", "Invalid value: the payload value must be a number.",
                               "parameter_invalid_string", "payload[value]")
        now = int(time.time())
        try:
            timestamp = int(params.get("timestamp", now))
        except ValueError:
            return 400, _error("invalid_request_error", "Invalid integer: timestamp", "parameter_invalid_integer", "timestamp")
        if not now - MAX_PAST_S <= timestamp <= now + MAX_FUTURE_S:
            return 400, _error("invalid_request_error", "Timestamp must be within the past 35 calendar days or up "
                               "to 5 minutes in the future.", "parameter_invalid_integer", "timestamp")
        identifier = params.get("identifier") or f"gen_{secrets.token_hex(12)}"
        if identifier in self.identifiers:
            return 400, _error("invalid_request_error",
                               f"An event already exists with identifier {identifier}.", "resource_already_exists",
                               "identifier")
        self.identifiers.add(identifier)
        event = {"object": "billing.meter_event", "created": now, "event_name": name, "identifier": identifier,
                 "livemode": False, "payload": payload, "timestamp": timestamp}
        self.accepted.append(event)
        return 200, event

    # --- the server ----------------------------------------------------------------------------------

    def start(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                path, _, query = self.path.partition("?")
                status, response, extra = fake.handle(self.command, path, {k.lower(): v for k, v in self.headers.items()},
                                                      body or query)
                data = json.dumps(response).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_{secrets.token_hex(7)}")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-stripe",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _error(kind: str, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return {"error": error}


@contextmanager
def running() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    try:
        yield fake
    finally:
        fake.stop()
