"""REST routes of the audits app, mounted under /v1/ by nextframe.api.urls."""
from __future__ import annotations

from django.urls import path

from nextframe.audits import views

urlpatterns: list = [
    path("models/<str:model_id>/audit", views.ModelAuditView.as_view(), name="model-audit"),
    path("audits/<int:audit_id>", views.AuditDetailView.as_view(), name="audit"),
]
