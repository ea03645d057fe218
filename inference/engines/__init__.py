"""Engine registry: `get_engine(id)`, `list_specs()`, `register_engine(engine)`.

Built-in engines are imported lazily (they pull in torch); `list_specs()` and `get_spec()` stay
torch-free so the web side can describe models on every request.
"""
from __future__ import annotations

import importlib
import threading

from .base import (
    BadFrame,
    Cost,
    Engine,
    EngineError,
    EngineSpec,
    InvalidParams,
    ModelLoadError,
    ParamSpec,
    StepInput,
    StepOutput,
    UnknownModel,
)
from .specs import BUILTIN_SPECS

__all__ = [
    "BadFrame", "Cost", "Engine", "EngineError", "EngineSpec", "InvalidParams", "ModelLoadError", "ParamSpec",
    "StepInput", "StepOutput", "UnknownModel", "get_engine", "get_spec", "list_specs", "register_engine",
    "unregister_engine",
]

_BUILTIN_FACTORIES = {
    "identity": "inference.engines.identity:IdentityEngine",
    "dreamfield": "inference.engines.dreamfield:DreamfieldEngine",
    "dreamfield-chunked": "inference.engines.dreamfield:DreamfieldChunkedEngine",
    "stylize": "inference.engines.stylize:StylizeEngine",
}
_SPECS: dict[str, EngineSpec] = {s.id: s for s in BUILTIN_SPECS}
_INSTANCES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def list_specs() -> list[EngineSpec]:
    """Specs of every registered engine, built-in first."""
    with _LOCK:
        return list(_SPECS.values())


def get_spec(engine_id: str) -> EngineSpec:
    with _LOCK:
        spec = _SPECS.get(engine_id)
    if spec is None:
        raise UnknownModel(f"unknown model {engine_id!r}")
    return spec


def get_engine(engine_id: str) -> Engine:
    """The shared instance of an engine (built on first use); raises UnknownModel."""
    with _LOCK:
        engine = _INSTANCES.get(engine_id)
        if engine is not None:
            return engine
        target = _BUILTIN_FACTORIES.get(engine_id) if engine_id in _SPECS else None
        if target is None:
            raise UnknownModel(f"unknown model {engine_id!r}")
        module, cls = target.split(":")
        engine = getattr(importlib.import_module(module), cls)()
        _INSTANCES[engine_id] = engine
        return engine


def register_engine(engine: Engine) -> None:
    """Add (or replace) an engine under `engine.spec.id`."""
    with _LOCK:
        _SPECS[engine.spec.id] = engine.spec
        _INSTANCES[engine.spec.id] = engine


def unregister_engine(engine_id: str) -> None:
    """Remove an engine registered at run time (tests clean up with it); built-ins come back to defaults."""
    with _LOCK:
        _INSTANCES.pop(engine_id, None)
        builtin = {s.id: s for s in BUILTIN_SPECS}
        if engine_id in builtin:
            _SPECS[engine_id] = builtin[engine_id]
        else:
            _SPECS.pop(engine_id, None)
