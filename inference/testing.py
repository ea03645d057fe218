"""Test helpers of the whole suite that need no Django (a pytest plugin: `-p inference.testing`).

- The one Redis of the suite: TEST_REDIS_URL (default redis://127.0.0.1:6379/14). The pool tests
  here and the Django side (`nextframe.testing`, the scaled profile) use the same database, each
  test under keys of its own prefix; a checkout that runs beside others sets its own database.
  `redis_client_or_skip()` skips without Redis, or fails under NEXTFRAME_REQUIRE_SERVICES=1.
- `ManualClock`: a callable clock (the shape of time.monotonic, as the pool and the clip audit
  take it) that moves only when told. The frame loop's own fake clock is
  `inference.runtime.clock.FakeClock` (it also waits on events).
- `solid_jpeg`: a one-colour JPEG frame of a given size.
- Fixture `one_torch_thread`: torch on one intra-op thread for the test (audits measure frame logic;
  on shared cores torch's thread pool spins against other processes).
- Fixture `liar`: a registered engine that declares `interactive` and applies controls 3 frames
  late (`inference.audit.reference_engines.LateControlEngine`), unregistered after the test.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def redis_client_or_skip() -> Any:
    """A connected client for the loopback Redis; skip (or fail under CI) when it is down."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("NEXTFRAME_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis at {REDIS_URL} unreachable and NEXTFRAME_REQUIRE_SERVICES=1: {exc}")
        pytest.skip(f"Redis at {REDIS_URL} unreachable: {exc}")
    return client


class ManualClock:
    """A clock in seconds that moves only when told: `clock()` reads it, `advance(dt)` moves it."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def solid_jpeg(value: int = 128, width: int = 16, height: int | None = None, quality: int = 85) -> bytes:
    """A JPEG of one grey level `value`, `width` x `height` (square by default)."""
    from inference.codec import encode_jpeg

    return encode_jpeg(np.full((height or width, width, 3), value, np.uint8), quality)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread for this test, as the device worker runs (docs/frame-loop.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def liar() -> Iterator[Any]:
    """An engine that declares interactive and applies controls 3 frames late (pixels and header)."""
    from inference.audit.reference_engines import LateControlEngine
    from inference.engines import register_engine, unregister_engine

    engine = LateControlEngine(delay_frames=3)
    register_engine(engine)
    yield engine
    unregister_engine(engine.spec.id)


@pytest.fixture(scope="session")
def tiny_model_root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A model folder root with tiny `sd-stream/` and `causal-video/` folders built in code (once a run)."""
    from inference.engines.diffusion.tiny import write_tiny_sd, write_tiny_wan

    root = tmp_path_factory.mktemp("models")
    write_tiny_sd(root / "sd-stream", vae="kl", scheduler="lcm")
    write_tiny_wan(root / "causal-video")
    return root


@pytest.fixture
def tiny_models(tiny_model_root: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """NEXTFRAME_MODEL_DIR at the tiny folders for one test; the local engines are dropped after it."""
    from inference.engines import unregister_engine
    from inference.engines.local import forget_broken
    from inference.engines.specs import LOCAL_SPECS

    monkeypatch.setenv("NEXTFRAME_MODEL_DIR", str(tiny_model_root))
    forget_broken()
    yield tiny_model_root
    for spec in LOCAL_SPECS:
        unregister_engine(spec.id)
    forget_broken()
