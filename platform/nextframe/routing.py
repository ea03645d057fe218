"""WebSocket routes. The live consumer (protocol v1) is mounted at /v1/live."""
from __future__ import annotations

websocket_urlpatterns: list = []
