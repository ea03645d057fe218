"""The dashboard's pages (/dashboard/...): server-rendered, scoped to the user's current organisation.

Every page carries the CSRF token in `<meta name="csrf-token">`, so the page's own JavaScript
(static/frontend/js/) calls the REST API with the session and an `X-CSRFToken` header: the API
acts for the user's current organisation with the scopes of their role (nextframe.tenancy.auth).
Reads here call the same services the REST views call (billing.reports, moderation.actions, the
live serializer); writes go through the REST API or frontend.dashboard_api, where roles are checked.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from billing import reports
from moderation import actions as moderation
from moderation.policy import FAIL_MODES, FRAME_CLASSIFIER_MODES
from nextframe.api import catalog
from nextframe.live.models import LiveSession
from nextframe.live.serializers import LiveSessionSerializer
from nextframe.tenancy import members
from nextframe.tenancy.models import ApiKey, Membership, Organization

RECENT_ROWS = 50


def root(request):
    return redirect("dashboard")


def org_page(view: Callable) -> Callable:
    """A signed-in page for the user's current organisation: view(request, org, role)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        org, role = members.current_organization(request.user, request.session)
        if org is None:
            return render(request, "frontend/no_org.html", status=403)
        return view(request, org, role, *args, **kwargs)

    return wrapper


def _page(request, template: str, org: Organization, role: str, **context) -> HttpResponse:
    context.update(org=org, role=role, can_manage=members.can_manage(role))
    return render(request, template, context)


@org_page
def home(request, org, role):
    billing = reports.billing(org)
    sessions = LiveSession.objects.filter(organization=org)
    return _page(request, "frontend/dashboard/overview.html", org, role, billing=billing,
                 active_keys=org.api_keys.filter(revoked_at__isnull=True).count(),
                 active_sessions=sessions.filter(status=LiveSession.Status.ACTIVE).count(),
                 recent=LiveSessionSerializer(sessions.order_by("-created_at")[:5], many=True).data,
                 members=org.memberships.count())


@org_page
def keys(request, org, role):
    rows = list(org.api_keys.order_by("revoked_at", "-created_at"))
    return _page(request, "frontend/dashboard/keys.html", org, role, keys=rows, scopes=ApiKey.SCOPES)


@org_page
def usage(request, org, role):
    return _page(request, "frontend/dashboard/usage.html", org, role, billing=reports.billing(org))


@org_page
def sessions(request, org, role):
    rows = LiveSession.objects.filter(organization=org).order_by("-created_at")[:RECENT_ROWS]
    return _page(request, "frontend/dashboard/sessions.html", org, role,
                 sessions=LiveSessionSerializer(rows, many=True).data, limit=RECENT_ROWS)


@org_page
def session_detail(request, org, role, session_id: str):
    """One live session's record: every measured number (another organisation's: 404)."""
    row = LiveSession.objects.filter(organization=org, pk=session_id).first()
    if row is None:
        raise Http404("no such session")
    data = LiveSessionSerializer(row).data
    events = [moderation.describe_event(e) for e in moderation.events_for(org, session_id=row.pk)[:RECENT_ROWS]]
    return _page(request, "frontend/dashboard/session.html", org, role, s=data, events=events,
                 metrics=sorted((k, v) for k, v in (data["metrics"] or {}).items() if not isinstance(v, dict)))


@org_page
def clips(request, org, role):
    models = catalog.catalog(organization=org)
    return _page(request, "frontend/dashboard/clips.html", org, role, models=models)


@org_page
def moderation_page(request, org, role):
    events = [moderation.describe_event(e) for e in moderation.events_for(org)[:RECENT_ROWS]]
    policy = moderation.policy_for(org).as_dict()
    return _page(request, "frontend/dashboard/moderation.html", org, role, policy=policy, events=events,
                 classifier_modes=FRAME_CLASSIFIER_MODES, fail_modes=FAIL_MODES,
                 blocked_terms_text="\n".join(policy["blocked_terms"]))


@org_page
def members_page(request, org, role):
    rows = list(Membership.objects.filter(organization=org).select_related("user").order_by("user__username"))
    for row in rows:
        row.link_allowed = members.dashboard_may_issue_link(row.user, org)
    roles = members.ROLES if role == Membership.Role.OWNER else tuple(r for r in members.ROLES if r != "owner")
    return _page(request, "frontend/dashboard/members.html", org, role, memberships=rows, roles=roles,
                 all_roles=members.ROLES)


@login_required
@require_POST
def switch_org(request: HttpRequest) -> HttpResponse:
    """POST /dashboard/org/: act for another of the user's organisations (a plain form: no JS needed)."""
    try:
        members.switch_organization(request.user, request.session, int(request.POST.get("organization", "")))
    except (ValueError, members.Forbidden):
        return render(request, "frontend/no_org.html", {"switch_refused": True}, status=403)
    target = request.GET.get("next") or request.POST.get("next") or "/dashboard/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/dashboard/"
    return HttpResponseRedirect(target)


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
