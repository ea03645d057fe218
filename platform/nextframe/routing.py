"""WebSocket routes. The live consumer (protocol v1) is mounted at /v1/live."""
from __future__ import annotations

from django.urls import path

from nextframe.live.consumer import LiveConsumer

websocket_urlpatterns = [path("v1/live", LiveConsumer.as_asgi())]
