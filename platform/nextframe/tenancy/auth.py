"""DRF authentication and permissions for API keys (Bearer) and the dashboard session."""
from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from nextframe.tenancy import actions


def client_address(request) -> str | None:
    """The address the request came from, as the server saw it (REMOTE_ADDR)."""
    return request.META.get("REMOTE_ADDR") or None


def throttled_error(exc: actions.Throttled) -> Exception:
    """A Throttled from the tenancy layer as the REST 429 `rate_limited` error (Retry-After set)."""
    from nextframe.api.errors import ApiError  # here: rest_framework.views imports this module's settings

    return ApiError(str(exc), code="rate_limited", status_code=429, retry_after_s=exc.retry_after_s)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer nf_live_...`. request.user is None; request.auth is the Principal."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not token.strip():
            # A header that is not even a Bearer key counts as a failed attempt too.
            try:
                actions.refuse_if_throttled(client_address(request))
            except actions.Throttled as exc:
                raise throttled_error(exc) from None
            actions.record_auth_failure(client_address(request))
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <api key>'")
        try:
            principal = actions.authenticate_key(token.strip(), address=client_address(request))
        except actions.Throttled as exc:
            raise throttled_error(exc) from None
        except actions.AuthError as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return (None, principal)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="nextframe"'


class DashboardSessionAuthentication(authentication.SessionAuthentication):
    """A logged-in dashboard user acting for their current organisation (the one chosen with the
    dashboard's switcher, else their first) with the scopes of their role there; CSRF enforced."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        from nextframe.tenancy import members

        user, _ = result
        org, role = members.current_organization(user, getattr(request, "session", None))
        if org is None:
            raise exceptions.PermissionDenied("this user belongs to no organisation")
        return (user, actions.Principal(org, None, members.scopes_for_role(role)))


class HasApiKey(permissions.BasePermission):
    """Authenticated as an organisation. Views name the scope they need in `required_scope`."""

    message = "this API key lacks the scope this endpoint needs"

    def has_permission(self, request, view) -> bool:
        principal = request.auth
        if not isinstance(principal, actions.Principal):
            raise exceptions.NotAuthenticated("missing API key: send 'Authorization: Bearer <api key>'")
        scope = getattr(view, "required_scope", None)
        if scope is not None and not principal.has_scope(scope):
            return False
        if not getattr(view, "allow_suspended", False):
            from nextframe import usage

            if usage.account_suspended(principal.organization):
                from nextframe.api.errors import ApiError

                raise ApiError("the organisation's account is suspended (an invoice is unpaid); "
                               "GET /v1/billing says why", code="account_suspended", status_code=402)
        return True



def read_or_scope(scope: str) -> type[permissions.BasePermission]:
    """A permission for endpoints whose reads accept `read` or `scope` and whose writes need `scope`
    (HasApiKey checks one scope per view; clips and moderation decide per method)."""

    class ReadOrScope(permissions.BasePermission):
        message = f"this API key lacks the scope this endpoint needs ({scope}; reads also accept read)"

        def has_permission(self, request, view) -> bool:
            principal = request.auth
            if request.method in permissions.SAFE_METHODS:
                return principal.has_scope("read") or principal.has_scope(scope)
            return principal.has_scope(scope)

    ReadOrScope.__name__ = ReadOrScope.__qualname__ = f"{scope.capitalize()}Scope"
    return ReadOrScope
