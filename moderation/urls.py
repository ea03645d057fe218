"""Moderation's REST routes, included under /v1/moderation/ by `nextframe.urls`."""
from __future__ import annotations

from django.urls import path

from moderation import views

urlpatterns = [
    path("policy", views.PolicyView.as_view(), name="moderation-policy"),
    path("hashes", views.HashListView.as_view(), name="moderation-hashes"),
    path("hashes/<int:hash_id>", views.HashDetailView.as_view(), name="moderation-hash"),
    path("events", views.EventListView.as_view(), name="moderation-events"),
]
