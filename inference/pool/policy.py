"""The admission policy, as one pure function over a snapshot of devices and leases.

The in-process backend calls `plan_reservation` under its lock. The Redis backend runs the same
rules inside a Lua script (it must be atomic on the server); the contract tests run every rule
against both backends, so the two cannot drift apart silently.

The rules, in order:
1. Concurrency: an organisation may hold at most `max_concurrent` leases *of the requested
   priority* (live sessions and clip jobs are limited separately) -> ConcurrencyLimit.
2. Only registered, non-draining devices take new leases. When the request names its home node
   (routed live placement, the platform's nodes), a live lease goes only to the home node's devices
   or to devices of a node that advertises a URL: a client can be redirected there, never to a
   node that serves no live clients (a Celery worker's registration, say).
3. A lease fits a device when its share fits the unreserved capacity and its memory fits the
   unreserved memory (memory_total <= 0 means the device does not account memory). A clip lease
   must also keep the device's clip total within `clip_share_max` x capacity.
4. Among devices where it fits, the least loaded wins (the most capacity left after placing it;
   ties by the home node's device first, then device id): live video is latency-bound, so
   spreading sessions beats packing them; a tie never costs the client a redirect.
5. A live lease that fits nowhere may preempt clip leases: on each device where it would fit if
   clips were gone, take clip leases newest first (least work lost) until it fits; choose the
   device that preempts the least share (ties by device id). Live leases are never preempted and
   a clip never preempts anything.
6. Otherwise -> CapacityUnavailable with retry_after_s = time until the soonest lease expiry on a
   usable device, clamped to [1, 30] (a dead holder frees its slot at the latest then).
"""

from __future__ import annotations

from .types import (
    EPSILON,
    CapacityUnavailable,
    ConcurrencyLimit,
    DeviceRecord,
    Reservation,
    ReserveRequest,
)

RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0


def _memory_fits(device: DeviceRecord, used: int, wanted: int) -> bool:
    return device.memory_total <= 0 or used + wanted <= device.memory_total


def plan_reservation(
    req: ReserveRequest, devices: list[DeviceRecord], leases: list[Reservation], now: float
) -> tuple[str, list[str]]:
    """Pick (device_id, lease ids to preempt) for `req`, or raise the refusal."""
    if req.max_concurrent is not None:
        held = sum(1 for r in leases if r.org_id == req.org_id and r.priority == req.priority)
        if held >= req.max_concurrent:
            raise ConcurrencyLimit(req.max_concurrent)

    usable = sorted((d for d in devices if not d.draining and placeable(req, d)), key=lambda d: d.device_id)
    by_device: dict[str, list[Reservation]] = {d.device_id: [] for d in usable}
    for lease in leases:
        if lease.device_id in by_device:
            by_device[lease.device_id].append(lease)

    best: tuple[float, str, bool] | None = None
    for device in usable:
        on = by_device[device.device_id]
        used = sum(r.share for r in on)
        used_mem = sum(r.memory_bytes for r in on)
        left = device.capacity - used - req.share
        if left < -EPSILON or not _memory_fits(device, used_mem, req.memory_bytes):
            continue
        if req.priority == "clip":
            clip_used = sum(r.share for r in on if r.priority == "clip")
            if clip_used + req.share > device.capacity * req.clip_share_max + EPSILON:
                continue
        home = req.home_node is not None and device.node_id == req.home_node
        if best is None or left > best[0] + EPSILON or (home and not best[2] and left >= best[0] - EPSILON):
            best = (left, device.device_id, home)
    if best is not None:
        return best[1], []

    if req.priority == "live":
        preemption: tuple[float, str, list[str]] | None = None
        for device in usable:
            on = by_device[device.device_id]
            live = [r for r in on if r.priority == "live"]
            clips = sorted((r for r in on if r.priority == "clip"), key=lambda r: -r.token)
            used = sum(r.share for r in on)
            used_mem = sum(r.memory_bytes for r in on)
            if device.capacity - sum(r.share for r in live) - req.share < -EPSILON:
                continue
            if not _memory_fits(device, sum(r.memory_bytes for r in live), req.memory_bytes):
                continue
            victims: list[str] = []
            freed = 0.0
            for clip in clips:
                if (device.capacity - used - req.share >= -EPSILON
                        and _memory_fits(device, used_mem, req.memory_bytes)):
                    break
                victims.append(clip.lease_id)
                freed += clip.share
                used -= clip.share
                used_mem -= clip.memory_bytes
            if preemption is None or freed < preemption[0] - EPSILON:
                preemption = (freed, device.device_id, victims)
        if preemption is not None:
            return preemption[1], preemption[2]

    raise CapacityUnavailable(retry_after(leases, {d.device_id for d in usable}, now))


def placeable(req: ReserveRequest, device: DeviceRecord) -> bool:
    """Whether `device` may take `req` by routing: anything, unless a live request names its home
    node; then only the home node's devices and those of nodes with a URL to redirect to."""
    return req.priority != "live" or req.home_node is None or device.node_id == req.home_node or bool(device.url)


def retry_after(leases: list[Reservation], usable: set[str], now: float) -> float:
    """Seconds until the soonest lease on a usable device expires, clamped to [1, 30]."""
    soonest = min((r.expires_at - now for r in leases if r.device_id in usable), default=RETRY_MAX_S)
    return float(min(RETRY_MAX_S, max(RETRY_MIN_S, soonest)))
