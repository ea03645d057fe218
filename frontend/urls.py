"""The frontend's pages, included at the site root by `nextframe.urls`."""
from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from frontend import accounts, dashboard, dashboard_api, playground

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signin/<str:token>/", accounts.signin_link, name="signin-link"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/password/", accounts.account, name="account"),
    path("dashboard/", dashboard.home, name="dashboard"),
    path("dashboard/keys/", dashboard.keys, name="dashboard-keys"),
    path("dashboard/usage/", dashboard.usage, name="dashboard-usage"),
    path("dashboard/sessions/", dashboard.sessions, name="dashboard-sessions"),
    path("dashboard/sessions/<str:session_id>/", dashboard.session_detail, name="dashboard-session"),
    path("dashboard/clips/", dashboard.clips, name="dashboard-clips"),
    path("dashboard/moderation/", dashboard.moderation_page, name="dashboard-moderation"),
    path("dashboard/members/", dashboard.members_page, name="dashboard-members"),
    path("dashboard/org/", dashboard.switch_org, name="dashboard-switch-org"),
    path("dashboard/api/keys", dashboard_api.KeysView.as_view(), name="dashboard-api-keys"),
    path("dashboard/api/keys/<str:key_id>/revoke", dashboard_api.KeyRevokeView.as_view(), name="dashboard-api-key-revoke"),
    path("dashboard/api/members", dashboard_api.MembersView.as_view(), name="dashboard-api-members"),
    path("dashboard/api/members/<int:user_id>", dashboard_api.MemberDetailView.as_view(), name="dashboard-api-member"),
    path("dashboard/api/members/<int:user_id>/link", dashboard_api.MemberLinkView.as_view(),
         name="dashboard-api-member-link"),
    path("playground/", playground.page, name="playground"),
    # Browsers ask for /favicon.ico whatever the page says; answer it rather than log a 404.
    path("favicon.ico", RedirectView.as_view(url=static("frontend/favicon.svg"), permanent=True)),
    path("", dashboard.root),
]
