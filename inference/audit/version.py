"""The code version an audit's evidence belongs to: evidence of older engine code is stale.

A hash of the engine's spec and of the source of the engine package and of the audit rules. It is
computed from files, without importing torch, so the web side can call it on every request
(cached per process: code does not change under a running process).
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_SOURCES = ("engines", "audit/classifier.py", "audit/diagnostics.py", "audit/pixels.py")


@lru_cache(maxsize=1)
def _sources_digest() -> str:
    h = hashlib.sha256()
    for rel in _SOURCES:
        p = _ROOT / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


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
