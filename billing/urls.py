"""Billing's REST routes and webhooks, included under /v1/billing/ by `nextframe.urls` (none yet)."""
from __future__ import annotations

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
