"""The minimal dashboard: log in (Django auth), see your organisations and their keys.

Every dashboard page carries the CSRF token in `<meta name="csrf-token">`, so the page's own
JavaScript can call the session-authenticated REST endpoints (e.g. POST /v1/tickets) with an
`X-CSRFToken` header (docs/protocol.md, section 1).
"""
from __future__ import annotations

import math

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string

from nextframe.tenancy.actions import organizations_of


def root(request):
    return redirect("dashboard")


@login_required
def home(request):
    orgs = organizations_of(request.user)
    rows = [
        {"org": org, "keys": list(org.api_keys.order_by("-created_at"))}
        for org in orgs
    ]
    return render(request, "frontend/dashboard.html", {"rows": rows})


def login_locked_out(request: HttpRequest, credentials: dict | None = None, *args, **kwargs) -> HttpResponse:
    """django-axes' answer once an address failed to log in too often (dashboard and admin forms).

    429 with Retry-After: the whole cool-off (NEXTFRAME_LOGIN_COOLOFF_S), since every further
    attempt in it is refused without checking the password.
    """
    retry = max(1, math.ceil(float(settings.AXES_COOLOFF_TIME) * 3600))
    body = render_to_string("frontend/locked_out.html", {"retry_after_s": retry}, request=request)
    response = HttpResponse(body, status=429)
    response["Retry-After"] = str(retry)
    return response
