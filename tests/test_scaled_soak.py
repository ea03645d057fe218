"""Scaled-out soak: live sessions on PostgreSQL + Redis that outlive every timeout they cross.

A real `nextframe up` (daphne, Celery worker) with REDIS_URL set, several live sessions at once and
authenticated sockets that never start one, held for SOAK_S seconds: longer than redis-py's default
socket timeout (5 s), channels_redis's blocking pop (5 s, crossed six times), the Redis health
check, the video-to-video idle timeout (30 s, kept alive by input frames) and the pool lease TTL
(15 s, crossed twice). Then one revocation must reach every socket through the channel layer.

Before the fix (redis-py 8's 5 s default read timeout on the channel layer's 5 s BZPOPMIN) one
socket per web process died about every 5 s: close 1011, session `server_error`.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from inference.client import LiveClient, ReceivedFrame, pattern_source
from tests.server import http, running_server, scaled_services

# Once per `make test`: in the scaled-out run, where PostgreSQL and Redis are required.
pytestmark = [pytest.mark.slow, pytest.mark.profile("scaled")]

SOAK_S = 32.0
WINDOW_S = 4.0  # every session must get frames in every window of this length
SESSIONS = (("dreamfield", False), ("dreamfield", False), ("identity", True))
IDLE_SOCKETS = 2
REVOCATION_S = 5.0  # the documented bound for a revocation to end a session


async def _session(ws: str, key: str, model: str, send_input: bool, until: float) -> dict:
    """One live session held until `until` (monotonic); returns its frame times and fate."""
    arrivals: list[float] = []
    ended = None
    error = None
    async with LiveClient(ws, key=key) as client:
        await client.start(model, width=64, height=64, fps=10)
        source = pattern_source(64, 64) if send_input else None

        async def feed() -> None:
            seq = 0
            while True:  # 5 input frames a second: well inside the idle timeout, light on the CPU
                seq += 1
                await client.send_frame(seq, int(time.time() * 1e6), next(source))
                await asyncio.sleep(0.2)

        feeder = asyncio.create_task(feed()) if source else None
        try:
            async for event in client:
                if isinstance(event, ReceivedFrame):
                    arrivals.append(time.monotonic())
                elif event.get("type") == "session.ended":
                    ended = event
                    break
                elif event.get("type") == "error":
                    error = event
        except Exception as exc:  # noqa: BLE001 - a dropped socket is what this test looks for
            error = {"exception": repr(exc), "close_code": getattr(exc, "close_code", None)}
        finally:
            if feeder:
                feeder.cancel()
    return {"model": model, "arrivals": arrivals, "ended": ended, "error": error, "soak_until": until}


async def _idle_socket(ws: str, key: str) -> dict:
    """An authenticated socket that never starts a session: only the channel layer can close it."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(ws, additional_headers={"Authorization": f"Bearer {key}"}) as sock:
        try:
            async for _ in sock:
                pass
        except ConnectionClosed:
            pass
        return {"close_code": sock.close_code, "closed_at": time.monotonic()}


async def _soak(server, key: str) -> tuple[list[dict], list[dict], float, float]:
    started = time.monotonic()
    until = started + SOAK_S
    idle = [asyncio.create_task(_idle_socket(server.ws, key)) for _ in range(IDLE_SOCKETS)]
    sessions = [asyncio.create_task(_session(server.ws, key, model, feed, until)) for model, feed in SESSIONS]
    done, _ = await asyncio.wait([*idle, *sessions], timeout=SOAK_S)
    soaked = time.monotonic() - started
    # Then revoke the key from another process (the CLI): its group event reaches every socket.
    proc = await asyncio.create_subprocess_exec(*server.cli("revokekey", key, dry=True), env=server.env)
    await proc.wait()
    revoked_at = time.monotonic()
    await asyncio.wait([*idle, *sessions], timeout=REVOCATION_S + 10)
    return ([t.result() if t.done() else {"stuck": True} for t in sessions],
            [t.result() if t.done() else {"stuck": True} for t in idle], soaked, revoked_at)


def test_scaled_out_sessions_outlive_every_redis_timeout_and_still_get_group_events(tmp_path):
    with scaled_services() as extra, running_server(tmp_path, extra) as server:
        assert server.cli("createorg", "soak", "--max-live-sessions", str(len(SESSIONS))).returncode == 0
        key, lister = (server.cli("createkey", "--org", "soak").stdout.strip().splitlines()[-1] for _ in range(2))

        sessions, idle, soaked, revoked_at = asyncio.run(_soak(server, key))
        log = "".join(server.output)

        fates = [(s.get("model"), s.get("error"), (s.get("ended") or {}).get("reason"),
                  round(s["arrivals"][-1] - s["arrivals"][0], 1) if s.get("arrivals") else None) for s in sessions]
        assert soaked >= SOAK_S - 0.5, f"a socket ended during the soak: {fates} {idle}"
        for s in sessions:
            assert not s.get("stuck"), f"a session never ended after the revocation: {s}"
            assert s["error"] is None, f"{s['model']} session failed: {s['error']}"
            # Frames kept flowing: some in every window of the soak.
            first = s["arrivals"][0]
            soak_end = s["soak_until"]
            windows = int((soak_end - first) // WINDOW_S)
            for i in range(windows):
                lo, hi = first + i * WINDOW_S, first + (i + 1) * WINDOW_S
                assert any(lo <= t < hi for t in s["arrivals"]), f"{s['model']}: no frame in [{i * WINDOW_S}, +{WINDOW_S}) s"
            # It lived to the end of the soak and was then ended by the revocation, nothing else.
            assert s["ended"]["reason"] == "revoked", s["ended"]
        for sock in idle:
            # The group event is the only way an idle socket learns of a revocation (no ticks).
            assert sock.get("close_code") == 4401, f"idle socket: {sock}"
            assert sock["closed_at"] - revoked_at < REVOCATION_S, sock
        assert "Timeout reading from" not in log, log[-4000:]

        status, listing = http("GET", f"{server.base}/v1/sessions?limit=50", lister)
        assert status == 200, listing
        reasons = [row["end_reason"] for row in listing["data"]]
        assert len(listing["data"]) == len(SESSIONS), json.dumps(listing)[:2000]
        assert all(row["status"] == "ended" for row in listing["data"]), listing
        assert "server_error" not in reasons and set(reasons) == {"revoked"}, reasons
