"""What the live socket does before a message reaches the session service: authentication from the
ASGI scope, and the per-socket text-message rate limit (with its one exception, `session.stop`)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from inference import protocol
from nextframe.live import redirect
from nextframe.tenancy import actions as tenancy

if TYPE_CHECKING:
    from inference.pool.types import Reservation

# A text message over the rate limit is still parsed when it is this short: it may be the
# session.stop that must always be honoured (a stop is ~23 characters).
STOP_PARSE_MAX_CHARS = 256
# At most one `rate_limited` error per this many seconds: a flood must not make the server write
# one error per flooded message to a client that may not read them.
RATE_NOTICE_EVERY_S = 1.0


# The close of a socket whose key lacks the 'live' scope.
CLOSE_WITHOUT_LIVE_SCOPE: tuple[int, str] = (protocol.CLOSE_FORBIDDEN, "this API key lacks the 'live' scope")


def close_for_auth_error(exc: tenancy.TenancyError) -> tuple[int, str]:
    """The close code and reason of a failed authentication: 4401, or 4429 when the address is
    throttled after too many failures (like the other "too many"), or 4403 for a redirect ticket
    presented to the wrong node."""
    if isinstance(exc, redirect.WrongNode):
        return protocol.CLOSE_FORBIDDEN, str(exc)[:120]
    code = protocol.CLOSE_CONCURRENCY if isinstance(exc, tenancy.Throttled) else protocol.CLOSE_UNAUTHENTICATED
    return code, str(exc)[:120]


def authenticate(scope: dict[str, Any]) -> tuple[tenancy.Principal, Reservation | None]:
    """The principal of a WebSocket handshake: `Authorization: Bearer <key>` or `?ticket=`, and the
    reservation a `session.redirect` ticket hands over to this node (nextframe.live.redirect).

    Raises tenancy.AuthError (tenancy.Throttled after too many failures from the address), or
    redirect.WrongNode for a redirect ticket of another node."""
    headers = dict(scope.get("headers") or [])
    address = (scope.get("client") or [None])[0]  # failures count per address (tenancy.throttle)
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise tenancy.AuthError("Authorization header must be 'Bearer <api key>'")
        return tenancy.authenticate_key(token.strip(), address=address), None
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    ticket = (query.get("ticket") or [""])[0]
    if ticket:
        return redirect.redeem(ticket, address=address)
    raise tenancy.AuthError("missing credentials: 'Authorization: Bearer <api key>' or ?ticket=")


class TextRateLimit:
    """A token bucket of `rate` text messages per second, and a throttle on telling the client."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = float(rate)
        self.refilled_at = clock()
        self.noticed_at = float("-inf")

    def take(self) -> bool:
        """Spend a token for one text message; False when the message is over the limit."""
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.refilled_at) * self.rate)
        self.refilled_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def should_notice(self) -> bool:
        """Whether to send a `rate_limited` error now (at most one per RATE_NOTICE_EVERY_S)."""
        now = self.clock()
        if now - self.noticed_at < RATE_NOTICE_EVERY_S:
            return False
        self.noticed_at = now
        return True


def is_stop(text: str | None) -> bool:
    """Whether a text message is `session.stop` (parsed only when short: this runs past the rate limit)."""
    if not isinstance(text, str) or len(text) > STOP_PARSE_MAX_CHARS:
        return False
    try:
        return isinstance(protocol.parse_client_message(text), protocol.SessionStop)
    except protocol.ProtocolError:
        return False
