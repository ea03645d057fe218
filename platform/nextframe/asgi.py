"""ASGI entry point served by daphne: HTTP (Django) and WebSockets (Channels)."""
from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings")

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from nextframe.origins import guard_websockets  # noqa: E402
from nextframe.routing import websocket_urlpatterns  # noqa: E402

# Browsers' WebSockets from untrusted origins are refused at the handshake (nextframe/origins.py).
application = ProtocolTypeRouter({"http": django_asgi_app,
                                  "websocket": guard_websockets(URLRouter(websocket_urlpatterns))})
