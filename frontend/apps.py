"""The frontend's Django app: templates under frontend/templates/ and the pages' URLs (frontend.urls)."""
from __future__ import annotations

from django.apps import AppConfig


class FrontendConfig(AppConfig):
    name = "frontend"
    label = "frontend"
    verbose_name = "NextFrame frontend (dashboard, playground)"
