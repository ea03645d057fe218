"""Dashboard users: memberships and roles, one-time sign-in links, the organisation a user acts for.

The CLI (`nextframe up`, `nextframe createuser`) and the dashboard call these; roles are enforced
here, not in the pages:
- owner: everything, including making and removing owners;
- admin: keys, moderation policy, members and admins (never an owner);
- member: reads, live sessions and clips; no keys, no policy, no members.
"""
from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from nextframe.tenancy import keys
from nextframe.tenancy.actions import TenancyError
from nextframe.tenancy.models import ApiKey, Membership, Organization, SignInLink

ROLES = tuple(Membership.Role.values)  # owner, admin, member
MANAGER_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)
# Scopes a dashboard session carries per role (DashboardSessionAuthentication): a member cannot
# change the moderation policy (the `moderation` scope) through the REST API either.
MEMBER_SCOPES = ("live", "clips", "read")
SESSION_ORG_KEY = "nextframe_org"


class Forbidden(TenancyError):
    code = "forbidden"


class SignInLinkInvalid(TenancyError):
    code = "signin_link_invalid"



# --- memberships ----------------------------------------------------------------------------------

def role_of(user, org: Organization) -> str | None:
    return Membership.objects.filter(user=user, organization=org).values_list("role", flat=True).first()


def scopes_for_role(role: str | None) -> tuple[str, ...]:
    return tuple(ApiKey.SCOPES) if role in MANAGER_ROLES else MEMBER_SCOPES


def can_manage(role: str | None) -> bool:
    """Keys, moderation policy and members: owners and admins."""
    return role in MANAGER_ROLES


def current_organization(user, session) -> tuple[Organization | None, str | None]:
    """The organisation the user acts for (the one chosen in the session if still a member, else
    their first by name) and their role in it; (None, None) for a user in no organisation."""
    memberships = Membership.objects.filter(user=user).select_related("organization").order_by("organization__name")
    chosen = session.get(SESSION_ORG_KEY) if session is not None else None
    first = None
    for membership in memberships:
        if membership.organization_id == chosen:
            return membership.organization, membership.role
        first = first or membership
    return (first.organization, first.role) if first else (None, None)


def switch_organization(user, session, org_id: int) -> Organization:
    membership = Membership.objects.filter(user=user, organization_id=org_id).select_related("organization").first()
    if membership is None:
        raise Forbidden("you are not a member of that organisation")
    session[SESSION_ORG_KEY] = membership.organization_id
    return membership.organization


def _require_manager(actor_role: str | None) -> None:
    if not can_manage(actor_role):
        raise Forbidden("only an owner or an admin of the organisation can do this")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise TenancyError(f"role must be one of {', '.join(ROLES)}; got {role!r}")


def _owners_left(org: Organization, without_user_id: int) -> int:
    return Membership.objects.filter(organization=org, role=Membership.Role.OWNER).exclude(user_id=without_user_id).count()


def add_member(org: Organization, email: str, role: str = "member", actor_role: str | None = "owner"):
    """Create (or find) the user `email` and make them a member of `org` with `role`.

    Returns (user, created). An admin cannot add owners. Raises TenancyError when already a member.
    """
    _check_role(role)
    _require_manager(actor_role)
    if role == Membership.Role.OWNER and actor_role != Membership.Role.OWNER:
        raise Forbidden("only an owner can add an owner")
    email = (email or "").strip().lower()
    if "@" not in email or len(email) > 150 or any(c.isspace() for c in email):
        raise TenancyError(f"{email!r} is not an e-mail address")
    User = get_user_model()
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=email, defaults={"email": email})
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        if Membership.objects.filter(user=user, organization=org).exists():
            raise TenancyError(f"{email} is already a member of {org.name}")
        Membership.objects.create(user=user, organization=org, role=role)
    return user, created


def set_role(org: Organization, user_id: int, role: str, actor_role: str | None) -> Membership:
    _check_role(role)
    _require_manager(actor_role)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(organization=org, user_id=user_id).first()
        if membership is None:
            raise TenancyError("no such member")
        if actor_role != Membership.Role.OWNER and Membership.Role.OWNER in (membership.role, role):
            raise Forbidden("only an owner can make or change an owner")
        if membership.role == Membership.Role.OWNER and role != Membership.Role.OWNER and not _owners_left(org, user_id):
            raise TenancyError("an organisation keeps at least one owner")
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def remove_member(org: Organization, user_id: int, actor_role: str | None) -> None:
    _require_manager(actor_role)
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(organization=org, user_id=user_id).first()
        if membership is None:
            raise TenancyError("no such member")
        if membership.role == Membership.Role.OWNER:
            if actor_role != Membership.Role.OWNER:
                raise Forbidden("only an owner can remove an owner")
            if not _owners_left(org, user_id):
                raise TenancyError("an organisation keeps at least one owner")
        membership.delete()


# --- one-time sign-in links -----------------------------------------------------------------------

def dashboard_may_issue_link(user, org: Organization) -> bool:
    """May an owner/admin of `org` get a sign-in link for `user` from the dashboard?

    A link signs in as the user everywhere, so only for someone who is nobody else yet: never signed
    in, no password, not staff, and in no organisation but `org`. Otherwise an admin of one
    organisation could "invite" the owner of another and sign in as them. (The server's operator,
    `nextframe createuser`, may issue links for anyone.)
    """
    if user.last_login is not None or user.has_usable_password() or user.is_staff or user.is_superuser:
        return False
    return not Membership.objects.filter(user=user).exclude(organization=org).exists()


def create_signin_link(user) -> str:
    """A fresh single-use token for `user` (the path is /accounts/signin/<token>/); also deletes
    expired links, so the table holds about one TTL's worth."""
    now = timezone.now()
    SignInLink.objects.filter(expires_at__lte=now).delete()
    token = "nfs_" + secrets.token_urlsafe(32)
    SignInLink.objects.create(token_hash=keys.hash_secret(token), user=user,
                              expires_at=now + timedelta(seconds=settings.SIGNIN_LINK_TTL_S))
    return token


def signin_path(token: str) -> str:
    return f"/accounts/signin/{token}/"


def redeem_signin_link(token: str):
    """The user of an unused, unexpired link, which is used up by this call; SignInLinkInvalid otherwise."""
    now = timezone.now()
    with transaction.atomic():
        # The conditional UPDATE is the single-use guarantee (as for tickets): of two racing
        # redeemers only one sees a row count of 1.
        claimed = SignInLink.objects.filter(token_hash=keys.hash_secret(token or ""), used_at__isnull=True,
                                            expires_at__gt=now).update(used_at=now)
        if claimed != 1:
            raise SignInLinkInvalid("this sign-in link is unknown, expired or already used")
        link = SignInLink.objects.select_related("user").get(token_hash=keys.hash_secret(token))
    if not link.user.is_active:
        raise SignInLinkInvalid("this account is disabled")
    return link.user


def ensure_owner(org: Organization, email: str):
    """The first run's owner of `org` (created when missing); returns the user."""
    user, _ = add_member(org, email, role=Membership.Role.OWNER, actor_role=Membership.Role.OWNER)
    return user
