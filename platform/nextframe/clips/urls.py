"""REST routes of the clips app, mounted under /v1/ by nextframe.api.urls."""
from __future__ import annotations

from django.urls import path

from nextframe.clips import views

urlpatterns: list = [
    path("clips", views.ClipListView.as_view(), name="clips"),
    path("clips/<uuid:clip_id>", views.ClipDetailView.as_view(), name="clip"),
    path("clips/<uuid:clip_id>/video", views.ClipVideoView.as_view(), name="clip-video"),
]
