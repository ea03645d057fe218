"""Redis pool backend: leases shared by every node of a scaled-out deployment.

Every state change is one Lua script, so it is atomic on the server: reserve (drop expired
leases, check the organisation's concurrency, pick a device, preempt clip leases, assign a
fencing token with INCR), heartbeat (checks the token) and release (checks the token).

Time: scripts read the Redis server's TIME, so expiry means the same thing to every process and
machine regardless of their clocks. Tests may pass an explicit `now` instead (a fake clock);
production never does. Expiry is by timestamp inside the values, not by key TTL, because leases
live in one hash (a key TTL would expire them all together).

Keys, all under `prefix` (put a {hashtag} in it on Redis Cluster, so the four keys share a slot):
  <prefix>:devices  hash  device_id -> JSON {node, kind, name, capacity, memory, draining, expires,
                                             url (of the node's live endpoint, "" for none)}
  <prefix>:leases   hash  lease_id  -> JSON {device, share, memory, org, session, priority, token,
                                             expires, node}
  <prefix>:token    int   the fencing-token counter
  <prefix>:tombs    hash  lease_id  -> "<reason>|<forget at>" so a late heartbeat learns why
A node registers its devices with a TTL and re-registers them from its LeaseKeeper; a node that
dies stops doing so and its devices disappear from placement.

Cost: reserve reads all leases and devices (O(leases)); fine for thousands of sessions.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis as redis_py

from .types import (
    CapacityUnavailable,
    ConcurrencyLimit,
    DeviceRecord,
    LeaseLost,
    Reservation,
    ReserveRequest,
    Snapshot,
)

log = logging.getLogger(__name__)

TOMBSTONE_S = 120.0

# %-formatting, not an f-string: the Lua below has braces of its own.
_PRELUDE = """
pcall(redis.replicate_commands)  -- needed before TIME + writes on Redis < 5; a no-op on 7
local EPS = 1e-9
local TOMB_S = %(tomb)s
local function clock(now_arg)
  if now_arg ~= '' then return tonumber(now_arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function fmt(x) return string.format('%%.6f', x) end
local function tomb(key, id, reason, now) redis.call('HSET', key, id, reason .. '|' .. fmt(now + TOMB_S)) end
""" % {"tomb": TOMBSTONE_S}  # noqa: UP031

_SWEEP = """
local function sweep(dkey, lkey, tkey, token_key, now)
  local leases, devs = {}, {}
  local all = redis.call('HGETALL', lkey)
  for i = 1, #all, 2 do
    local l = cjson.decode(all[i + 1]); l.id = all[i]
    if tonumber(l.e) <= now then
      redis.call('HDEL', lkey, l.id); tomb(tkey, l.id, 'expired', now)
    else table.insert(leases, l) end
  end
  all = redis.call('HGETALL', dkey)
  for i = 1, #all, 2 do
    local d = cjson.decode(all[i + 1]); d.id = all[i]
    if tonumber(d.e) <= now then redis.call('HDEL', dkey, d.id) else table.insert(devs, d) end
  end
  -- Tombstones only need forgetting eventually: scan them on one reserve in 32 (by the token
  -- counter, as math.random is not random inside Redis scripts on every version), not on each.
  if (tonumber(redis.call('GET', token_key)) or 0) % 32 == 0 then
    all = redis.call('HGETALL', tkey)
    for i = 1, #all, 2 do
      if tonumber(string.match(all[i + 1], '|(.*)$')) <= now then redis.call('HDEL', tkey, all[i]) end
    end
  end
  return leases, devs
end
"""

# Mirrors policy.plan_reservation rule for rule (see that module's docstring).
_RESERVE = _PRELUDE + _SWEEP + """
local dkey, lkey, token_key, tkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lease_id, org, session, share_s, mem_s, prio, maxc_s, clipmax_s, ttl_s, now_s, home =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local now = clock(now_s)
local share, mem, clipmax = tonumber(share_s), tonumber(mem_s), tonumber(clipmax_s)
local leases, devs = sweep(dkey, lkey, tkey, token_key, now)

if maxc_s ~= '' then
  local held = 0
  for _, l in ipairs(leases) do if l.o == org and l.p == prio then held = held + 1 end end
  if held >= tonumber(maxc_s) then return {'concurrency_limit', maxc_s} end
end

local usable, on = {}, {}
local function placeable(d)  -- policy.placeable: routed live placement
  return prio ~= 'live' or home == '' or d.n == home or (type(d.u) == 'string' and d.u ~= '')
end
for _, d in ipairs(devs) do if not d.dr and placeable(d) then table.insert(usable, d); on[d.id] = {} end end
table.sort(usable, function(a, b) return a.id < b.id end)
for _, l in ipairs(leases) do if on[l.d] then table.insert(on[l.d], l) end end
local function memfits(d, used, want)
  local total = tonumber(d.mt)
  return total <= 0 or used + want <= total
end

local best_left, best_id, best_home, victims = nil, nil, false, {}
for _, d in ipairs(usable) do
  local cap, used, used_mem, clip_used = tonumber(d.c), 0, 0, 0
  for _, l in ipairs(on[d.id]) do
    used = used + tonumber(l.s); used_mem = used_mem + tonumber(l.m)
    if l.p == 'clip' then clip_used = clip_used + tonumber(l.s) end
  end
  local left = cap - used - share
  local ok = left >= -EPS and memfits(d, used_mem, mem)
  if ok and prio == 'clip' and clip_used + share > cap * clipmax + EPS then ok = false end
  local at_home = home ~= '' and d.n == home
  if ok and (best_left == nil or left > best_left + EPS or (at_home and not best_home and left >= best_left - EPS)) then
    best_left, best_id, best_home = left, d.id, at_home
  end
end

if best_id == nil and prio == 'live' then
  local best_freed = nil
  for _, d in ipairs(usable) do
    local cap, used, used_mem, live_used, live_mem, clips = tonumber(d.c), 0, 0, 0, 0, {}
    for _, l in ipairs(on[d.id]) do
      used = used + tonumber(l.s); used_mem = used_mem + tonumber(l.m)
      if l.p == 'live' then live_used = live_used + tonumber(l.s); live_mem = live_mem + tonumber(l.m)
      else table.insert(clips, l) end
    end
    if cap - live_used - share >= -EPS and memfits(d, live_mem, mem) then
      table.sort(clips, function(a, b) return tonumber(a.t) > tonumber(b.t) end)
      local vs, freed = {}, 0
      for _, c in ipairs(clips) do
        if cap - used - share >= -EPS and memfits(d, used_mem, mem) then break end
        table.insert(vs, c.id); freed = freed + tonumber(c.s)
        used = used - tonumber(c.s); used_mem = used_mem - tonumber(c.m)
      end
      if best_freed == nil or freed < best_freed - EPS then best_freed, best_id, victims = freed, d.id, vs end
    end
  end
end

if best_id == nil then
  local soonest = 30
  for _, l in ipairs(leases) do if on[l.d] then soonest = math.min(soonest, tonumber(l.e) - now) end end
  return {'capacity_unavailable', fmt(math.max(1, math.min(30, soonest)))}
end

for _, v in ipairs(victims) do redis.call('HDEL', lkey, v); tomb(tkey, v, 'preempted', now) end
local node = ''
for _, d in ipairs(usable) do if d.id == best_id then node = d.n end end
local token = redis.call('INCR', token_key)
local expires = fmt(now + tonumber(ttl_s))
redis.call('HSET', lkey, lease_id, cjson.encode({d = best_id, s = share_s, m = mem_s, o = org,
  ss = session, p = prio, t = string.format('%d', token), e = expires, n = node}))
return {'ok', string.format('%d', token), expires, best_id, node}
"""

_HEARTBEAT = _PRELUDE + """
local lkey, tkey = KEYS[1], KEYS[2]
local lease_id, token, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), clock(ARGV[4])
local raw = redis.call('HGET', lkey, lease_id)
if not raw then
  local t = redis.call('HGET', tkey, lease_id)
  if t then return {'lost', string.match(t, '^(.-)|')} end
  return {'lost', 'expired'}
end
local l = cjson.decode(raw)
if l.t ~= token then return {'lost', 'stale_token'} end
if tonumber(l.e) <= now then
  redis.call('HDEL', lkey, lease_id); tomb(tkey, lease_id, 'expired', now)
  return {'lost', 'expired'}
end
l.e = fmt(now + ttl)
redis.call('HSET', lkey, lease_id, cjson.encode(l))
return {'ok', l.e}
"""

_RELEASE = _PRELUDE + """
local lkey, tkey = KEYS[1], KEYS[2]
local lease_id, token, now = ARGV[1], ARGV[2], clock(ARGV[3])
local raw = redis.call('HGET', lkey, lease_id)
if raw and cjson.decode(raw).t == token then  -- a stale token frees nothing
  redis.call('HDEL', lkey, lease_id); tomb(tkey, lease_id, 'released', now)
end
return 1
"""

_REGISTER = _PRELUDE + """
local dkey = KEYS[1]
local node, ttl, now, devices = ARGV[1], tonumber(ARGV[2]), clock(ARGV[3]), cjson.decode(ARGV[4])
local all = redis.call('HGETALL', dkey)
for i = 1, #all, 2 do
  if cjson.decode(all[i + 1]).n == node then redis.call('HDEL', dkey, all[i]) end
end
for _, d in ipairs(devices) do
  local id = d.id; d.id = nil; d.n = node; d.e = fmt(now + ttl)
  redis.call('HSET', dkey, id, cjson.encode(d))
end
return 1
"""


def _str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _arg_now(now: float | None) -> str:
    return "" if now is None else repr(float(now))


# Client timeouts, explicit (redis-py's defaults change between majors; 8.x reads for 5 s). No
# command here blocks: each is one short Lua script, so a reply slower than SOCKET_TIMEOUT_S means
# Redis or the network is stuck. The LeaseKeeper heartbeats every TTL/3 (5 s by default) on one
# thread and is itself the retry loop for a timed-out heartbeat (the lease lives on for the TTL), so
# a stalled call fails fast instead of holding the keeper for a whole interval. A dropped connection
# (Redis restarted) is retried once at once, on a fresh connection: a timeout is not, as a retried
# reserve script may already have run.
SOCKET_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0


def client_from_url(url: str) -> redis_py.Redis:
    """A redis.Redis for the pool with the timeouts above (query parameters of `url` win)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis_py.Redis.from_url(
        url, **{"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S,
                "socket_keepalive": True,
                "retry": Retry(NoBackoff(), 1, supported_errors=(redis_py.ConnectionError,))},
    )


class RedisBackend:
    """Pool leases in Redis. `client` is a redis.Redis or a URL (then built by `client_from_url`)."""

    def __init__(self, client: redis_py.Redis | str, prefix: str = "nextframe:{pool}") -> None:
        self.client = client_from_url(client) if isinstance(client, str) else client
        self.prefix = prefix
        self._devices, self._leases = f"{prefix}:devices", f"{prefix}:leases"
        self._token, self._tombs = f"{prefix}:token", f"{prefix}:tombs"
        self._reserve = self.client.register_script(_RESERVE)
        self._heartbeat = self.client.register_script(_HEARTBEAT)
        self._release = self.client.register_script(_RELEASE)
        self._register = self.client.register_script(_REGISTER)

    def keys(self) -> list[str]:
        """Every key this backend writes (tests delete them)."""
        return [self._devices, self._leases, self._token, self._tombs]

    def register_devices(
        self, node_id: str, devices: list[DeviceRecord], ttl_s: float, now: float | None = None
    ) -> None:
        payload = [
            {"id": d.device_id, "k": d.kind, "nm": d.name, "c": repr(float(d.capacity)),
             "mt": str(int(d.memory_total)), "dr": bool(d.draining), "u": d.url}
            for d in devices
        ]
        # cjson decodes [] and {} alike; an empty list must still clear the node's devices.
        self._register(keys=[self._devices],
                       args=[node_id, repr(float(ttl_s)), _arg_now(now), json.dumps(payload) if payload else "{}"])

    def reserve(self, req: ReserveRequest, now: float | None = None) -> Reservation:
        args = [req.lease_id, req.org_id, req.session_id, repr(float(req.share)), str(req.memory_bytes),
                req.priority, "" if req.max_concurrent is None else str(req.max_concurrent),
                repr(float(req.clip_share_max)), repr(float(req.ttl_s)), _arg_now(now), req.home_node or ""]
        try:
            out = [_str(x) for x in self._reserve(keys=self.keys(), args=args)]
        except (redis_py.ConnectionError, redis_py.TimeoutError) as exc:
            # Without the pool we cannot know there is room: refuse, and say when to come back.
            log.error("pool backend unreachable: %s", exc)
            raise CapacityUnavailable(5.0, "capacity pool unreachable") from exc
        if out[0] == "concurrency_limit":
            raise ConcurrencyLimit(int(out[1]))
        if out[0] == "capacity_unavailable":
            raise CapacityUnavailable(float(out[1]))
        return Reservation(
            lease_id=req.lease_id, device_id=out[3], share=req.share, memory_bytes=req.memory_bytes,
            org_id=req.org_id, session_id=req.session_id, priority=req.priority,
            token=int(out[1]), expires_at=float(out[2]), node_id=out[4],
        )

    def heartbeat(self, lease_id: str, token: int, ttl_s: float, now: float | None = None) -> float:
        out = [_str(x) for x in self._heartbeat(
            keys=[self._leases, self._tombs], args=[lease_id, str(token), repr(float(ttl_s)), _arg_now(now)])]
        if out[0] != "ok":
            raise LeaseLost(out[1], lease_id)
        return float(out[1])

    def release(self, lease_id: str, token: int, now: float | None = None) -> None:
        self._release(keys=[self._leases, self._tombs], args=[lease_id, str(token), _arg_now(now)])

    def snapshot(self, now: float | None = None) -> Snapshot:
        pipe = self.client.pipeline(transaction=True)  # MULTI: one consistent view
        pipe.time()
        pipe.hgetall(self._devices)
        pipe.hgetall(self._leases)
        (secs, micros), raw_devices, raw_leases = pipe.execute()
        t = float(now) if now is not None else secs + micros / 1e6
        devices = []
        for key, value in raw_devices.items():
            d = json.loads(value)
            if float(d["e"]) > t:
                devices.append(DeviceRecord(
                    device_id=_str(key), node_id=d["n"], kind=d["k"], name=d["nm"], capacity=float(d["c"]),
                    memory_total=int(d["mt"]), draining=bool(d["dr"]), expires_at=float(d["e"]),
                    url=d.get("u") or ""))
        leases = []
        for key, value in raw_leases.items():
            r = json.loads(value)
            if float(r["e"]) > t:
                leases.append(Reservation(
                    lease_id=_str(key), device_id=r["d"], share=float(r["s"]), memory_bytes=int(r["m"]),
                    org_id=r["o"], session_id=r["ss"], priority=r["p"], token=int(r["t"]),
                    expires_at=float(r["e"]), node_id=r["n"]))
        return Snapshot(t, devices, leases)
