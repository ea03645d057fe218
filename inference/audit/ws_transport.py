"""`WebSocketTransport`: the audit over live protocol v1, against any endpoint (`--url ws://.../v1/live`).

Uses the reference client (`inference.client.LiveClient`). The model description (kind, params,
declared tier) comes from the endpoint's `GET /v1/models` (same host, http(s) scheme); an endpoint
without that REST call can still be audited when the model is one this code base knows.
Frame arrival times are taken by the client's reader task when the message is read off the socket.
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from inference.client import LiveClient, ReceivedFrame
from inference.protocol import NO_INPUT_SEQ

from .transport import AuditFrame, AuditSession, FrameInbox, ModelInfo


def models_url(ws_url: str) -> str:
    """ws://host:port/v1/live -> http://host:port/v1/models."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    path = parts.path.rsplit("/live", 1)[0] if parts.path.endswith("/live") else "/v1"
    return urlunsplit((scheme, parts.netloc, path.rstrip("/") + "/models", "", ""))


def _fetch_models(url: str, key: str | None, timeout: float = 10.0) -> list[dict[str, Any]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the URL is the user's endpoint
        body = json.loads(resp.read())
    return list(body.get("data", body) if isinstance(body, dict) else body)


class _WsSession:
    def __init__(self, transport: WebSocketTransport, client: LiveClient) -> None:
        self._t = transport
        self._c = client
        self._inbox = FrameInbox(asyncio.get_running_loop())
        self.last_metrics: dict[str, Any] | None = None
        self.rejected: list[dict[str, Any]] = []
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self._c:
                if isinstance(event, ReceivedFrame):
                    h = event.header
                    # The client decodes "no input" to None; AuditFrame keeps the wire's marker.
                    input_seq = NO_INPUT_SEQ if h.input_seq is None else h.input_seq
                    self._inbox.put(AuditFrame(h.frame_index, input_seq, h.control_seq, event.jpeg,
                                               event.received_at))
                elif event.get("type") == "metrics":
                    self.last_metrics = event
                elif event.get("type") == "control.rejected":
                    self.rejected.append(event)
        except Exception:  # the socket ended: the audit notices missing frames by timeout
            return

    async def send_frame(self, seq: int, jpeg: bytes) -> float:
        t = self._t.now()
        await self._c.send_frame(seq, int(time.time() * 1e6), jpeg)
        return t

    async def send_control(self, seq: int, params: dict[str, Any]) -> float:
        t = self._t.now()
        await self._c.control(seq, params=params)
        return t

    async def next_frame(self, timeout: float) -> AuditFrame | None:
        return await self._inbox.get(timeout)

    async def close(self) -> dict[str, Any] | None:
        try:
            await self._c.stop(timeout=10.0)
        except Exception:
            pass
        await self._c.close()
        self._pump.cancel()
        if self.last_metrics is None:
            return None
        m = self.last_metrics
        return {k: m.get(k) for k in ("fps", "ttff_ms", "deadline_misses", "dropped_inputs", "jitter_ms",
                                      "frames_out")}


class WebSocketTransport:
    """Sessions over protocol v1 at `url` with API key `key`."""

    name = "websocket"

    def __init__(self, url: str, key: str | None) -> None:
        self.url = url
        self.key = key
        self._catalog: dict[str, dict[str, Any]] | None = None

    def now(self) -> float:
        return time.monotonic()  # LiveClient's default clock: send and receive times agree

    async def describe(self, model: str) -> ModelInfo:
        if self._catalog is None:
            try:
                data = await asyncio.to_thread(_fetch_models, models_url(self.url), self.key)
                self._catalog = {m["id"]: m for m in data if isinstance(m, dict) and "id" in m}
            except Exception:
                self._catalog = {}
        m = self._catalog.get(model)
        if m is not None:
            return ModelInfo(model, m.get("kind", "text-to-video"), m.get("declared_tier") or m.get("tier"),
                             list(m.get("params") or []), int(m.get("default_width") or 256),
                             int(m.get("default_height") or 256))
        from inference.engines import UnknownModel, get_spec

        try:
            spec = get_spec(model)
        except UnknownModel:
            raise UnknownModel(f"model {model!r} is not listed by {models_url(self.url)}") from None
        return ModelInfo(spec.id, spec.kind, spec.declared_tier, [p.to_dict() for p in spec.params],
                         spec.default_width, spec.default_height)

    async def open(self, model: str, width: int, height: int, fps: float,
                   params: dict[str, Any] | None = None) -> AuditSession:
        client = LiveClient(self.url, key=self.key, max_pending_events=1024)
        await client.connect()
        try:
            # A fractional fps is sent as it is: the endpoint's own answer (bad_message) is the result.
            await client.start(model, width=width, height=height,
                               fps=int(fps) if float(fps).is_integer() else fps,  # type: ignore[arg-type]
                               params=params)
        except BaseException:
            await client.close()
            raise
        return _WsSession(self, client)

    async def aclose(self) -> None:
        return None
