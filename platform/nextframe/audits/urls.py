"""REST routes of the audits app, mounted under /v1/ by nextframe.api.urls."""
from __future__ import annotations

urlpatterns: list = []
