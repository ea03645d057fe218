"""The frontend's pages, included at the site root by `nextframe.urls`."""
from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from frontend import dashboard, playground

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", dashboard.home, name="dashboard"),
    path("playground/", playground.page, name="playground"),
    # Browsers ask for /favicon.ico whatever the page says; answer it rather than log a 404.
    path("favicon.ico", RedirectView.as_view(url=static("frontend/favicon.svg"), permanent=True)),
    path("", dashboard.root),
]
