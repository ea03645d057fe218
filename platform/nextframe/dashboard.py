"""The minimal dashboard: log in (Django auth), see your organisations and their keys."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

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
    return render(request, "nextframe/dashboard.html", {"rows": rows})
