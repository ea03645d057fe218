"""The origin check in front of /v1/live (nextframe/origins.py), in process.

A browser always sends `Origin` on a WebSocket upgrade: only the deployment's own hosts
(ALLOWED_HOSTS) and the sites listed in NEXTFRAME_WS_ALLOWED_ORIGINS get through. Non-browser
clients send no `Origin` and pass whatever the settings. The live server with a restricted host list
is checked end to end in tests/browser/test_playground.py (test_websocket_origin_guard).
"""
from __future__ import annotations

import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator

from nextframe.origins import BrowserOriginValidator, guard_websockets


class Accepting(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()


async def handshake(app, origin: str | None) -> bool:
    headers = [(b"origin", origin.encode())] if origin is not None else []
    comm = WebsocketCommunicator(app, "/v1/live", headers=headers)
    connected, _ = await comm.connect()
    await comm.disconnect()
    return connected


@pytest.mark.asyncio
@pytest.mark.django_db  # Channels' consumers close stale database connections on each message
async def test_browsers_from_other_sites_are_refused_and_clients_without_origin_are_not(settings):
    settings.ALLOWED_HOSTS = ["app.example.com", ".nextframe.example"]
    settings.WS_ALLOWED_ORIGINS = ["https://customer.example"]
    app = guard_websockets(Accepting.as_asgi())

    assert await handshake(app, None)                                   # Python client, nextframe live
    assert await handshake(app, "https://app.example.com")              # the dashboard's own pages
    assert await handshake(app, "http://app.example.com:8000")
    assert await handshake(app, "https://eu.nextframe.example")         # a subdomain pattern
    assert await handshake(app, "https://customer.example")             # a customer's site, listed
    assert not await handshake(app, "http://customer.example")          # ... on its scheme only
    assert not await handshake(app, "https://evil.example")
    assert not await handshake(app, "https://app.example.com.evil.example")
    assert not await handshake(app, "null")                             # sandboxed frames, file://


@pytest.mark.asyncio
@pytest.mark.django_db
async def test_development_default_allows_every_origin(settings):
    settings.ALLOWED_HOSTS = ["*"]
    settings.WS_ALLOWED_ORIGINS = []
    app = guard_websockets(Accepting.as_asgi())
    assert await handshake(app, "http://localhost:5173")
    assert await handshake(app, None)


def test_the_served_application_is_guarded():
    from nextframe.asgi import application

    assert isinstance(application.application_mapping["websocket"], BrowserOriginValidator)
