"""The header every page shows: the signed-in user's organisations, the current one and their role."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from nextframe.tenancy import members
from nextframe.tenancy.models import Membership

SECTIONS = (
    ("dashboard", "Overview"),
    ("dashboard-keys", "API keys"),
    ("dashboard-usage", "Usage & billing"),
    ("dashboard-sessions", "Live sessions"),
    ("dashboard-clips", "Clips"),
    ("dashboard-moderation", "Moderation"),
    ("dashboard-members", "Members"),
)


def navigation(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_sections": SECTIONS, "signup_enabled": settings.SIGNUP_ENABLED}
    org, role = members.current_organization(user, request.session)
    memberships = list(Membership.objects.filter(user=user).select_related("organization")
                       .order_by("organization__name"))
    return {
        "nav_sections": SECTIONS,
        "nav_org": org,
        "nav_role": role,
        "nav_can_manage": members.can_manage(role),
        "nav_memberships": memberships,
    }
