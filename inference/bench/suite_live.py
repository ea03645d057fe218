"""Load generators of the benchmark suite, over live protocol v1 with the reference client.

- `round_trips`: one frame in flight at a time, identity through the platform vs the same bytes
  through a raw echo, interleaved in blocks so both see the same machine load;
- `run_sessions`: N concurrent video-to-video sessions at a fixed rate, each input stamped with
  the client's clock; latency = output arrival - capture stamp echoed in the output header.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import connect

from inference import protocol as p
from inference.client import LiveClient, LiveClientError, ReceivedFrame


def now_us() -> int:
    return int(time.monotonic() * 1e6)


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def test_jpeg(size: int, i: int = 0) -> bytes:
    from inference.codec import encode_jpeg

    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x + 3 * i) % 256, (y * 2 + i) % 256, (x ^ y) % 256], -1).astype(np.uint8)
    return encode_jpeg(img)


async def round_trips(live_url: str, key: str, echo_url: str, size: int, n: int, block: int = 25) -> dict[str, Any]:
    """p50/p99 round-trip ms of identity through the platform and of a raw echo of the same bytes."""
    jpeg = test_jpeg(size)
    platform_ms: list[float] = []
    echo_ms: list[float] = []
    async with LiveClient(live_url, key=key, max_pending_events=64) as client, \
            connect(echo_url, compression=None, max_size=8 * 1024 * 1024) as echo:
        await client.start("identity", width=size, height=size, fps=60)
        seq = 0

        async def one_platform(record: bool) -> None:
            nonlocal seq
            seq += 1
            t0 = time.perf_counter()
            await client.send_frame(seq, now_us(), jpeg)
            async for ev in client:
                if isinstance(ev, ReceivedFrame) and ev.header.input_seq == seq:
                    break
            if record:
                platform_ms.append((time.perf_counter() - t0) * 1000.0)

        async def one_echo(record: bool) -> None:
            nonlocal seq
            seq += 1
            data = p.pack_input_frame(seq, now_us(), jpeg)
            t0 = time.perf_counter()
            await echo.send(data)
            await echo.recv()
            if record:
                echo_ms.append((time.perf_counter() - t0) * 1000.0)

        for _ in range(10):  # warm-up: engine built, caches hot
            await one_platform(False)
            await one_echo(False)
        while len(platform_ms) < n:
            for _ in range(block):
                await one_platform(True)
            for _ in range(block):
                await one_echo(True)
            await asyncio.sleep(0.02)  # a frame's idle gap between blocks, like a paced client
        await client.stop()
    out: dict[str, Any] = {"size": size, "frames": len(platform_ms), "jpeg_bytes": len(jpeg),
           "platform_ms": {"p50": pct(platform_ms, 50), "p99": pct(platform_ms, 99)},
           "echo_ms": {"p50": pct(echo_ms, 50), "p99": pct(echo_ms, 99)}}
    out["overhead_ratio"] = {q: round(out["platform_ms"][q] / out["echo_ms"][q], 2) for q in ("p50", "p99")}
    return out


@dataclass
class _SessionResult:
    sent: int = 0
    received: int = 0
    late: int = 0
    latencies_ms: list[tuple[float, float]] = field(default_factory=list)  # (capture time s, latency ms)
    refused: str | None = None
    server_dropped_inputs: int = 0
    server_deadline_misses: int = 0


async def _one_session(url: str, key: str, model: str, size: int, fps: float, measure_from: float,
                       end_at: float, jpegs: list[bytes]) -> _SessionResult:
    res = _SessionResult()
    budget_ms = 1000.0 / fps
    try:
        async with LiveClient(url, key=key, max_pending_events=256) as client:
            await client.start(model, width=size, height=size, fps=int(fps))

            async def send() -> None:
                seq, t_next = 0, time.monotonic()
                while time.monotonic() < end_at:
                    seq += 1
                    ts = now_us()
                    await client.send_frame(seq, ts, jpegs[seq % len(jpegs)])
                    if ts / 1e6 >= measure_from:
                        res.sent += 1
                    t_next += 1.0 / fps
                    await asyncio.sleep(max(0.0, t_next - time.monotonic()))

            sender = asyncio.create_task(send())
            async for ev in client:
                if isinstance(ev, ReceivedFrame):
                    cap = ev.header.input_capture_ts_us / 1e6
                    if measure_from <= cap < end_at:
                        lat = (ev.received_at - cap) * 1000.0
                        res.received += 1
                        res.latencies_ms.append((cap, lat))
                        if lat > budget_ms:
                            res.late += 1
                elif ev.get("type") == "metrics":
                    res.server_dropped_inputs = int(ev.get("dropped_inputs") or 0)
                    res.server_deadline_misses = int(ev.get("deadline_misses") or 0)
                if time.monotonic() > end_at + 0.5:
                    break
            await sender
            await client.stop()
    except LiveClientError as exc:
        res.refused = exc.code
    return res


async def run_sessions(url: str, key: str, model: str, sessions: int, size: int, fps: float,
                       seconds: float, warmup: float = 1.0) -> dict[str, Any]:
    """N concurrent sessions; misses = inputs without output + outputs later than one frame period."""
    jpegs = [test_jpeg(size, i) for i in range(8)]
    start = time.monotonic() + 0.5 + 0.05 * sessions  # every session has started before measuring
    measure_from, end_at = start + warmup, start + warmup + seconds
    results = await asyncio.gather(*[_one_session(url, key, model, size, fps, measure_from, end_at, jpegs)
                                     for _ in range(sessions)])
    ok = [r for r in results if r.refused is None]
    sent = sum(r.sent for r in ok)
    received = sum(r.received for r in ok)
    late = sum(r.late for r in ok)
    lost = max(0, sent - received)
    lat = [x for r in ok for x in r.latencies_ms]
    mid = measure_from + seconds / 2
    first = [ms for t, ms in lat if t < mid]
    second = [ms for t, ms in lat if t >= mid]
    return {
        "sessions": sessions, "admitted": len(ok), "refused": [r.refused for r in results if r.refused],
        "inputs_sent": sent, "outputs": received, "inputs_dropped": lost, "late_outputs": late,
        "miss_rate": round((lost + late) / sent, 4) if sent else None,
        "drop_rate": round(lost / sent, 4) if sent else None,
        "delivered_fps": round(received / seconds, 1),
        "latency_ms": {"p50": pct([ms for _, ms in lat], 50), "p99": pct([ms for _, ms in lat], 99)},
        "latency_p99_first_half_ms": pct(first, 99), "latency_p99_second_half_ms": pct(second, 99),
        "server_dropped_inputs": sum(r.server_dropped_inputs for r in ok),
        "server_deadline_misses": sum(r.server_deadline_misses for r in ok),
    }
