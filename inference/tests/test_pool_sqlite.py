"""The SQLite pool backend: the full backend contract, then what only a shared file can show.

1. Every test of test_pool_contract.py that takes a backend runs here again against
   SqliteBackend (this module's `backend_factory` overrides that module's), each make() opening
   a new backend on the same file, so "shared store" means shared through the file.
2. Real OS processes: two spawned processes race for the last slot 20 times (exactly one wins
   each time); a SIGKILLed holder's lease frees within its TTL; a process killed inside a write
   transaction does not wedge the file; a forked child uses its parent's backend object.
"""

from __future__ import annotations

import inspect
import multiprocessing as mp
import os
import signal
import sqlite3
import threading
import time
import uuid

import pytest

from inference.pool import CapacityUnavailable, FakeProbe, LeaseKeeper, LeaseLost, Pool, Priority, ReserveRequest
from inference.pool.sqlite import SqliteBackend
from inference.tests import test_pool_contract as contract

# -- 1. the shared backend contract, against SQLite ------------------------------------------

clock = contract.clock  # fixtures the contract tests use, beside our backend_factory
make_pool = contract.make_pool


@pytest.fixture
def backend_factory(tmp_path):
    path = str(tmp_path / "pool.sqlite3")
    return lambda: SqliteBackend(path)


def _takes_a_backend(fn) -> bool:
    return bool({"make_pool", "backend_factory"} & set(inspect.signature(fn).parameters))


for _name, _test in list(vars(contract).items()):
    if _name.startswith("test_") and callable(_test) and _takes_a_backend(_test):
        globals()[f"test_contract_{_name[5:]}"] = _test
del _name, _test


def test_contract_tests_were_collected():
    # Guards the loop above: if the contract module's shape changes, fail rather than run nothing.
    assert len([n for n in globals() if n.startswith("test_contract_")]) >= 20


def test_sqlite_forgets_lost_lease_reasons_in_the_file(make_pool, clock):
    # The contract test checks the reasons; this checks the table itself does not grow forever.
    pool = make_pool(FakeProbe.gpus(1, capacity=100.0))
    gone = [pool.reserve("org1", f"s{i}", 0.5) for i in range(40)]
    for res in gone:
        pool.release(res)
    with pytest.raises(LeaseLost) as err:
        pool.heartbeat(gone[0])
    assert err.value.reason == "released"
    clock.advance(121)  # tombstones live 120 s
    pool.reserve("org1", "t", 0.5)
    with pytest.raises(LeaseLost) as err:
        pool.heartbeat(gone[0])
    assert err.value.reason == "expired"
    conn = sqlite3.connect(pool.backend.path)
    assert conn.execute("SELECT COUNT(*) FROM pool_tombstones").fetchone()[0] == 0  # not accumulating


# -- helpers -----------------------------------------------------------------------------------

def _req(share: float, priority: Priority = "live", ttl_s: float = 15.0, org: str = "org1") -> ReserveRequest:
    return ReserveRequest(lease_id=uuid.uuid4().hex, org_id=org, session_id=uuid.uuid4().hex, share=share,
                          memory_bytes=0, priority=priority, max_concurrent=None, clip_share_max=1.0, ttl_s=ttl_s)


def _one_device(path: str, capacity: float = 1.0) -> SqliteBackend:
    backend = SqliteBackend(path)
    probe = FakeProbe.gpus(1, capacity=capacity)
    # Registered far into the future so wall-clock calls see it for the whole test.
    Pool(backend, probe, device_ttl_s=3600.0).refresh()
    return backend


# -- 2. construction and the file ----------------------------------------------------------------

def test_file_is_wal_with_versioned_schema(tmp_path):
    path = str(tmp_path / "pool.sqlite3")
    SqliteBackend(path)
    SqliteBackend(path)  # reopening an existing pool file is fine
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"pool_devices", "pool_leases", "pool_tombstones", "pool_counter"}


@pytest.mark.parametrize("bad", ["", ":memory:", "file::memory:?cache=shared"])
def test_private_databases_are_refused(bad):
    with pytest.raises(ValueError, match="shared by the processes"):
        SqliteBackend(bad)


def test_missing_folder_and_foreign_database_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SqliteBackend(str(tmp_path / "nope" / "pool.sqlite3"))
    django_db = str(tmp_path / "db.sqlite3")
    conn = sqlite3.connect(django_db)
    conn.execute("CREATE TABLE django_migrations (id INTEGER)")
    conn.commit()
    with pytest.raises(ValueError, match="database file of its own"):
        SqliteBackend(django_db)
    newer = str(tmp_path / "newer.sqlite3")
    SqliteBackend(newer)
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    with pytest.raises(ValueError, match="schema version 7"):
        SqliteBackend(newer)


def test_wall_clock_is_used_when_no_time_is_given(tmp_path):
    backend = _one_device(str(tmp_path / "pool.sqlite3"))
    before = time.time()
    res = backend.reserve(_req(0.5, ttl_s=60.0))
    assert before + 60.0 <= res.expires_at <= time.time() + 60.0
    assert backend.heartbeat(res.lease_id, res.token, 30.0) <= time.time() + 30.0
    assert [r.lease_id for r in backend.snapshot().leases] == [res.lease_id]
    # An explicit time past the expiry sees the lease gone: expiry is by timestamp, not by sweeper.
    assert backend.snapshot(now=time.time() + 31.0).leases == []


def test_concurrent_first_opens_of_a_new_file_agree(tmp_path):
    path = str(tmp_path / "fresh.sqlite3")
    errors = []
    start = threading.Barrier(6)

    def opener() -> None:
        start.wait()
        try:
            SqliteBackend(path)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT value FROM pool_counter WHERE name = 'token'").fetchone()[0] == 0


def test_threads_racing_never_overbook(tmp_path):
    path = str(tmp_path / "pool.sqlite3")
    _one_device(path)
    wins, refusals, errors = [], [], []
    start = threading.Barrier(8)

    def worker() -> None:
        backend = SqliteBackend(path)  # also races the schema check on an existing file
        start.wait()
        try:
            wins.append(backend.reserve(_req(0.25)))
        except CapacityUnavailable:
            refusals.append(1)
        except Exception as exc:  # noqa: BLE001 - reported below, must not happen
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(wins) == 4 and len(refusals) == 4
    assert len({r.token for r in wins}) == 4


# -- 3. real OS processes ------------------------------------------------------------------------
# Targets live at module level so 'spawn' children can import them.

ROUNDS = 20


def _racer(path: str, barrier, results) -> None:
    backend = SqliteBackend(path)
    for _ in range(ROUNDS):
        barrier.wait(30)
        try:
            res = backend.reserve(_req(0.5))
            results.put(("won", os.getpid(), res.lease_id, res.token))
        except CapacityUnavailable as exc:
            results.put(("refused", os.getpid(), exc.message, 0))
        except Exception as exc:  # noqa: BLE001 - the parent fails the test on this
            results.put(("error", os.getpid(), repr(exc), 0))
        barrier.wait(30)  # the parent frees the slot between rounds


def test_two_processes_race_for_the_last_slot(tmp_path):
    path = str(tmp_path / "pool.sqlite3")
    backend = _one_device(path)
    backend.reserve(_req(0.5))  # one slot of 0.5 left
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(path, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        winners = set()
        for _ in range(ROUNDS):
            barrier.wait(60)  # release both racers at once
            outcomes = [results.get(timeout=30) for _ in range(2)]
            assert sorted(o[0] for o in outcomes) == ["refused", "won"], outcomes
            refused = next(o for o in outcomes if o[0] == "refused")
            assert refused[2] == "no device has room for this session"  # a real refusal, not "busy"
            won = next(o for o in outcomes if o[0] == "won")
            winners.add(won[1])
            backend.release(won[2], won[3])
            barrier.wait(30)
        live = backend.snapshot().leases
        assert len(live) == 1 and live[0].share == 0.5  # only the parent's; nothing leaked
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]


SHORT_TTL = 1.0


def _holder(path: str, results) -> None:
    pool = Pool(SqliteBackend(path), FakeProbe.gpus(1), ttl_s=SHORT_TTL, device_ttl_s=3600.0)
    res = pool.reserve("org1", "doomed", 1.0)
    keeper = LeaseKeeper(pool, interval_s=SHORT_TTL / 4, refresh_devices=False).start()
    keeper.add(res)
    results.put((res.lease_id, res.token, res.expires_at))
    time.sleep(600)  # holds the lease (heartbeating) until killed


def test_sigkilled_holder_frees_its_lease_within_the_ttl(tmp_path):
    path = str(tmp_path / "pool.sqlite3")
    backend = _one_device(path)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_holder, args=(path, results))
    proc.start()
    try:
        lease_id, token, first_expiry = results.get(timeout=60)

        def expiry() -> float:
            return next(r.expires_at for r in backend.snapshot(now=0.0).leases if r.lease_id == lease_id)

        # Wait for the event "the child heartbeated across processes", not for a duration.
        deadline = time.monotonic() + 30
        while expiry() <= first_expiry:
            assert time.monotonic() < deadline, "holder never heartbeated"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.time()
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    last = expiry()
    # Every heartbeat happened before the kill, so the lease ends within one TTL of it.
    assert last <= killed_at + SHORT_TTL
    with pytest.raises(CapacityUnavailable):
        backend.reserve(_req(1.0), now=last - 0.001)  # still held until its expiry
    while time.time() <= last:  # at most SHORT_TTL of wall time
        time.sleep(0.02)
    fresh = backend.reserve(_req(1.0))  # wall clock: the dead holder's slot is free
    assert fresh.token > token
    with pytest.raises(LeaseLost) as err:
        backend.heartbeat(lease_id, token, SHORT_TTL)
    assert err.value.reason == "expired"


def _lock_and_hang(path: str, results) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM pool_leases")  # a half-done write, never committed
    results.put("locked")
    time.sleep(600)


def test_process_killed_inside_a_transaction_does_not_wedge_the_pool(tmp_path):
    path = str(tmp_path / "pool.sqlite3")
    backend = _one_device(path)
    held = backend.reserve(_req(0.5))
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_lock_and_hang, args=(path, results))
    proc.start()
    try:
        assert results.get(timeout=60) == "locked"
        impatient = SqliteBackend(path, busy_timeout_s=0.2)
        with pytest.raises(CapacityUnavailable) as err:  # the write lock is held: refuse, do not hang
            impatient.reserve(_req(0.25))
        assert err.value.message == "capacity pool busy" and err.value.retry_after_s == 5.0
        with pytest.raises(sqlite3.OperationalError):  # the LeaseKeeper logs this and retries
            impatient.heartbeat(held.lease_id, held.token, 15.0)
        assert [r.lease_id for r in impatient.snapshot().leases] == [held.lease_id]  # WAL: reads go on
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == -signal.SIGKILL
    # The OS dropped the dead process's lock; its uncommitted delete never happened.
    res = backend.reserve(_req(0.5))
    assert {r.lease_id for r in backend.snapshot().leases} == {held.lease_id, res.lease_id}


def _forked_reserve(backend: SqliteBackend, results) -> None:
    try:
        res = backend.reserve(_req(0.5, priority="clip"))
        results.put((res.lease_id, res.token))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(("error", repr(exc)))


def test_forked_child_uses_the_parents_backend_object(tmp_path):
    backend = _one_device(str(tmp_path / "pool.sqlite3"))
    parent = backend.reserve(_req(0.25))  # used before the fork
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    proc = ctx.Process(target=_forked_reserve, args=(backend, results))
    proc.start()
    child = results.get(timeout=30)
    proc.join(30)
    assert proc.exitcode == 0 and child[0] != "error", child
    leases = {r.lease_id: r for r in backend.snapshot().leases}
    assert set(leases) == {parent.lease_id, child[0]} and leases[child[0]].token == child[1] > parent.token
    # Live in the parent preempts the child's clip: the same rule, across processes.
    backend.reserve(_req(0.75))
    with pytest.raises(LeaseLost) as err:
        backend.heartbeat(child[0], child[1], 15.0)
    assert err.value.reason == "preempted"


def _forked_two_step(backend: SqliteBackend, go, results) -> None:
    try:
        first = backend.reserve(_req(0.25, priority="clip"))
        results.put(first.lease_id)
        go.wait(30)  # meanwhile the parent closes every connection it has
        second = backend.reserve(_req(0.25, priority="clip"))
        results.put(second.lease_id)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(f"error {exc!r}")


def test_fork_with_open_connections_loses_no_write(tmp_path):
    # The parent holds an open connection when it forks. Had the child inherited it (and SQLite's
    # per-process lock bookkeeping with it), the parent closing its last connection would think
    # itself alone, checkpoint and delete the WAL under the child, and the child's next write
    # would be lost.
    backend = _one_device(str(tmp_path / "pool.sqlite3"))
    backend.reserve(_req(0.25))
    ctx = mp.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_forked_two_step, args=(backend, go, results))
    proc.start()
    try:
        first = results.get(timeout=30)
        backend.close()
        go.set()
        second = results.get(timeout=30)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
    assert not first.startswith("error") and not second.startswith("error"), (first, second)
    fresh = SqliteBackend(backend.path)
    assert {first, second} <= {r.lease_id for r in fresh.snapshot().leases}
    backend.close()
    fresh.close()
    assert {first, second} <= {r.lease_id for r in SqliteBackend(backend.path).snapshot().leases}
