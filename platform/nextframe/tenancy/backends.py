"""Django authentication backends for the login forms (dashboard and admin)."""
from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check for the login forms (dashboard and admin).

    Axes refuses to authenticate without a request; `authenticate()` calls that come from no
    request (the test client's login(), management commands) have no client to lock out, so they
    skip the check here and go on to the model backend.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
