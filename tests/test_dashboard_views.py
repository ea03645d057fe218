"""The dashboard's views and permissions, in-process (both profiles): sign-in links, pages scoped to
the current organisation, the organisation switch, and roles enforced by the server."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from nextframe.tenancy import actions, members
from nextframe.tenancy.models import ApiKey, Membership, Organization, SignInLink

pytestmark = pytest.mark.django_db

PAGES = ["/dashboard/", "/dashboard/keys/", "/dashboard/usage/", "/dashboard/sessions/", "/dashboard/clips/",
         "/dashboard/moderation/", "/dashboard/members/"]


def user_in(org, email: str, role: str):
    user, _ = members.add_member(org, email, role=role, actor_role="owner")
    return user


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def error_code(response) -> str:
    return response.json()["error"]["code"]


# --- sign-in links --------------------------------------------------------------------------------

def test_signin_link_works_once_and_is_stored_hashed(org):
    owner = user_in(org, "ada@example.com", "owner")
    token = members.create_signin_link(owner)
    assert not SignInLink.objects.filter(token_hash__contains=token[4:12]).exists()
    assert token not in str(list(SignInLink.objects.values_list("token_hash", flat=True)))
    client = Client()
    first = client.get(members.signin_path(token))
    assert first.status_code == 302 and first["Location"] == "/dashboard/"
    assert client.get("/dashboard/").status_code == 200
    again = Client().get(members.signin_path(token))
    assert again.status_code == 410 and b"already used" in again.content
    assert "_auth_user_id" not in again.wsgi_request.session


def test_expired_or_unknown_link_is_a_clear_page_not_a_500(org):
    owner = user_in(org, "ada@example.com", "owner")
    token = members.create_signin_link(owner)
    SignInLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    for path in (members.signin_path(token), "/accounts/signin/nfs_forged/", "/accounts/signin/x/"):
        response = Client().get(path)
        assert response.status_code == 410 and b"cannot be used" in response.content, path


def test_first_run_creates_an_owner_and_a_link_then_never_again(db):
    from nextframe.cli import bootstrap_default_org, first_owner_signin_token

    key = bootstrap_default_org()
    token = first_owner_signin_token()
    assert key.startswith("nf_live_") and token.startswith("nfs_")
    membership = Membership.objects.get(organization__name="default")
    assert membership.role == "owner" and not membership.user.has_usable_password()
    assert Client().get(members.signin_path(token)).status_code == 302
    assert bootstrap_default_org() is None


def test_createuser_prints_a_link_and_reissues_for_an_existing_member(org, capsys):
    from nextframe.cli import main

    assert main(["createuser", "Bob@Example.com", "--org", "acme", "--role", "admin", "--url", "http://h:1"]) == 0
    link = capsys.readouterr().out.strip().splitlines()[-1]
    assert link.startswith("http://h:1/accounts/signin/nfs_")
    assert Membership.objects.get(user__username="bob@example.com").role == "admin"
    assert main(["createuser", "bob@example.com", "--org", "acme", "--url", "http://h:1"]) == 0
    again = capsys.readouterr().out.strip().splitlines()[-1]
    assert again != link and Membership.objects.get(user__username="bob@example.com").role == "admin"
    assert main(["createuser", "bob@example.com", "--org", "nope"]) == 1


def test_signup_is_off_unless_enabled(settings, db):
    assert Client().get("/accounts/signup/").status_code == 404
    settings.SIGNUP_ENABLED = True
    response = Client().post("/accounts/signup/", {"email": "new@example.com", "organization": "newco",
                                                   "password": "a-long-password"})
    assert response.status_code == 302
    assert Membership.objects.get(user__username="new@example.com", organization__name="newco").role == "owner"
    # An existing account cannot be signed up again (that would set its password).
    taken = Client().post("/accounts/signup/", {"email": "NEW@example.com", "organization": "other",
                                                "password": "another-long-password"})
    assert taken.status_code == 200 and b"exists" in taken.content
    assert not Organization.objects.filter(name="other").exists()
    assert Client().login(username="new@example.com", password="a-long-password")


# --- pages and scoping ----------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["owner", "member"])
def test_every_page_renders_for_every_role(org, role):
    client = signed_in(user_in(org, "u@example.com", role))
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, path
        assert b'name="csrf-token"' in response.content and b"acme" in response.content, path


def test_pages_need_a_signed_in_member(org, django_user_model):
    for path in PAGES:
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), path
    loner = django_user_model.objects.create_user("loner")
    response = signed_in(loner).get("/dashboard/keys/")
    assert response.status_code == 403 and b"no organisation" in response.content


def test_pages_and_api_are_scoped_to_the_current_organisation_and_switch(org, other_org):
    user = user_in(org, "u@example.com", "owner")
    members.add_member(other_org, "u@example.com", role="member", actor_role="owner")
    mine, _ = actions.create_key(org, name="acme-key")
    theirs, _ = actions.create_key(other_org, name="globex-key")
    client = signed_in(user)
    page = client.get("/dashboard/keys/").content
    assert b"acme-key" in page and b"globex-key" not in page
    assert b'id="org-switch-select"' in page  # two organisations: the switcher is shown
    assert {k["id"] for k in client.get("/dashboard/api/keys").json()["data"]} == {mine.key_id}
    assert client.get("/v1/billing").json()["organization"] == "acme"
    # Switch: pages and the REST API now act for globex, with the member role there.
    response = client.post("/dashboard/org/?next=/dashboard/keys/", {"organization": other_org.pk})
    assert response.status_code == 302 and response["Location"] == "/dashboard/keys/"
    page = client.get("/dashboard/keys/").content
    assert b"globex-key" in page and b"acme-key" not in page and b"data-revoke" not in page
    assert client.get("/v1/billing").json()["organization"] == "globex"
    assert client.post(f"/dashboard/api/keys/{theirs.key_id}/revoke").status_code == 403
    # An organisation the user is not in, and an open redirect, are refused.
    assert client.post("/dashboard/org/", {"organization": 999999}).status_code == 403
    response = client.post("/dashboard/org/?next=https://evil.example/", {"organization": org.pk})
    assert response["Location"] == "/dashboard/"


# --- roles, enforced by the server ----------------------------------------------------------------

def test_owner_creates_and_revokes_keys_member_cannot(org, other_org, client_for):
    owner = signed_in(user_in(org, "o@example.com", "owner"))
    member = signed_in(user_in(org, "m@example.com", "member"))
    created = owner.post("/dashboard/api/keys", {"name": "ci", "scopes": ["read"]}, content_type="application/json")
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith(body["prefix"]) and body["scopes"] == ["read"]
    assert client_for(body["key"]).get("/v1/models").status_code == 200
    assert body["key"] not in owner.get("/dashboard/keys/").content.decode()  # shown once
    assert owner.get("/dashboard/api/keys").json()["data"][0].get("key") is None
    # A member: refused by the server, whatever the page shows.
    assert member.post("/dashboard/api/keys", {"scopes": ["read"]}, content_type="application/json").status_code == 403
    refused = member.post(f"/dashboard/api/keys/{body['id']}/revoke")
    assert refused.status_code == 403 and error_code(refused) == "forbidden"
    assert ApiKey.objects.get(key_id=body["id"]).revoked_at is None
    assert b"data-revoke" not in member.get("/dashboard/keys/").content
    # Another organisation's key is not found; the owner's revoke works and the key stops working.
    foreign, _ = actions.create_key(other_org)
    assert owner.post(f"/dashboard/api/keys/{foreign.key_id}/revoke").status_code == 404
    assert owner.post(f"/dashboard/api/keys/{body['id']}/revoke").status_code == 200
    assert client_for(body["key"]).get("/v1/models").status_code == 401
    bad = owner.post("/dashboard/api/keys", {"scopes": ["root"]}, content_type="application/json")
    assert bad.status_code == 400 and error_code(bad) == "invalid_request"


def test_member_cannot_change_the_moderation_policy_admin_can(org):
    member = signed_in(user_in(org, "m@example.com", "member"))
    admin = signed_in(user_in(org, "a@example.com", "admin"))
    assert member.get("/v1/moderation/policy").status_code == 200  # reads are fine
    refused = member.patch("/v1/moderation/policy", {"max_violations": 7}, content_type="application/json")
    assert refused.status_code == 403
    done = admin.patch("/v1/moderation/policy", {"max_violations": 7}, content_type="application/json")
    assert done.status_code == 200 and done.json()["max_violations"] == 7


def test_session_calls_need_the_csrf_token(org):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_in(org, "o@example.com", "owner"))
    assert client.post("/dashboard/api/keys", {"scopes": ["read"]}, content_type="application/json").status_code == 403
    client.get("/dashboard/keys/")
    token = client.cookies["csrftoken"].value
    ok = client.post("/dashboard/api/keys", {"scopes": ["read"]}, content_type="application/json",
                     HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 201


def test_members_invite_change_roles_and_remove(org):
    owner_user = user_in(org, "o@example.com", "owner")
    owner = signed_in(owner_user)
    admin = signed_in(user_in(org, "a@example.com", "admin"))
    member = signed_in(user_in(org, "m@example.com", "member"))
    assert member.post("/dashboard/api/members", {"email": "x@example.com"},
                       content_type="application/json").status_code == 403
    invited = admin.post("/dashboard/api/members", {"email": "New@Example.com", "role": "member"},
                         content_type="application/json")
    assert invited.status_code == 201
    link = invited.json()["signin_url"]
    assert link.startswith("http://testserver/accounts/signin/nfs_")
    newcomer = Client()
    assert newcomer.get(link.removeprefix("http://testserver")).status_code == 302
    assert newcomer.get("/dashboard/").status_code == 200
    new_id = invited.json()["user_id"]
    # An admin cannot make or touch owners; an owner can.
    assert admin.post("/dashboard/api/members", {"email": "boss@example.com", "role": "owner"},
                      content_type="application/json").status_code == 403
    assert admin.patch(f"/dashboard/api/members/{new_id}", {"role": "owner"},
                       content_type="application/json").status_code == 403
    assert admin.delete(f"/dashboard/api/members/{owner_user.pk}").status_code == 403
    assert admin.post(f"/dashboard/api/members/{owner_user.pk}/link").status_code == 403
    assert admin.patch(f"/dashboard/api/members/{new_id}", {"role": "admin"},
                       content_type="application/json").status_code == 200
    # The last owner stays an owner.
    last = owner.patch(f"/dashboard/api/members/{owner_user.pk}", {"role": "member"}, content_type="application/json")
    assert last.status_code == 400 and "at least one owner" in last.json()["error"]["message"]
    assert owner.delete(f"/dashboard/api/members/{new_id}").status_code == 204
    assert not Membership.objects.filter(user_id=new_id, organization=org).exists()
    assert owner.post("/dashboard/api/members", {"email": "m@example.com"},
                      content_type="application/json").status_code == 400  # already a member


def test_session_detail_is_scoped_and_a_linked_user_can_set_a_password(org, other_org):
    from nextframe.live.models import LiveSession

    user = user_in(org, "o@example.com", "owner")
    client = signed_in(user)
    mine = LiveSession.objects.create(organization=org, model="dreamfield", tier="interactive", width=64, height=64,
                                      fps=10, metrics={"fps": 9.5, "ttff_ms": 120.0, "latency_ms": {"p50": 30.0}})
    theirs = LiveSession.objects.create(organization=other_org, model="identity", tier="interactive", width=64,
                                        height=64, fps=10)
    page = client.get(f"/dashboard/sessions/{mine.pk}/")
    assert page.status_code == 200 and b"120 ms" in page.content
    assert mine.pk.encode() in client.get("/dashboard/sessions/").content
    assert client.get(f"/dashboard/sessions/{theirs.pk}/").status_code == 404
    # No password yet (came by a link): set one, then the sign-in form works.
    response = client.post("/accounts/password/", {"new_password1": "a-long-password-1", "new_password2":
                                                   "a-long-password-1"})
    assert response.status_code == 200 and b"Password saved" in response.content
    assert Client().post("/accounts/login/", {"username": "o@example.com", "password": "a-long-password-1"}
                         ).status_code == 302


def test_the_header_forms_work_with_csrf_enforced_and_add_no_hidden_inputs(org, other_org):
    import re

    client = Client(enforce_csrf_checks=True)
    client.force_login(user_in(org, "u@example.com", "owner"))
    members.add_member(other_org, "u@example.com", role="member", actor_role="owner")
    page = client.get("/dashboard/keys/").content.decode()
    header = page.split("<main", 1)[0]
    assert 'type="hidden"' not in header
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', header).group(1)
    switched = client.post("/dashboard/org/?next=/dashboard/keys/",
                           {"organization": other_org.pk, "csrfmiddlewaretoken": token})
    assert switched.status_code == 302 and b"<h1>globex</h1>" in client.get("/dashboard/").content
    assert client.post("/accounts/logout/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert client.get("/dashboard/").status_code == 302  # signed out


def test_an_admin_gets_no_sign_in_link_for_someone_who_is_somebody_elsewhere(org, other_org):
    """A link signs in as the user everywhere: the dashboard never makes one for an account that
    could be worth taking over (another organisation's owner, anyone who signed in or has a password)."""
    admin = signed_in(user_in(org, "a@example.com", "admin"))
    other_owner = user_in(other_org, "boss@globex.example", "owner")
    added = admin.post("/dashboard/api/members", {"email": "boss@globex.example", "role": "member"},
                       content_type="application/json")
    assert added.status_code == 201 and added.json()["signin_url"] is None
    refused = admin.post(f"/dashboard/api/members/{other_owner.pk}/link")
    assert refused.status_code == 403 and not SignInLink.objects.filter(user=other_owner).exists()
    assert b"data-link-for=\"%d\"" % other_owner.pk not in admin.get("/dashboard/members/").content
    # Someone who signed in already (here: this org's only, by a link) gets no new link from an admin.
    newcomer = admin.post("/dashboard/api/members", {"email": "n@example.com"}, content_type="application/json").json()
    assert newcomer["signin_url"]
    assert Client().get(newcomer["signin_url"].removeprefix("http://testserver")).status_code == 302
    assert admin.post(f"/dashboard/api/members/{newcomer['user_id']}/link").status_code == 403
