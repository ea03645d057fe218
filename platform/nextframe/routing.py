"""WebSocket routes. The live consumer (protocol v1) is mounted at /v1/live."""
from __future__ import annotations

from django.urls import path, re_path

from nextframe.live.consumer import LiveConsumer, UnknownPathConsumer

websocket_urlpatterns = [
    path("v1/live", LiveConsumer.as_asgi()),
    re_path(r"", UnknownPathConsumer.as_asgi()),
]
