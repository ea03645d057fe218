"""REST routes of the clips app, mounted under /v1/ by nextframe.api.urls."""
from __future__ import annotations

urlpatterns: list = []
