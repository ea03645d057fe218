"""Channels' origin check in front of the WebSocket routes (browsers only).

A browser always sends `Origin` on a WebSocket upgrade; a page on a site the deployment does not
trust is refused at the handshake (HTTP 403), before any ticket is looked at. Clients that send no
`Origin` are not browsers (the Python reference client, `nextframe live`, server-side SDKs): they
authenticate with a key or ticket of their own and carry no browser cookies, so they pass, whereas
Channels' stock `AllowedHostsOriginValidator` would refuse them whenever ALLOWED_HOSTS is not `*`.

Trusted origins: the hosts in ALLOWED_HOSTS (the dashboard and playground are served from them) plus
NEXTFRAME_WS_ALLOWED_ORIGINS, for customers' own sites that hand a ticket to their pages
(docs/protocol.md, section 1). Patterns follow Channels: `example.com`, `.example.com` (with
subdomains), `https://example.com:8443`, `*`.
"""
from __future__ import annotations

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    """OriginValidator that lets a request without an `Origin` header through (a non-browser client)."""

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return bool(self.validate_origin(parsed_origin))


def trusted_origins() -> list[str]:
    """ALLOWED_HOSTS plus NEXTFRAME_WS_ALLOWED_ORIGINS (with DEBUG and no hosts: localhost, like Django)."""
    allowed = [*settings.ALLOWED_HOSTS, *getattr(settings, "WS_ALLOWED_ORIGINS", [])]
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return allowed


def guard_websockets(application):
    """`application` behind the origin check (the WebSocket branch of nextframe.asgi)."""
    return BrowserOriginValidator(application, trusted_origins())
