"""The dashboard's own JSON endpoints (/dashboard/api/...): API keys and members of the current
organisation. Session-authenticated with the CSRF token (DashboardSessionAuthentication), errors in
the REST envelope; every role check is in nextframe.tenancy.members, here only applied.

Everything else the dashboard changes (clips, the moderation policy) goes through the public REST
API under /v1/ with the same session.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from nextframe.api.errors import ApiError
from nextframe.api.serializers import StrictSerializer
from nextframe.tenancy import actions, members
from nextframe.tenancy.auth import DashboardSessionAuthentication
from nextframe.tenancy.models import ApiKey


class SignedIn(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, actions.Principal) or request.user is None:
            from rest_framework.exceptions import NotAuthenticated

            raise NotAuthenticated("sign in to the dashboard first")
        return True


class DashboardView(APIView):
    schema = None  # the dashboard's own endpoints are not part of the public REST API (OpenAPI)
    authentication_classes = [DashboardSessionAuthentication]
    permission_classes = [SignedIn]

    def org_and_role(self, request, manage: bool = False):
        org = request.auth.organization
        role = members.role_of(request.user, org)
        if manage and not members.can_manage(role):
            raise ApiError("only an owner or an admin of the organisation can do this", code="forbidden",
                           status_code=403)
        return org, role


def _tenancy_error(exc: actions.TenancyError) -> ApiError:
    status = 403 if isinstance(exc, members.Forbidden) else 400
    return ApiError(str(exc), code=exc.code if status == 403 else "invalid_request", status_code=status)


def describe_key(row: ApiKey) -> dict:
    return {"id": row.key_id, "prefix": row.prefix, "name": row.name, "mode": row.mode, "scopes": row.scopes,
            "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


class KeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKey.SCOPES), allow_empty=False)
    test = serializers.BooleanField(required=False, default=False)


class KeysView(DashboardView):
    def get(self, request):
        org, _ = self.org_and_role(request)
        return Response({"object": "list", "data": [describe_key(k) for k in org.api_keys.order_by("-created_at")]})

    def post(self, request):
        """Create a key (owner/admin); the full key is in this response only."""
        org, _ = self.org_and_role(request, manage=True)
        body = KeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row, full = actions.create_key(org, scopes=body.validated_data["scopes"], test=body.validated_data["test"],
                                       name=body.validated_data["name"])
        return Response({**describe_key(row), "key": full}, status=201)


class KeyRevokeView(DashboardView):
    def post(self, request, key_id: str):
        """Revoke a key of the current organisation (owner/admin); its live sessions end within seconds."""
        org, _ = self.org_and_role(request, manage=True)
        row = ApiKey.objects.filter(organization=org, key_id=key_id).first()
        if row is None:  # another organisation's key is indistinguishable from none
            raise ApiError("no such API key", code="not_found", status_code=404)
        return Response(describe_key(actions.revoke_key(row)))


class MemberCreateSerializer(StrictSerializer):
    email = serializers.EmailField(max_length=150)
    role = serializers.ChoiceField(choices=members.ROLES, default="member")


class RoleSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=members.ROLES)


def _signin_url(request, user) -> str:
    return request.build_absolute_uri(members.signin_path(members.create_signin_link(user)))


class MembersView(DashboardView):
    def post(self, request):
        """Invite: create the user (or add an existing one) with a role; answers a one-time sign-in link."""
        org, role = self.org_and_role(request, manage=True)
        body = MemberCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            user, created = members.add_member(org, body.validated_data["email"], body.validated_data["role"],
                                               actor_role=role)
        except actions.TenancyError as exc:
            raise _tenancy_error(exc) from None
        # An existing account is only added: it signs in as it always did (no link that would let
        # this organisation's admins sign in as it).
        link = _signin_url(request, user) if members.dashboard_may_issue_link(user, org) else None
        return Response({"user_id": user.pk, "email": user.get_username(), "role": body.validated_data["role"],
                         "created": created, "signin_url": link}, status=201)


class MemberDetailView(DashboardView):
    def patch(self, request, user_id: int):
        org, role = self.org_and_role(request, manage=True)
        body = RoleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            membership = members.set_role(org, user_id, body.validated_data["role"], actor_role=role)
        except actions.TenancyError as exc:
            raise _tenancy_error(exc) from None
        return Response({"user_id": user_id, "role": membership.role})

    def delete(self, request, user_id: int):
        org, role = self.org_and_role(request, manage=True)
        try:
            members.remove_member(org, user_id, actor_role=role)
        except actions.TenancyError as exc:
            raise _tenancy_error(exc) from None
        return Response(status=204)


class MemberLinkView(DashboardView):
    def post(self, request, user_id: int):
        """A fresh one-time sign-in link for a member (owner/admin; an owner's link: owners only)."""
        org, role = self.org_and_role(request, manage=True)
        target = get_user_model().objects.filter(pk=user_id, memberships__organization=org).first()
        if target is None:
            raise ApiError("no such member", code="not_found", status_code=404)
        target_role = members.role_of(target, org)
        if target_role == "owner" and role != "owner":
            raise ApiError("only an owner can send an owner a sign-in link", code="forbidden", status_code=403)
        if not members.dashboard_may_issue_link(target, org):
            raise ApiError("this account has signed in before, has a password or belongs to another organisation: "
                           "it signs in by itself (the server's operator can run nextframe createuser)",
                           code="forbidden", status_code=403)
        return Response({"user_id": target.pk, "signin_url": _signin_url(request, target)}, status=201)
