"""Tenancy business logic: organisations, keys, tickets. Views, the CLI and consumers call these."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from nextframe.tenancy import keys, throttle
from nextframe.tenancy.models import ApiKey, Organization, Ticket

# last_used_at is written at most this often per key, so authentication stays read-mostly.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TenancyError(Exception):
    code = "invalid_request"


class AuthError(TenancyError):
    code = "unauthenticated"


class NotFound(TenancyError):
    code = "not_found"


class Throttled(AuthError):
    """Too many failed authentications from this address, or too many tickets: retry later.

    A subclass of AuthError so that a caller that only knows AuthError still refuses the request.
    """

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Principal:
    """Who is calling: an organisation, through an API key or a ticket."""

    organization: Organization
    api_key: ApiKey | None
    scopes: tuple[str, ...]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def key_group(key_id: str) -> str:
    """Channel-layer group of a key's live sessions (revocation reaches them across processes)."""
    return f"apikey.{key_id}"


def create_org(name: str, max_live_sessions: int = 4, gpu_seconds_limit: Decimal | None = None) -> Organization:
    if Organization.objects.filter(name=name).exists():
        raise TenancyError(f"organisation {name!r} already exists")
    return Organization.objects.create(
        name=name, max_live_sessions=max_live_sessions, gpu_seconds_limit=gpu_seconds_limit
    )


def parse_scopes(scopes: list[str] | str | None) -> list[str]:
    if scopes is None:
        return list(ApiKey.SCOPES)
    if isinstance(scopes, str):
        scopes = [s.strip() for s in scopes.split(",") if s.strip()]
    unknown = sorted(set(scopes) - set(ApiKey.SCOPES))
    if unknown or not scopes:
        raise TenancyError(f"scopes must be a non-empty subset of {', '.join(ApiKey.SCOPES)}; got {scopes}")
    return sorted(set(scopes), key=ApiKey.SCOPES.index)


def create_key(org: Organization, scopes: list[str] | str | None = None, test: bool = False, name: str = "") -> tuple[ApiKey, str]:
    """Create a key; returns the row and the full key string, which is never retrievable again."""
    full, parsed = keys.generate("test" if test else "live")
    row = ApiKey.objects.create(
        organization=org,
        key_id=parsed.key_id,
        mode=parsed.mode,
        key_hash=keys.hash_secret(full),
        scopes=parse_scopes(scopes),
        name=name,
    )
    return row, full


def find_key(key_or_id: str) -> ApiKey:
    """A key by its full string, its `nf_<mode>_<id>_` prefix or its bare id."""
    candidate = key_or_id.strip()
    if candidate.startswith("nf_"):
        parts = candidate.split("_")
        candidate = parts[2] if len(parts) >= 3 else ""
    try:
        return ApiKey.objects.select_related("organization").get(key_id=candidate)
    except ApiKey.DoesNotExist:
        raise NotFound(f"no API key {key_or_id!r}") from None


def revoke_key(key: ApiKey) -> ApiKey:
    """Revoke a key and tell every process to end its live sessions (within seconds)."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(key_group(key.key_id), {"type": "key.revoked", "key_id": key.key_id})
    return key


def refuse_if_throttled(address: str | None) -> None:
    """Raise Throttled if `address` failed to authenticate too often in the current window."""
    retry = throttle.auth_failures_retry_after(address)
    if retry is not None:
        raise Throttled(f"too many failed authentications from {address or 'this address'}; retry later", retry)


def record_auth_failure(address: str | None) -> None:
    """Count a failed authentication of `address` (a bad key, ticket or Authorization header)."""
    throttle.record_auth_failure(address)


def authenticate_key(raw: str, address: str | None = None) -> Principal:
    """Resolve a bearer key; raises AuthError (malformed, unknown, wrong secret or revoked).

    `address` is the client's address: its failures are counted, and once it has failed
    NEXTFRAME_AUTH_FAILURE_LIMIT times in the window, Throttled is raised before any key is checked.
    """
    refuse_if_throttled(address)
    try:
        return _authenticate_key(raw)
    except AuthError:
        throttle.record_auth_failure(address)
        raise


def _authenticate_key(raw: str) -> Principal:
    try:
        parsed = keys.parse(raw)
    except keys.MalformedKey as exc:
        raise AuthError(str(exc)) from None
    row = ApiKey.objects.select_related("organization").filter(key_id=parsed.key_id, mode=parsed.mode).first()
    # Hash and compare even for an unknown id so timing does not reveal which ids exist.
    stored = row.key_hash if row else "0" * 64
    if not keys.matches(raw, stored) or row is None:
        raise AuthError("unknown API key")
    if row.revoked_at is not None:
        raise AuthError("API key has been revoked")
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now
    return Principal(row.organization, row, tuple(row.scopes))


def ticket_hash(token: str) -> str:
    """What the tickets table stores of a ticket (a lookup without redeeming: nextframe.live.redirect)."""
    return keys.hash_secret(token or "")


def mint_ticket(principal: Principal | None = None, *, user=None, organization: Organization | None = None,
                ttl_s: float | None = None, counted: bool = True) -> tuple[str, Ticket]:
    """A single-use ticket for a browser WebSocket, from an API key or a logged-in dashboard user.

    Raises Throttled beyond NEXTFRAME_TICKETS_PER_MINUTE per key (dashboard: per user). Every
    mint also deletes the expired tickets (used or not), so the table holds about one TTL's worth.
    `ttl_s` shortens the life (at most TICKET_TTL_S); `counted=False` skips the per-key count: a
    session.redirect's ticket (nextframe.live.redirect), minted by the server for an admitted start.
    """
    if principal is not None:
        org, api_key, scopes = principal.organization, principal.api_key, list(principal.scopes)
    else:
        assert organization is not None, "a ticket needs a principal, or a user and their organization"
        org, api_key, scopes = organization, None, list(ApiKey.SCOPES)
    ident = f"key:{api_key.key_id}" if api_key is not None else f"user:{getattr(user, 'pk', None)}:org:{org.pk}"
    retry = throttle.take_ticket_slot(ident) if counted else None
    if retry is not None:
        raise Throttled(f"more than {settings.NEXTFRAME_TICKETS_PER_MINUTE} tickets per minute", retry)
    now = timezone.now()
    Ticket.objects.filter(expires_at__lte=now).delete()
    token = "nft_" + secrets.token_urlsafe(32)
    ticket = Ticket.objects.create(
        token_hash=ticket_hash(token),
        organization=org,
        api_key=api_key,
        user=user,
        scopes=scopes,
        expires_at=now + timedelta(seconds=min(settings.TICKET_TTL_S, ttl_s or settings.TICKET_TTL_S)),
    )
    return token, ticket


def redeem_ticket(token: str, address: str | None = None) -> Principal:
    """Consume a ticket exactly once; raises AuthError if unknown, used, expired or its key revoked.

    Failures count against `address` like failed keys (authenticate_key).
    """
    refuse_if_throttled(address)
    try:
        return _redeem_ticket(token)
    except AuthError:
        throttle.record_auth_failure(address)
        raise


def _redeem_ticket(token: str) -> Principal:
    with transaction.atomic():
        now = timezone.now()
        # The conditional UPDATE is the single-use guarantee: of two racing redeemers only one
        # sees a row count of 1, on SQLite and PostgreSQL alike.
        claimed = Ticket.objects.filter(
            token_hash=ticket_hash(token), used_at__isnull=True, expires_at__gt=now
        ).update(used_at=now)
        if claimed != 1:
            raise AuthError("ticket is unknown, expired or already used")
        ticket = Ticket.objects.select_related("organization", "api_key").get(token_hash=ticket_hash(token))
    if ticket.api_key is not None and ticket.api_key.revoked_at is not None:
        raise AuthError("API key has been revoked")
    return Principal(ticket.organization, ticket.api_key, tuple(ticket.scopes))


def organizations_of(user) -> list[Organization]:
    return list(Organization.objects.filter(memberships__user=user).order_by("name"))
