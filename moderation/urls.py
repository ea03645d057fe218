"""Moderation's REST routes, included under /v1/moderation/ by `nextframe.urls` (none yet)."""
from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
