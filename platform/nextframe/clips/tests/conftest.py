"""Fixtures of the clip tests: a media folder per test, a pool on a fake probe, captured enqueues,
and `make_mp4` for upload inputs."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """Each test stores its clip files in its own folder (and nothing leaks into the next)."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.CLIP_WORK_DIR = str(tmp_path / "work")
    settings.CLIP_BATCH_FRAMES = 4
    return tmp_path / "media"


@pytest.fixture(autouse=True)
def enqueued(monkeypatch):
    """In-process tests run the state machine directly: record what would be sent to the broker."""
    from nextframe.clips import tasks

    sent: list[tuple[str, float]] = []
    monkeypatch.setattr(tasks, "enqueue_render", lambda clip_id, countdown=0.0: sent.append((str(clip_id), countdown)))
    return sent


@pytest.fixture
def pool():
    """One fake GPU of capacity 1.0 (in-process backend), installed as this process's pool."""
    from inference.pool import FakeProbe, MemoryBackend, Pool
    from nextframe import capacity

    fake = Pool(MemoryBackend(), FakeProbe.gpus(1, capacity=1.0), ttl_s=15.0, node_id="test")
    previous = capacity._pool
    capacity.set_pool(fake)
    yield fake
    capacity.set_pool(previous)


def frames_of(n: int, width: int, height: int) -> list[np.ndarray]:
    """A moving gradient: decodable, and different frame to frame."""
    y, x = np.mgrid[0:height, 0:width]
    return [np.stack([(x * 4 + i * 16) % 256, (y * 4) % 256, np.full_like(x, 128)], -1).astype(np.uint8)
            for i in range(n)]


@pytest.fixture
def make_mp4(tmp_path):
    from inference.video import encode_mp4

    def make(n: int = 6, width: int = 64, height: int = 64, fps: int = 12) -> bytes:
        path = tmp_path / f"input-{n}-{width}x{height}.mp4"
        encode_mp4(frames_of(n, width, height), path, fps, width, height)
        return path.read_bytes()

    return make
