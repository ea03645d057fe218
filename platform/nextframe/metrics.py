"""GET /metrics: this server process in the Prometheus text format (docs/operations.md, "Metrics").

Served from one registry per process (prometheus_client's default, which also carries the
`process_*` series: resident memory, open descriptors, CPU seconds):

- the frame loop's monotonic series, by engine (inference.runtime.counters): the latency
  histogram `nextframe_frame_latency_seconds`, `nextframe_frames_out_total`,
  `nextframe_deadline_misses_total`, `nextframe_dropped_frames_total{direction}`;
- read at scrape time (nothing on the frame path): live sessions of this process by model and tier,
  the device runtimes' load (`nextframe_device_*`), the pool's devices with their capacity,
  reservations and free share (the pool's view: with Redis, every node's devices), clip jobs
  queued and running (the database), and whether the process is draining.

Access: with NEXTFRAME_METRICS_TOKEN set, `Authorization: Bearer <token>`; without it only a direct
loopback request (no proxy header: through a proxy the client address is whatever the proxy was told).

Hooks for the other apps: `register(collector)` adds a prometheus_client collector to what is served
(call it once, from an AppConfig.ready()). Names reserved for them, documented in operations.md:
`nextframe_moderation_decisions_total{check,action,category}` and `nextframe_ledger_lag_seconds`,
`nextframe_outbox_pending`.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
from collections import Counter
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_lock = threading.Lock()
_registered: set[int] = set()
# Headers a proxy adds: a request carrying one did not come from this machine directly.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def register(collector: Collector, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve `collector` on /metrics (idempotent: registering the same object twice is a no-op)."""
    with _lock:
        if id(collector) in _registered:
            return
        registry.register(collector)
        _registered.add(id(collector))


class PlatformCollector(Collector):
    """Everything read at scrape time: sessions, device runtimes, pool, clip queue, drain state."""

    def collect(self) -> Iterator[Metric]:
        for part in (_sessions, _runtimes, _pool, _clips, _drain):
            try:
                yield from part()
            except Exception:  # one source down (the database, Redis) must not blank the others
                log.exception("metrics: %s could not be read", part.__name__.strip("_"))


def _sessions() -> Iterator[Metric]:
    from nextframe.live import drain

    counts: Counter[tuple[str, str]] = Counter()
    for socket in drain.sockets():
        service = getattr(socket, "service", None)
        spec = getattr(service, "_spec", None)
        if service is not None and service.running and spec is not None:
            counts[(spec.id, service.tier or "")] += 1
    family = GaugeMetricFamily("nextframe_live_sessions", "Live sessions running in this process",
                               labels=["model", "tier"])
    for (model, tier), n in sorted(counts.items()):
        family.add_metric([model, tier], n)
    yield family


def _runtimes() -> Iterator[Metric]:
    from inference.runtime.prometheus import RuntimeCollector
    from nextframe.live import host

    runtimes = host.get_host().runtimes()
    # Device-level series only: the per-session ones carry a session id each (unbounded labels).
    for family in RuntimeCollector(*runtimes).collect():
        if family.name.startswith("nextframe_device_"):
            yield family


def _pool() -> Iterator[Metric]:
    from nextframe.capacity import get_pool

    usage = get_pool().usage()
    labels = ["device", "node"]
    capacity = GaugeMetricFamily("nextframe_pool_capacity", "Device capacity (device-equivalents)", labels=labels)
    reserved = GaugeMetricFamily("nextframe_pool_reserved", "Reserved device share by priority",
                                 labels=labels + ["priority"])
    free = GaugeMetricFamily("nextframe_pool_free", "Unreserved device share (0 while draining)", labels=labels)
    leases = GaugeMetricFamily("nextframe_pool_leases", "Live and clip leases held on the device", labels=labels)
    memory = GaugeMetricFamily("nextframe_pool_reserved_memory_bytes", "Device memory reserved", labels=labels)
    draining = GaugeMetricFamily("nextframe_pool_device_draining", "1 when the device takes no new work",
                                 labels=labels)
    for device, row in sorted(usage.items()):
        lv = [device, str(row["node_id"])]
        capacity.add_metric(lv, row["capacity"])
        reserved.add_metric(lv + ["live"], row["reserved_live"])
        reserved.add_metric(lv + ["clip"], row["reserved_clip"])
        left = row["capacity"] - row["reserved_live"] - row["reserved_clip"]
        free.add_metric(lv, 0.0 if row["draining"] else max(0.0, left))
        leases.add_metric(lv, row["leases"])
        memory.add_metric(lv, row["reserved_memory"])
        draining.add_metric(lv, 1.0 if row["draining"] else 0.0)
    yield from (capacity, reserved, free, leases, memory, draining)


def _clips() -> Iterator[Metric]:
    from django.db import close_old_connections
    from django.db.models import Count

    from nextframe.clips.models import Clip

    try:
        rows = dict(Clip.objects.filter(status__in=Clip.ACTIVE).values_list("status")
                    .annotate(n=Count("pk")).values_list("status", "n"))
    finally:
        close_old_connections()
    family = GaugeMetricFamily("nextframe_clip_jobs", "Clip jobs queued or running (all nodes: the database)",
                               labels=["status"])
    for status in Clip.ACTIVE:
        family.add_metric([str(status)], rows.get(status, 0))
    yield family


def _drain() -> Iterator[Metric]:
    from nextframe.live import drain

    yield GaugeMetricFamily("nextframe_draining", "1 while this process shuts down (admits nothing new)",
                            value=1.0 if drain.draining() else 0.0)


_platform = PlatformCollector()


def install(registry: CollectorRegistry = REGISTRY) -> CollectorRegistry:
    """Register the frame loop's series and the platform collector (once per registry)."""
    from inference.runtime.counters import COLLECTORS

    for collector in (*COLLECTORS, _platform):
        register(collector, registry)
    return registry


def _allowed(request: HttpRequest) -> tuple[bool, int, str]:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode()):
            return True, 200, ""
        return False, 401, "a valid `Authorization: Bearer <NEXTFRAME_METRICS_TOKEN>` is required"
    try:
        loopback = ipaddress.ip_address(request.META.get("REMOTE_ADDR") or "").is_loopback
    except ValueError:
        loopback = False
    if loopback and not any(request.META.get(name) for name in PROXY_HEADERS):
        return True, 200, ""
    return False, 403, "/metrics answers loopback only unless NEXTFRAME_METRICS_TOKEN is set"


def view(request: HttpRequest) -> HttpResponse:
    ok, status, message = _allowed(request)
    if not ok:
        code = "unauthenticated" if status == 401 else "forbidden"
        return JsonResponse({"error": {"code": code, "message": message}}, status=status)
    from prometheus_client import CONTENT_TYPE_LATEST

    return HttpResponse(generate_latest(install()), content_type=CONTENT_TYPE_LATEST)
