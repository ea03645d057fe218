"""Billing of live sessions over the real consumer (Channels communicator, real runtime on the CPU,
real database): what the client is told, the session record, GET /v1/usage and the ledger agree to
the micro-GPU-second; the quota warns once at 90% and ends the session at 100%; a suspended
organisation cannot start one."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async

from nextframe.live.models import LiveSession
from nextframe.live.tests.test_consumer import connect, next_json, send, start, stop
from nextframe.tenancy import actions

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def all_text_until_ended(comm, timeout: float = 20) -> list[dict]:
    seen: list[dict] = []
    while True:
        message = await comm.receive_output(timeout)
        assert message["type"] != "websocket.close", seen[-3:]
        if message.get("text") is not None:
            seen.append(json.loads(message["text"]))
            if seen[-1]["type"] == "session.ended":
                return seen


def ledger_of(session_id: str) -> tuple[Decimal, Decimal, int]:
    from billing.models import Segment

    rows = list(Segment.objects.filter(source="live", source_id=session_id))
    return sum((s.gpu_seconds for s in rows), Decimal(0)), sum((s.amount for s in rows), Decimal(0)), len(rows)


async def test_the_client_the_record_the_usage_api_and_the_ledger_agree(live_pool, settings, client_for):
    settings.LIVE_METRICS_INTERVAL_S = 0.1
    settings.BILLING_SEGMENT_S = 0.25  # several segments in a short session
    live_pool(1.0)
    org = await database_sync_to_async(actions.create_org)("exact")
    _, key = await database_sync_to_async(actions.create_key)(org)
    comm = await connect(key)
    ready = await start(comm, "dreamfield", width=64, height=64)
    metrics = [m for m in [await next_json(comm, skip=()) for _ in range(8)] if m["type"] == "metrics"]
    ended = await stop(comm)
    used = ended["usage"]
    record = await database_sync_to_async(LiveSession.objects.get)(pk=ready["session_id"])
    gpu, cost, segments = await database_sync_to_async(ledger_of)(ready["session_id"])
    body = (await database_sync_to_async(client_for(key).get)("/v1/usage")).json()
    exact = Decimal(used["gpu_seconds_decimal"])
    assert segments >= 2 and exact > 0 and metrics and metrics[-1]["gpu_seconds"] <= used["gpu_seconds"]
    # The runtime's final metrics (stored with the record), what the client was told, the record,
    # the ledger and the usage API: one number, to the micro-GPU-second, and one cost.
    assert Decimal(str(record.metrics["gpu_seconds"])) == exact == record.gpu_seconds == gpu
    assert Decimal(str(used["gpu_seconds"])) == exact and Decimal(body["gpu_seconds"]) == exact
    assert Decimal(used["cost"]) == record.cost == cost == Decimal(body["cost"])


async def test_the_quota_warns_once_at_90_percent_and_ends_the_session_at_100(live_pool, settings):
    settings.LIVE_METRICS_INTERVAL_S = 0.1
    live_pool(1.0)
    org = await database_sync_to_async(actions.create_org)("capped", gpu_seconds_limit=Decimal("0.2"))
    _, key = await database_sync_to_async(actions.create_key)(org)
    comm = await connect(key)
    await start(comm, "dreamfield", width=64, height=64)
    seen = await all_text_until_ended(comm)
    warnings = [m for m in seen if m["type"] == "quota.warning"]
    assert len(warnings) == 1 and warnings[0]["percent"] == 90 and warnings[0]["limit_gpu_seconds"] == 0.2
    assert 0.18 <= warnings[0]["used_gpu_seconds"] < 0.2
    assert seen.index(warnings[0]) < len(seen) - 1 and seen[-1]["reason"] == "quota"
    assert Decimal(seen[-1]["usage"]["gpu_seconds_decimal"]) >= Decimal("0.2")
    # Over the quota now: a new session is refused before it starts.
    again = await connect(key)
    await send(again, type="session.start", model="dreamfield", width=64, height=64)
    refused = await next_json(again)
    assert refused["code"] == "quota_exceeded" and (await next_json(again))["code"] == 4403
    # A test-mode key is metered at price 0 and never counts against (nor is stopped by) the quota.
    _, test_key = await database_sync_to_async(actions.create_key)(org, test=True)
    free = await connect(test_key)
    ready = await start(free, "dreamfield", width=64, height=64)
    assert ready["price_per_gpu_second"] == "0"
    assert (await stop(free))["usage"]["cost"] == "0.000000"


async def test_a_suspended_organisation_cannot_start_a_session(live_pool):
    from billing import quota

    live_pool(1.0)
    org = await database_sync_to_async(actions.create_org)("unpaid")
    _, key = await database_sync_to_async(actions.create_key)(org)

    def suspend() -> None:
        account = quota.account_for(org)
        account.status = "suspended"
        account.save()

    await database_sync_to_async(suspend)()
    comm = await connect(key)
    await send(comm, type="session.start", model="dreamfield", width=64, height=64)
    refused = await next_json(comm)
    assert refused["type"] == "error" and refused["code"] == "account_suspended"
    assert (await next_json(comm))["code"] == 4403
    assert not await database_sync_to_async(LiveSession.objects.filter(organization=org).exists)()
