"""This process as a node of the pool: registered from its start, advertised by URL, retired on drain.

`serve()` runs once in the web server (`python -m nextframe.web`) before it accepts connections:

- the pool registers this node's devices with NEXTFRAME_PUBLIC_URL, the URL other nodes redirect
  the clients of sessions placed here to (nextframe.live.redirect); only the serving process does,
  never a worker or a management command of the same node;
- the host's LeaseKeeper starts at once, so the devices are re-registered every ttl/3 whether or not
  a session runs (the node's heartbeat): a node that stops (killed, frozen, cut off from Redis)
  leaves placement within one lease TTL (NEXTFRAME_POOL_LEASE_TTL_S), its leases with it;
- when the process drains (SIGTERM), its devices are re-registered as draining at once: no new
  session is placed or redirected here while its running sessions end.
"""
from __future__ import annotations

import logging

from django.conf import settings

from nextframe.capacity import get_pool
from nextframe.live import drain
from nextframe.live.host import get_host

log = logging.getLogger(__name__)


def serve() -> None:
    """Register this node (with its URL) and keep it registered; retire it when the process drains."""
    pool = get_pool()
    pool.node_url = settings.PUBLIC_URL
    try:
        pool.refresh()
    except Exception:  # Redis not there yet: the keeper registers the node as soon as it is
        log.exception("node %s: the first device registration failed", pool.node_id)
    get_host().start()
    drain.on_start(retire)
    log.info("node %s serving %d device(s)%s", pool.node_id, len(pool.local_devices),
             f" at {pool.node_url}" if pool.node_url else " (no NEXTFRAME_PUBLIC_URL: no redirects to it)")


def retire() -> None:
    """Leave placement: this node's devices are registered as draining from now on."""
    pool = get_pool()
    pool.draining = True
    pool.refresh()
