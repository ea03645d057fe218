"""Graceful drain of a server process: what SIGTERM (or Ctrl-C on `nextframe up`) does before exit.

`python -m nextframe.web` runs `drain()` on the event loop when the reactor begins to shut down,
before daphne cancels the applications that are still running (nextframe.web.patch_graceful_drain):

1. the process is *draining*: `/readyz` answers 503 `{"status": "draining"}` (load balancers stop
   sending it new clients), a WebSocket opened now is closed with 1001 "server shutting down", and a
   `session.start` is refused with `capacity_unavailable` (`retry_after_s` 1, close 1013), which
   clients already retry, on another node;
2. every live socket of the process is told: a running session ends with `session.ended` reason
   `shutdown` (its runtime session closed, its lease released, its final usage written, then a
   normal close 1000); a socket without a session is closed with 1001; a session still being
   admitted ends with `shutdown` right after its `session.ready`;
3. the process waits for those sockets (and any HTTP request in flight) to finish, for at most
   SHUTDOWN_GRACE_S in all; whatever is left is then cancelled by daphne, and a session cancelled
   that way is still ended (reason `shutdown`, usage written, lease released) without its message.

No Django or torch here: nextframe.health reads `draining()` on every readiness probe.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

from inference.error_codes import CloseCode

log = logging.getLogger(__name__)

# The close code and reason of a socket that the draining server closes without a session (RFC 6455
# 1001 "going away": the server is going down). Clients reconnect, through the load balancer.
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
CLOSE_REASON = "server shutting down"
# What a session.start gets while the process drains: capacity_unavailable with this retry hint.
RETRY_AFTER_S = 1.0
REFUSAL_MESSAGE = "this server is shutting down; retry and another server will take the session"


class DrainableSocket(Protocol):
    async def drain_shutdown(self) -> None: ...


class _State:
    def __init__(self) -> None:
        self.draining = False
        self.since: float | None = None
        self.sockets: weakref.WeakSet[DrainableSocket] = weakref.WeakSet()
        self.hooks: list[Callable[[], None]] = []


_state = _State()


def draining() -> bool:
    """Whether this process is shutting down (admits nothing new)."""
    return _state.draining


def register(socket: DrainableSocket) -> None:
    """A live socket of this process, to be told when it drains."""
    _state.sockets.add(socket)


def unregister(socket: DrainableSocket) -> None:
    _state.sockets.discard(socket)


def sockets() -> list[DrainableSocket]:
    """The live sockets of this process (nextframe.metrics counts their sessions)."""
    return list(_state.sockets)


def on_start(hook: Callable[[], None]) -> None:
    """Call `hook` (blocking, run in a thread) when the drain starts: the node leaves placement."""
    _state.hooks.append(hook)


def reset() -> None:
    """Forget the drain (tests run several in one process)."""
    _state.draining, _state.since = False, None
    _state.sockets = weakref.WeakSet()
    _state.hooks = []


async def drain(grace_s: float, pending: Callable[[], int] = lambda: 0) -> bool:
    """Stop admitting, end every live session with `shutdown`, then wait for the sockets to close.

    `pending` counts what is still running in the server (daphne's application instances); the wait
    ends when it reaches 0 or after `grace_s` in all. True when everything finished in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    _state.draining, _state.since = True, time.monotonic()
    for hook in _state.hooks:
        try:
            await asyncio.wait_for(asyncio.to_thread(hook), timeout=max(0.0, deadline - loop.time()))
        except Exception:  # the node's registration expires by itself within its TTL anyway
            log.exception("draining: a drain hook failed")
    sockets = list(_state.sockets)
    log.warning("draining: ending %d live socket(s), grace %.1f s", len(sockets), grace_s)
    tasks = [asyncio.ensure_future(_tell(socket.drain_shutdown)) for socket in sockets]
    if tasks:
        done, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        if late:
            log.warning("draining: %d socket(s) did not end their session within the grace period", len(late))
    while loop.time() < deadline:  # daphne's instances end as their sockets close: polled, no event
        if pending() == 0:
            break
        await asyncio.sleep(0.05)
    left = pending()
    log.warning("drained in %.2f s; %d connection(s) still open are cancelled now",
                time.monotonic() - (_state.since or 0.0), left)
    return left == 0


async def _tell(shutdown: Callable[[], Awaitable[None]]) -> None:
    try:
        await shutdown()
    except Exception:  # one socket's failure must not keep the others from draining
        log.exception("draining: a live socket failed to shut down")
