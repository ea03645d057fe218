"""Pool benchmark: cost of reserve+release and heartbeat per backend.

Run: python -m inference.pool.bench [--redis redis://127.0.0.1:6379/15] [--n 2000] [--leases 200]

The baseline is measured in the same run: a bare Redis PING round trip for the Redis backend
(how close to one network round trip an atomic reserve is), and for the in-process backend the
numbers stand on their own (microseconds). `--leases` pre-fills the pool with that many held
leases, since reserve scans them.
"""

from __future__ import annotations

import argparse
import time
import uuid

from .memory import MemoryBackend
from .pool import Pool
from .probe import FakeProbe


def _per_op(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def measure(pool: Pool, n: int, leases: int) -> dict[str, float]:
    for i in range(leases):
        pool.reserve(f"org{i % 10}", f"bg{i}", 0.01)
    res = pool.reserve("bench", "hb", 0.01)
    return {
        "reserve+release_us": 1e6 * _per_op(lambda: pool.release(pool.reserve("bench", "s", 0.01)), n),
        "heartbeat_us": 1e6 * _per_op(lambda: pool.heartbeat(res), n),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--leases", type=int, default=200)
    args = ap.parse_args(argv)
    probe = FakeProbe.gpus(8)  # 8 GPUs x 1.0: room for the pre-filled leases
    mem = measure(Pool(MemoryBackend(), probe), args.n, args.leases)
    print(f"memory  leases={args.leases}: " + ", ".join(f"{k}={v:.1f}" for k, v in mem.items()))

    from .redis import RedisBackend

    backend = RedisBackend(args.redis, prefix=f"nfbench:{{{uuid.uuid4().hex}}}")
    try:
        ping_us = 1e6 * _per_op(backend.client.ping, args.n)
        red = measure(Pool(backend, probe, node_id="bench"), args.n, args.leases)
    finally:
        backend.client.delete(*backend.keys())
    print(f"redis   leases={args.leases}: baseline ping_us={ping_us:.1f}, " + ", ".join(
        f"{k}={v:.1f} ({v / ping_us:.1f}x ping)" for k, v in red.items()))


if __name__ == "__main__":
    main()
