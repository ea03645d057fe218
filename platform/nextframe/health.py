"""/healthz (the process is alive) and /readyz (database, channel layer and broker reachable, and
the process is not draining: 503 `{"status": "draining"}` once it has begun to shut down).

Both are public (load balancers and orchestrators call them without credentials), so they say
nothing that helps an attacker fingerprint the node: no Python, OS or library versions.
"""
from __future__ import annotations

import time
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_channel_layer() -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    token = uuid.uuid4().hex
    async_to_sync(layer.send)(channel, {"type": "readyz.ping", "token": token})
    message = async_to_sync(layer.receive)(channel)
    if message.get("token") != token:
        raise RuntimeError("channel layer returned a different message")


def _check_broker() -> None:
    from nextframe.celery import app, ensure_broker_dirs

    ensure_broker_dirs()
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


CHECKS = {"database": _check_database, "channel_layer": _check_channel_layer, "broker": _check_broker}


def readyz(request):
    from nextframe.live import drain

    if drain.draining():  # shutting down: take no new clients, whatever the checks would say
        return JsonResponse({"status": "draining", "checks": {}}, status=503)
    results, ok = {}, True
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
            results[name] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}
        except Exception as exc:  # any failure makes the node not ready; say which and why
            ok = False
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return JsonResponse({"status": "ready" if ok else "not_ready", "checks": results}, status=200 if ok else 503)
