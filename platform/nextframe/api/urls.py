"""Routes under /v1/ (every app's REST views are mounted here)."""
from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView

from nextframe.api import views

urlpatterns = [
    path("models", views.ModelsView.as_view(), name="models"),
    path("models/<str:model_id>", views.ModelDetailView.as_view(), name="model"),
    path("tickets", views.TicketsView.as_view(), name="tickets"),
    path("", include("nextframe.live.urls")),
    path("", include("nextframe.clips.urls")),
    path("", include("nextframe.audits.urls")),
    path("", include("billing.api_urls")),
    path("openapi.json", SpectacularJSONAPIView.as_view(authentication_classes=[], permission_classes=[]), name="openapi"),
]
