"""SQLite pool backend: leases shared by the processes of one machine (the embedded default).

On a single machine without Redis two OS processes share the device: the web process (live
sessions) and the embedded Celery worker (clip jobs). `MemoryBackend` cannot see across processes;
this backend keeps the same state in one SQLite file instead (see docs/pool-sqlite.md).

Atomicity: every mutating operation is one `BEGIN IMMEDIATE` transaction, which takes SQLite's
write lock up front, so reading the leases, planning and writing the result cannot interleave
with another process doing the same. Placement, concurrency limits and clip preemption are
`policy.plan_reservation`, called inside that transaction: the same rules as the other backends.

Time: wall-clock `time.time()` unless the caller passes `now` (tests drive a fake clock). Every
process on the machine reads the same clock, so expiry means the same thing to all of them.

Connections: one per thread, opened on first use and kept (a heartbeat then costs ~0.15 ms; a
connection per call would pay an open and a WAL checkpoint each time, ~6 ms). The file is in WAL
mode (readers never block the writer) with a busy timeout (a writer waits for the lock rather than
failing at once).

Fork: SQLite keeps per-process lock bookkeeping, and a child forked while a connection is open
inherits a copy claiming locks it does not hold; the parent may then checkpoint and delete the WAL
under the child, losing the child's writes (the tests reproduce this). So an `os.register_at_fork`
hook closes every connection of every backend before a fork (waiting for calls in flight) and
both sides reopen lazily. A fork that skips Python's hooks (a C extension calling fork()) is not
covered: the pid check then only abandons the inherited connection.

Tables (all prefixed `pool_`, in a file of their own -- never Django's database):
  pool_devices     device_id -> node, kind, name, capacity, memory_total, draining, expires_at
  pool_leases      lease_id  -> device, share, memory, org, session, priority, token, expires_at, node
  pool_tombstones  lease_id  -> reason, forget_at  (so a late heartbeat learns why it lost)
  pool_counter     'token'   -> the fencing-token counter
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from .policy import plan_reservation
from .types import (
    CapacityUnavailable,
    DeviceRecord,
    LeaseLost,
    PoolError,
    Reservation,
    ReserveRequest,
    Snapshot,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TOMBSTONE_S = 120.0
DEFAULT_BUSY_TIMEOUT_S = 5.0
# Retry hint when the file stayed locked for the whole busy timeout (another process is stuck
# inside a transaction); mirrors the Redis backend's "pool unreachable" refusal.
BUSY_RETRY_S = 5.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS pool_devices (
        device_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
        capacity REAL NOT NULL, memory_total INTEGER NOT NULL, draining INTEGER NOT NULL,
        expires_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS pool_devices_node ON pool_devices (node_id)",
    """CREATE TABLE IF NOT EXISTS pool_leases (
        lease_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, share REAL NOT NULL,
        memory_bytes INTEGER NOT NULL, org_id TEXT NOT NULL, session_id TEXT NOT NULL,
        priority TEXT NOT NULL, token INTEGER NOT NULL UNIQUE, expires_at REAL NOT NULL,
        node_id TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS pool_leases_expiry ON pool_leases (expires_at)",
    """CREATE TABLE IF NOT EXISTS pool_tombstones (
        lease_id TEXT PRIMARY KEY, reason TEXT NOT NULL, forget_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS pool_tombstones_forget ON pool_tombstones (forget_at)",
    "CREATE TABLE IF NOT EXISTS pool_counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO pool_counter (name, value) VALUES ('token', 0)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

_DEVICE_COLUMNS = "device_id, node_id, kind, name, capacity, memory_total, draining, expires_at"
_LEASE_COLUMNS = ("lease_id, device_id, share, memory_bytes, org_id, session_id, priority, token, "
                  "expires_at, node_id")


def _device(row: tuple) -> DeviceRecord:
    return DeviceRecord(device_id=row[0], node_id=row[1], kind=row[2], name=row[3], capacity=float(row[4]),
                        memory_total=int(row[5]), draining=bool(row[6]), expires_at=float(row[7]))


def _lease(row: tuple) -> Reservation:
    return Reservation(lease_id=row[0], device_id=row[1], share=float(row[2]), memory_bytes=int(row[3]),
                       org_id=row[4], session_id=row[5], priority=row[6], token=int(row[7]),
                       expires_at=float(row[8]), node_id=row[9])


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class _Slot:
    """One thread's connection, with the lock that serialises its use against the fork hook."""

    __slots__ = ("conn", "pid", "lock", "__weakref__")

    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.pid = 0
        self.lock = threading.Lock()

    def close(self) -> None:
        if self.conn is not None:
            if self.pid == os.getpid():
                self.conn.close()
            else:
                _ABANDONED.append(self.conn)
        self.conn = None


# Connections inherited over a fork that skipped the hooks: kept referenced so that garbage
# collection never closes them in the child (closing one can release the parent's locks).
_ABANDONED: list[sqlite3.Connection] = []
_BACKENDS: weakref.WeakSet[SqliteBackend] = weakref.WeakSet()
_BACKENDS_LOCK = threading.Lock()
_FORKING: list[SqliteBackend] = []


def _before_fork() -> None:
    _BACKENDS_LOCK.acquire()  # held across the fork: no backend appears or changes meanwhile
    _FORKING[:] = list(_BACKENDS)
    for backend in _FORKING:
        backend._before_fork()


def _after_fork() -> None:
    for backend in _FORKING:
        backend._after_fork()
    _FORKING.clear()
    _BACKENDS_LOCK.release()


class SqliteBackend:
    """Pool leases in a SQLite file shared by every process of this machine."""

    def __init__(self, path: str | os.PathLike[str], busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> None:
        """Open (creating if needed) the pool database at `path` and check its schema.

        Raises ValueError for ':memory:' (a private database shares nothing; use MemoryBackend),
        a negative timeout, or a file that holds other tables or another schema version;
        FileNotFoundError when the folder does not exist."""
        path = os.fspath(path)
        if not path or path == ":memory:" or path.startswith("file:"):
            raise ValueError(f"SqliteBackend needs a file path shared by the processes, got {path!r}")
        if not busy_timeout_s >= 0:
            raise ValueError(f"busy_timeout_s must be >= 0, got {busy_timeout_s!r}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"pool database folder {folder!r} does not exist")
        self.path = path
        self.busy_timeout_s = float(busy_timeout_s)
        # One connection per thread (opened on first use, kept): a call then costs ~0.15 ms
        # instead of an open + WAL checkpoint on close. _slots lists them for the fork hook.
        self._local = threading.local()
        self._slots: weakref.WeakSet[_Slot] = weakref.WeakSet()
        self._slots_lock = threading.Lock()
        self._forking: list[_Slot] = []
        with _BACKENDS_LOCK:  # before any connection opens, so the fork hook sees all of them
            _BACKENDS.add(self)
        self._init_schema()

    # -- connections and transactions ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module opens no implicit transactions; we BEGIN ourselves.
        # check_same_thread=False only so the fork hook may close it; use is serialised by _Slot.lock.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        # WAL + NORMAL survives a process crash (all that matters for leases: a power loss kills
        # every holder too) without an fsync per commit.
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _slot(self) -> _Slot:
        slot = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = _Slot()
            with self._slots_lock:
                self._slots.add(slot)
        return slot

    def _open(self, slot: _Slot) -> sqlite3.Connection:
        """The slot's connection, (re)opened if needed. Call with slot.lock held."""
        if slot.conn is None or slot.pid != os.getpid():
            # pid differs only after a fork that bypassed os.register_at_fork (e.g. a C extension
            # calling fork()): abandon, never close, what the parent opened.
            slot.close()
            slot.conn, slot.pid = self._connect(), os.getpid()
        return slot.conn

    def close(self) -> None:
        """Close this backend's idle connections in this process (they reopen on next use)."""
        with self._slots_lock:
            slots = list(self._slots)
        for slot in slots:
            with slot.lock:
                slot.close()

    def _before_fork(self) -> None:
        # A forked child must not inherit an open SQLite connection: SQLite keeps per-process lock
        # bookkeeping, and a child that copied it believes it holds locks it does not, so the
        # parent could checkpoint and delete the WAL under it. Close every connection (waiting
        # for calls in flight) so the child starts clean; both sides reopen lazily.
        self._slots_lock.acquire()
        self._forking = list(self._slots)
        for slot in self._forking:
            slot.lock.acquire()
            slot.close()

    def _after_fork(self) -> None:
        for slot in self._forking:
            slot.lock.release()
        self._forking = []
        self._slots_lock.release()

    def _check_schema(self, conn: sqlite3.Connection) -> bool:
        """True when the file already holds this pool schema; raises when it holds something else."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        foreign = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'pool\\_%' ESCAPE '\\'"
            " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
        if foreign:
            raise ValueError(f"{self.path!r} holds other tables ({', '.join(sorted(foreign)[:5])}):"
                             " the pool needs a database file of its own")
        if version not in (0, SCHEMA_VERSION):
            raise ValueError(f"{self.path!r} has pool schema version {version}, expected {SCHEMA_VERSION}")
        return version == SCHEMA_VERSION

    def _init_schema(self) -> None:
        slot = self._slot()
        with slot.lock:
            conn = self._open(slot)
            # An existing pool file needs only this read, which WAL lets through even while another
            # process holds the write lock: opening a backend never waits behind a writer.
            if self._check_schema(conn):
                return
            # Persistent in the file; a no-op once set. Not every filesystem supports WAL: the
            # rollback journal is still correct, only readers then wait for writers.
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("pool database %s: WAL unavailable, journal_mode=%s", self.path, mode)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not self._check_schema(conn):  # again: another process may have just created it
                    for statement in _SCHEMA:
                        conn.execute(statement)
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _transaction(self, mode: str) -> Iterator[sqlite3.Connection]:
        """One transaction on this thread's connection: committed on success, rolled back on error."""
        slot = self._slot()
        with slot.lock:
            conn = self._open(slot)
            conn.execute(f"BEGIN {mode}")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                    conn.rollback()
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _now(now: float | None) -> float:
        return time.time() if now is None else float(now)

    def time(self) -> float:
        return time.time()

    # -- state helpers (inside a transaction) --------------------------------------------------

    @staticmethod
    def _tomb(db: sqlite3.Connection, lease_id: str, reason: str, now: float) -> None:
        db.execute("INSERT OR REPLACE INTO pool_tombstones (lease_id, reason, forget_at) VALUES (?, ?, ?)",
                   (lease_id, reason, now + TOMBSTONE_S))

    @staticmethod
    def _sweep(db: sqlite3.Connection, now: float) -> None:
        # Expiry needs no background job: every write first drops what has expired.
        db.execute("INSERT OR REPLACE INTO pool_tombstones (lease_id, reason, forget_at)"
                   " SELECT lease_id, 'expired', ? FROM pool_leases WHERE expires_at <= ?",
                   (now + TOMBSTONE_S, now))
        db.execute("DELETE FROM pool_leases WHERE expires_at <= ?", (now,))
        db.execute("DELETE FROM pool_devices WHERE expires_at <= ?", (now,))
        db.execute("DELETE FROM pool_tombstones WHERE forget_at <= ?", (now,))

    @staticmethod
    def _read(db: sqlite3.Connection, now: float) -> tuple[list[DeviceRecord], list[Reservation]]:
        devices = [_device(r) for r in db.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM pool_devices WHERE expires_at > ? ORDER BY device_id", (now,))]
        leases = [_lease(r) for r in db.execute(
            f"SELECT {_LEASE_COLUMNS} FROM pool_leases WHERE expires_at > ? ORDER BY token", (now,))]
        return devices, leases

    # -- the Backend protocol -----------------------------------------------------------------

    def register_devices(
        self, node_id: str, devices: list[DeviceRecord], ttl_s: float, now: float | None = None
    ) -> None:
        """Replace `node_id`'s registered devices; they vanish unless re-registered within ttl_s."""
        now = self._now(now)
        with self._transaction("IMMEDIATE") as db:
            db.execute("DELETE FROM pool_devices WHERE node_id = ?", (node_id,))
            db.executemany(
                f"INSERT OR REPLACE INTO pool_devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(d.device_id, node_id, d.kind, d.name, float(d.capacity), int(d.memory_total),
                  int(bool(d.draining)), now + ttl_s) for d in devices])

    def reserve(self, req: ReserveRequest, now: float | None = None) -> Reservation:
        """Place `req` by the pool policy, preempting clip leases if it says so, atomically.

        Raises ConcurrencyLimit or CapacityUnavailable (also when the file stays locked past the
        busy timeout: without reading the pool we cannot know there is room)."""
        now = self._now(now)
        refusal: PoolError | None = None
        try:
            with self._transaction("IMMEDIATE") as db:
                self._sweep(db, now)
                devices, leases = self._read(db, now)
                try:
                    device_id, victims = plan_reservation(req, devices, leases, now)
                except PoolError as exc:
                    refusal = exc  # raised after the commit, so the sweep above is kept
                else:
                    for lease_id in victims:
                        db.execute("DELETE FROM pool_leases WHERE lease_id = ?", (lease_id,))
                        self._tomb(db, lease_id, "preempted", now)
                    token = db.execute("UPDATE pool_counter SET value = value + 1 WHERE name = 'token'"
                                       " RETURNING value").fetchone()[0]
                    node_id = next(d.node_id for d in devices if d.device_id == device_id)
                    lease = Reservation(
                        lease_id=req.lease_id, device_id=device_id, share=req.share,
                        memory_bytes=req.memory_bytes, org_id=req.org_id, session_id=req.session_id,
                        priority=req.priority, token=int(token), expires_at=now + req.ttl_s, node_id=node_id,
                    )
                    db.execute(f"INSERT INTO pool_leases ({_LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (lease.lease_id, lease.device_id, lease.share, lease.memory_bytes, lease.org_id,
                                lease.session_id, lease.priority, lease.token, lease.expires_at, lease.node_id))
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            log.error("pool database %s locked past %.1f s: %s", self.path, self.busy_timeout_s, exc)
            raise CapacityUnavailable(BUSY_RETRY_S, "capacity pool busy") from exc
        if refusal is not None:
            raise refusal
        return lease

    def heartbeat(self, lease_id: str, token: int, ttl_s: float, now: float | None = None) -> float:
        """Extend the lease to now + ttl_s; LeaseLost when it is gone or `token` is stale."""
        now = self._now(now)
        lost: LeaseLost | None = None
        with self._transaction("IMMEDIATE") as db:
            self._sweep(db, now)
            row = db.execute("SELECT token FROM pool_leases WHERE lease_id = ?", (lease_id,)).fetchone()
            if row is None:
                tomb = db.execute("SELECT reason FROM pool_tombstones WHERE lease_id = ?", (lease_id,)).fetchone()
                lost = LeaseLost(tomb[0] if tomb else "expired", lease_id)
            elif int(row[0]) != token:
                lost = LeaseLost("stale_token", lease_id)
            else:
                expires_at = now + ttl_s
                db.execute("UPDATE pool_leases SET expires_at = ? WHERE lease_id = ?", (expires_at, lease_id))
        if lost is not None:
            raise lost
        return expires_at

    def release(self, lease_id: str, token: int, now: float | None = None) -> None:
        """Drop the lease. Idempotent; a stale token frees nothing (it is someone else's now)."""
        now = self._now(now)
        with self._transaction("IMMEDIATE") as db:
            gone = db.execute("DELETE FROM pool_leases WHERE lease_id = ? AND token = ?", (lease_id, token))
            if gone.rowcount:
                self._tomb(db, lease_id, "released", now)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """Unexpired devices and leases, read in one (non-blocking, WAL) read transaction."""
        now = self._now(now)
        with self._transaction("DEFERRED") as db:
            devices, leases = self._read(db, now)
        return Snapshot(now, devices, leases)


# One registration for the module (per backend would keep every backend alive forever).
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
