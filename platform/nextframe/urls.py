"""Top-level routes: the REST API under /v1/, health, admin, and the top-level packages' includes
(moderation and billing under /v1/, the frontend's pages at the root)."""
from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from nextframe import health, metrics

urlpatterns = [
    path("v1/moderation/", include("moderation.urls")),
    path("v1/billing/", include("billing.urls")),
    path("v1/", include("nextframe.api.urls")),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", metrics.view),
    path("", include("frontend.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "nextframe.api.errors.json_handler404"
handler500 = "nextframe.api.errors.json_handler500"
