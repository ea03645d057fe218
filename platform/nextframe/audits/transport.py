"""The audit's transport on this deployment: sessions on the node's own device runtimes, with a pool reservation.

Each audit session reserves its share of a device from the pool at *clip* priority - the lowest -
so a background audit never takes capacity a live session needs (it fails with
capacity_unavailable instead, and is retried later), and it runs on the same DeviceRuntime the live
consumer uses: the numbers are the ones a client of this node gets, minus the network.
`clip_reservation` does the same for the in-process clip audit, which renders and encodes in this
process: it holds a clip-priority lease (the share a clip job of that size would take) while it
renders, and stops with `preempted` when a live session takes the lease back.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from inference.audit import AuditError, RuntimeTransport

AUDIT_ORG = "nextframe-audit"
log = logging.getLogger(__name__)


def _record_usage(res: Any, model: str, held_s: float) -> None:
    """The audit's capacity in the ledger: the platform's own cost, never billed to a customer.
    Never raises (an audit's result does not depend on its bookkeeping; a failure is logged)."""
    import asyncio
    import threading

    from nextframe import usage

    def write() -> None:
        try:
            usage.record_audit(res.session_id, model, res.share, held_s)
        except Exception:  # noqa: BLE001
            log.exception("audit reservation %s: its usage could not be written", res.session_id)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        write()
        return

    def in_thread() -> None:  # the ORM refuses to run inside an event loop
        from django.db import close_old_connections

        try:
            write()
        finally:
            close_old_connections()

    worker = threading.Thread(target=in_thread, name="nf-audit-usage", daemon=True)
    worker.start()
    worker.join(timeout=10.0)


class _AuditRuntime:
    """A node's runtime as an audit uses it: each session it opens is exempt from the live host's
    frame moderation (the platform probing itself with test patterns; no customer sees it)."""

    def __init__(self, host: Any, runtime: Any) -> None:
        self._host = host
        self._runtime = runtime

    def open_session(self, *args: Any, **kwargs: Any) -> Any:
        handle = self._runtime.open_session(*args, **kwargs)
        self._host.exempt(handle.session_id)
        return handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)


class DeploymentTransport(RuntimeTransport):
    name = "deployment"

    def acquire(self, model: str, width: int, height: int, fps: float) -> tuple[Any, Callable[[], None] | None]:
        from inference.engines import get_spec
        from inference.pool import CapacityUnavailable, ConcurrencyLimit
        from nextframe.live.host import get_host

        host = get_host()
        cost = get_spec(model).cost(width, height, fps)
        try:
            res = host.pool.reserve(AUDIT_ORG, f"audit-{uuid.uuid4().hex[:12]}", cost.compute_share,
                                    memory_bytes=cost.memory_bytes, priority="clip")
        except (CapacityUnavailable, ConcurrencyLimit) as exc:
            raise AuditError("capacity_unavailable", f"no device capacity for an audit session: {exc}") from None
        def lost(reason: str) -> None:
            self.lost = reason  # preempted by a live session, or expired: the audit stops

        host.keep(res, on_lost=lost)
        released = False
        held_since = time.monotonic()

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                host.forget(res)
                host.pool.release(host.current(res))
                _record_usage(res, model, time.monotonic() - held_since)

        try:
            return _AuditRuntime(host, host.runtime_for(res.device_id)), release
        except BaseException:
            release()
            raise

    async def aclose(self) -> None:
        return None  # the runtimes belong to the node's LiveHost


@contextmanager
def clip_reservation(model: str, width: int, height: int, fps: float) -> Iterator[Callable[[], None]]:
    """Hold a clip-priority pool lease for an in-process clip audit; yields the render's `guard`.

    The share is what a clip job of this size reserves (the engine's cost, at least CLIP_MIN_SHARE).
    The guard raises AuditError("preempted") once the lease is lost; the lease is released on exit.
    Raises AuditError("capacity_unavailable") when no device has room.
    """
    from django.conf import settings

    from inference.engines import get_spec
    from inference.pool import CapacityUnavailable, ConcurrencyLimit
    from nextframe.live.host import get_host

    host = get_host()
    cost = get_spec(model).cost(width, height, fps)
    share = max(cost.compute_share, float(settings.CLIP_MIN_SHARE))
    try:
        res = host.pool.reserve(AUDIT_ORG, f"audit-clip-{uuid.uuid4().hex[:12]}", share,
                                memory_bytes=cost.memory_bytes, priority="clip")
    except (CapacityUnavailable, ConcurrencyLimit) as exc:
        raise AuditError("capacity_unavailable", f"no device capacity for a clip audit: {exc}") from None
    lost: list[str] = []
    host.keep(res, on_lost=lost.append)
    held_since = time.monotonic()

    def guard() -> None:
        if lost:
            raise AuditError("preempted", f"the clip audit's pool lease was lost ({lost[0]})")

    try:
        yield guard
    finally:
        host.forget(res)
        host.pool.release(host.current(res))
        _record_usage(res, model, time.monotonic() - held_since)
