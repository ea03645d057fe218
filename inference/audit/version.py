"""The code version an audit's evidence belongs to: evidence measured on other code is stale.

A hash of the engine's spec and of the source of every module whose change can change a verdict:
the engines, the frame loop that runs them (`runtime/`), the frame and video codecs the audit's
frames pass through (`codec.py`, `video.py`), the clip renderer (`batch.py`), the wire protocol and
client a `--url` audit reads headers with (`protocol.py`, `client.py`), and the whole audit package
(diagnostics, pixel detector, classifier, transports, the clip audit, the reference engines).
It is computed from files, without importing torch, so the web side can call it on every request
(cached per process: code does not change under a running process).
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
#: Paths relative to the `inference` package; a folder means every .py file under it.
SOURCES = ("engines", "runtime", "audit", "codec.py", "video.py", "batch.py", "protocol.py", "client.py")


def source_files(root: Path = _ROOT) -> list[Path]:
    """Every file the code version hashes, in a stable order (a missing path is an error, not a skip)."""
    files: list[Path] = []
    for rel in SOURCES:
        p = root / rel
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*.py") if "__pycache__" not in f.parts))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"code_version source {p} is missing")
    return files


def sources_digest(root: Path = _ROOT) -> str:
    """sha256 over the relative path and the bytes of every source file under `root`."""
    h = hashlib.sha256()
    for f in source_files(root):
        h.update(str(f.relative_to(root)).encode())
        h.update(b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _sources_digest() -> str:
    return sources_digest()


@lru_cache(maxsize=256)
def _version(spec_json: str) -> str:
    return hashlib.sha256((_sources_digest() + spec_json).encode()).hexdigest()[:16]


def code_version(model_id: str) -> str | None:
    """The current code version of `model_id` on this deployment (None for an unknown model)."""
    from inference.engines import UnknownModel, get_spec

    try:
        spec = get_spec(model_id)
    except UnknownModel:
        return None
    return _version(json.dumps(spec.to_dict(), sort_keys=True, default=str))
