"""Top-level routes: the REST API under /v1/, health, dashboard and admin."""
from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from nextframe import dashboard, health

urlpatterns = [
    path("v1/", include("nextframe.api.urls")),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="nextframe/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", dashboard.home, name="dashboard"),
    path("", dashboard.root),
    path("admin/", admin.site.urls),
]

handler404 = "nextframe.api.errors.json_handler404"
handler500 = "nextframe.api.errors.json_handler500"
