"""Billing's REST resources at the top of /v1/ (included by `nextframe.api.urls`)."""
from __future__ import annotations

from django.urls import URLPattern, path

from billing import views

urlpatterns: list[URLPattern] = [
    path("usage", views.UsageView.as_view(), name="usage"),
    path("billing", views.BillingView.as_view(), name="billing"),
]
