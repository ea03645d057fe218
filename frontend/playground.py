"""The playground page (/playground/): run a live session in the browser.

The page is static markup; its scripts do the work (frontend/static/frontend/js/playground.js on top
of the protocol client live.js): they read the models from GET /v1/models, mint a WebSocket ticket
with POST /v1/tickets (the dashboard session plus the CSRF token in <meta name="csrf-token">),
connect to /v1/live?ticket=... and link the session's record (GET /v1/sessions/{id}) afterwards.
"""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from nextframe.tenancy.actions import organizations_of


@login_required
def page(request: HttpRequest) -> HttpResponse:
    orgs = organizations_of(request.user)
    # The REST endpoints act for the user's first organisation (DashboardSessionAuthentication).
    return render(request, "frontend/playground.html", {"organization": orgs[0] if orgs else None})
