"""Signing in without a password: one-time links (nextframe up, nextframe createuser, an invite),
and the optional self-service sign-up (NEXTFRAME_SIGNUP_ENABLED, off by default)."""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, login, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from nextframe.tenancy import actions, members

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


@never_cache
def signin_link(request: HttpRequest, token: str) -> HttpResponse:
    """GET /accounts/signin/<token>/: use the link up (single use) and sign its user in.

    A used, expired or unknown link gets a page that says so and what to do (410), never a 500.
    """
    try:
        user = members.redeem_signin_link(token)
    except members.SignInLinkInvalid as exc:
        return render(request, "frontend/signin_invalid.html", {"reason": str(exc)}, status=410)
    login(request, user, backend=MODEL_BACKEND)
    response = redirect("dashboard")
    # The token must not leak onward through a Referer header from the page it lands on.
    response["Referrer-Policy"] = "no-referrer"
    return response


class SignUpForm(forms.Form):
    email = forms.EmailField(label="E-mail", max_length=150)
    organization = forms.SlugField(label="Organisation name", max_length=64,
                                   help_text="lowercase letters, digits, '-' or '_'")
    password = forms.CharField(label="Password", widget=forms.PasswordInput, min_length=10)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Self-service sign-up: a new user and a new organisation they own. 404 unless enabled."""
    if not settings.SIGNUP_ENABLED:
        raise Http404("sign-up is off")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        name = slugify(form.cleaned_data["organization"])
        email = form.cleaned_data["email"].strip().lower()
        try:
            with transaction.atomic():
                # Never an existing account: sign-up would set its password (a takeover).
                if get_user_model().objects.filter(username=email).exists():
                    raise actions.TenancyError("an account with this e-mail exists: sign in instead")
                org = actions.create_org(name)
                user = members.ensure_owner(org, email)
                user.set_password(form.cleaned_data["password"])
                user.save(update_fields=["password"])
        except actions.TenancyError as exc:
            form.add_error(None, str(exc))
        else:
            login(request, user, backend=MODEL_BACKEND)
            return redirect("dashboard")
    return render(request, "frontend/signup.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def account(request: HttpRequest) -> HttpResponse:
    """Set a password (a user who came by a sign-in link has none) or change it; then the sign-in
    form works too."""
    form_class = PasswordChangeForm if request.user.has_usable_password() else SetPasswordForm
    form = form_class(request.user, request.POST or None)
    saved = False
    if request.method == "POST" and form.is_valid():
        form.save()
        update_session_auth_hash(request, form.user)  # stay signed in
        saved = True
        form = PasswordChangeForm(request.user)
    return render(request, "frontend/account.html", {"form": form, "saved": saved})
