"""Brute-force throttles: failed API keys/tickets per client address (REST and WebSocket), tickets
per key, the login forms (django-axes), and the purge of the tickets table.

Each test uses its own client address, so counts left in the cache by another test (the scaled
profile's cache is Redis, shared by the whole run) never decide its outcome.
"""
from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from inference import protocol
from nextframe.tenancy import actions, keys
from nextframe.tenancy.models import Ticket

pytestmark = pytest.mark.django_db

LIMIT = 3


@pytest.fixture
def address() -> str:
    """A client address no other test uses."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


@pytest.fixture
def throttled(settings):
    settings.NEXTFRAME_AUTH_FAILURE_LIMIT = LIMIT
    settings.NEXTFRAME_AUTH_FAILURE_WINDOW_S = 300


def envelope_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]


def assert_rate_limited(response) -> None:
    assert response.status_code == 429, response.content
    error = envelope_of(response)
    assert error["code"] == "rate_limited"
    retry = int(response["Retry-After"])
    assert 1 <= retry <= 300 and error["retry_after_s"] == retry


def test_failed_keys_from_one_address_are_refused_with_429_then_even_a_valid_key(throttled, address, api_key):
    client = Client(REMOTE_ADDR=address)
    wrong = keys.generate()[0]
    bad_headers = [f"Bearer {wrong}", "Bearer nf_live_garbage", "Basic dXNlcjpwYXNz"]
    for header in bad_headers[:LIMIT]:
        response = client.get("/v1/models", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401 and envelope_of(response)["code"] == "unauthenticated"
    # Over the limit: refused before any key is looked at, the valid one included.
    assert_rate_limited(client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {wrong}"))
    assert_rate_limited(client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {api_key}"))
    assert_rate_limited(client.post("/v1/tickets", HTTP_AUTHORIZATION=f"Bearer {api_key}"))
    # Another address is not affected.
    other = Client(REMOTE_ADDR="192.0.2.7")
    assert other.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 200


def test_successes_do_not_count(throttled, address, api_key):
    client = Client(REMOTE_ADDR=address)
    for _ in range(LIMIT * 3):
        assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 200


def test_failed_tickets_count_like_failed_keys(throttled, address, api_key):
    for _ in range(LIMIT):
        with pytest.raises(actions.AuthError) as info:
            actions.redeem_ticket("nft_not-a-ticket", address=address)
        assert not isinstance(info.value, actions.Throttled)
    token, _ = actions.mint_ticket(actions.authenticate_key(api_key))
    with pytest.raises(actions.Throttled) as info:
        actions.redeem_ticket(token, address=address)
    assert 0 < info.value.retry_after_s <= 300
    assert actions.redeem_ticket(token, address="192.0.2.99").organization.name == "acme"


async def _ws_close_code(address: str, headers=None, path: str = "/v1/live") -> int:
    from nextframe.asgi import application

    comm = WebsocketCommunicator(application, path, headers=headers or [])
    comm.scope["client"] = (address, 40000)
    await comm.connect()
    message = await comm.receive_output(5)
    assert message["type"] == "websocket.close", message
    return message["code"]


@pytest.mark.django_db(transaction=True)
async def test_websocket_key_and_ticket_failures_are_throttled_per_address(throttled, address, api_key):
    wrong = keys.generate()[0].encode()
    assert await _ws_close_code(address, [(b"authorization", b"Bearer " + wrong)]) == protocol.CLOSE_UNAUTHENTICATED
    assert await _ws_close_code(address, path="/v1/live?ticket=nft_guess") == protocol.CLOSE_UNAUTHENTICATED
    # REST and WebSocket failures share one count per address.
    response = await database_sync_to_async(Client(REMOTE_ADDR=address).get)(
        "/v1/models", HTTP_AUTHORIZATION="Bearer " + wrong.decode())
    assert response.status_code == 401
    # Now even the valid key is refused at the handshake, with 4429 ("too many").
    assert await _ws_close_code(address, [(b"authorization", f"Bearer {api_key}".encode())]) == protocol.CLOSE_CONCURRENCY
    throttled_rest = await database_sync_to_async(Client(REMOTE_ADDR=address).get)(
        "/v1/models", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert_rate_limited(throttled_rest)


def test_tickets_per_key_are_limited(settings, client_for, api_key, other_key):
    settings.NEXTFRAME_TICKETS_PER_MINUTE = 5
    client = client_for(api_key)
    for _ in range(5):
        assert client.post("/v1/tickets").status_code == 201
    assert_rate_limited(client.post("/v1/tickets"))
    assert client_for(other_key).post("/v1/tickets").status_code == 201  # per key, not global


def test_minting_purges_expired_tickets(client_for, api_key):
    client = client_for(api_key)
    for _ in range(3):
        assert client.post("/v1/tickets").status_code == 201
    used = client.post("/v1/tickets").json()["ticket"]
    actions.redeem_ticket(used)
    Ticket.objects.update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    assert Ticket.objects.count() == 4
    fresh = client.post("/v1/tickets").json()["ticket"]
    assert Ticket.objects.count() == 1  # the expired ones (used or not) are gone, the new one stays
    assert actions.redeem_ticket(fresh).organization.name == "acme"


def test_login_form_locks_an_address_out_after_repeated_failures(settings, django_user_model, address):
    settings.AXES_FAILURE_LIMIT = 3
    django_user_model.objects.create_user("ada", password="right-password")
    client = Client(REMOTE_ADDR=address)
    for _ in range(2):
        response = client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    locked = client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
    assert locked.status_code == 429 and int(locked["Retry-After"]) >= 1
    # Locked out: even the right password is refused, on the dashboard and the admin forms.
    assert client.post("/accounts/login/", {"username": "ada", "password": "right-password"}).status_code == 429
    assert client.post("/admin/login/", {"username": "ada", "password": "right-password"}).status_code == 429
    # Another address logs in normally.
    response = Client(REMOTE_ADDR="192.0.2.55").post("/accounts/login/", {"username": "ada", "password": "right-password"})
    assert response.status_code == 302


def test_an_unreachable_cache_fails_the_throttles_open_not_every_request(throttled, settings, address, api_key):
    """Redis restarting (the cache of every scaled-out node): authentication goes on, counted by
    nobody, instead of a 500 for every request and WebSocket handshake (the Redis-restart fault test)."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": f"redis://127.0.0.1:{port}/0",
                                   "OPTIONS": {"socket_connect_timeout": 0.2}}}
    client = Client(REMOTE_ADDR=address)
    wrong = keys.generate()[0]
    for _ in range(LIMIT + 2):  # past the limit: nothing counted, nothing blocked
        response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {wrong}")
        assert response.status_code == 401 and envelope_of(response)["code"] == "unauthenticated"
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 200
    minted = client.generic("POST", "/v1/tickets", HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert minted.status_code == 201, minted.content
    assert actions.redeem_ticket(minted.json()["ticket"], address=address).api_key is not None
