"""REST routes of the live app, mounted under /v1/."""
from __future__ import annotations

from django.urls import path

from nextframe.live import views

urlpatterns = [
    path("sessions", views.SessionListView.as_view(), name="sessions"),
    path("sessions/<str:session_id>", views.SessionDetailView.as_view(), name="session-detail"),
]
