"""Session redirects between nodes: a `session.start` placed on another node's device is handed over.

Node A admits a start (validation, moderation, quota, concurrency) and reserves; when the pool places
the lease on node B's device, A does not run it: `hand_over` mints a single-use ticket (the tenancy
tickets of POST /v1/tickets, redeemed the same way) bound to that lease, and the client gets
`session.redirect` with B's URL (registered in the pool by B, nextframe.live.nodes) and the ticket.

The client reconnects to B with `?ticket=` and sends its `session.start` again. B's handshake calls
`redeem`: a ticket bound to another node is refused (`wrong_node`, 4403) without being used up; a used
or expired one is refused like any ticket (4401); otherwise B *adopts* the lease (its keeper
heartbeats it from then on) and B's session service starts on it, under its session id.

Nothing leaks when the client never follows: the lease is not heartbeated by anyone until B adopts
it, so it expires within the pool's lease TTL, and the ticket lives no longer than that TTL.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

from django.conf import settings

from inference import protocol
from inference.pool.types import Reservation
from nextframe.tenancy import actions as tenancy

if TYPE_CHECKING:
    from inference.pool import Pool

log = logging.getLogger(__name__)

# A redirect that cannot be made (the target's registration vanished): the client retries at once.
RETRY_AFTER_S = 1.0


class WrongNode(tenancy.TenancyError):
    """A redirect ticket presented to a node it does not send the client to (left unused)."""

    code = "wrong_node"


class Unroutable(Exception):
    """The node holding the reservation advertises no URL (any more): nothing to redirect to."""


def hand_over(principal: tenancy.Principal, reservation: Reservation, pool: Pool) -> protocol.SessionRedirect:
    """The `session.redirect` for a reservation placed on another node: its URL and a single-use ticket
    bound to the lease. On failure the reservation is released and the error raised."""
    from nextframe.live.models import Redirect

    try:
        url = pool.node_urls().get(reservation.node_id, "")
        if not url:
            raise Unroutable(f"node {reservation.node_id!r} advertises no URL")
        token, ticket = tenancy.mint_ticket(principal, ttl_s=pool.ttl_s, counted=False)
        Redirect.objects.create(ticket=ticket, node=reservation.node_id, reservation=asdict(reservation))
    except BaseException:
        pool.release(reservation)
        raise
    log.info("session %s placed on %s: redirected to %s", reservation.session_id, reservation.device_id, url)
    return protocol.SessionRedirect(url=url, ticket=token, retry_after_s=0)


def redeem(token: str, address: str | None = None) -> tuple[tenancy.Principal, Reservation | None]:
    """Redeem a `?ticket=` on this node: the principal, and the reservation it hands over (None for a
    plain POST /v1/tickets ticket). Raises WrongNode, or tenancy.AuthError like any ticket."""
    from nextframe.live.models import Redirect

    bound = Redirect.objects.filter(ticket__token_hash=tenancy.ticket_hash(token)).values("node", "reservation").first()
    if bound is not None and bound["node"] != settings.NODE_ID:
        raise WrongNode(f"this ticket is for node {bound['node']}, not {settings.NODE_ID}: follow the redirect's url")
    principal = tenancy.redeem_ticket(token, address=address)  # single use: the conditional UPDATE
    if bound is None:
        return principal, None
    reservation = Reservation(**bound["reservation"])
    if reservation.org_id != str(principal.organization.pk):  # minted from the same principal: a bug otherwise
        raise tenancy.AuthError("the redirect ticket does not match its reservation")
    return principal, reservation
