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
from .specs import BUILTIN_SPECS, LOCAL_SPECS

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
    "backdrop": "inference.engines.backdrop:BackdropEngine",
}
# Engines built from a local weights folder: listed only while their folder is there and whole.
_LOCAL_FACTORIES = {
    "sd-stream": "inference.engines.diffusion.sd_stream:SDStreamEngine",
    "sd-stream-t2v": "inference.engines.diffusion.sd_stream:SDStreamT2VEngine",
    "causal-video": "inference.engines.diffusion.causal_video:CausalVideoEngine",
    "causal-video-chunked": "inference.engines.diffusion.causal_video:CausalVideoChunkedEngine",
}
_LOCAL: dict[str, EngineSpec] = {s.id: s for s in LOCAL_SPECS}
_SPECS: dict[str, EngineSpec] = {s.id: s for s in BUILTIN_SPECS}
_INSTANCES: dict[str, Engine] = {}
_LOCK = threading.Lock()
_BUILD_LOCK = threading.Lock()  # loading weights takes seconds: it must not hold _LOCK (the catalog reads it)


def list_specs() -> list[EngineSpec]:
    """Specs of every registered engine, built-in first."""
    with _LOCK:
        specs = list(_SPECS.values())
        local = dict(_LOCAL)
    return specs + [s for s in local.values() if s.id not in _SPECS and _local_path(s) is not None]


def _local_path(spec: EngineSpec):
    """The folder of a local engine when it is there and whole (torch-free); None otherwise."""
    from .local import folder_status

    path, why = folder_status(spec.extra["model_folder"])
    return path if why is None else None


def get_spec(engine_id: str) -> EngineSpec:
    with _LOCK:
        spec = _SPECS.get(engine_id)
        if spec is None and engine_id in _LOCAL:
            spec = _LOCAL[engine_id]
    if spec is not None and engine_id not in _SPECS and _local_path(spec) is None:
        spec = None
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
        if target is not None:
            module, cls = target.split(":")
            engine = getattr(importlib.import_module(module), cls)()
            _INSTANCES[engine_id] = engine
            return engine
        local = _LOCAL.get(engine_id)
    if local is None:
        raise UnknownModel(f"unknown model {engine_id!r}")
    return _build_local(local)


def _build_local(spec: EngineSpec) -> Engine:
    """Load a local engine from its folder (seconds: weights); a folder that fails is marked broken."""
    from .local import mark_broken

    path = _local_path(spec)
    if path is None:
        raise UnknownModel(f"unknown model {spec.id!r}")
    module, cls = _LOCAL_FACTORIES[spec.id].split(":")
    with _BUILD_LOCK:  # one build at a time: two sessions racing must not load the weights twice
        with _LOCK:
            engine = _INSTANCES.get(spec.id)
        if engine is not None:
            return engine
        try:
            engine = getattr(importlib.import_module(module), cls)(path)
        except ModelLoadError as exc:
            mark_broken(path, exc.message)
            raise
        with _LOCK:
            _INSTANCES[spec.id] = engine
            # The measured cost (weights in memory) replaces the static guess for the pool.
            _LOCAL[spec.id] = engine.spec
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
        for local in LOCAL_SPECS:
            if local.id == engine_id:
                _LOCAL[engine_id] = local
        builtin = {s.id: s for s in BUILTIN_SPECS}
        if engine_id in builtin:
            _SPECS[engine_id] = builtin[engine_id]
        else:
            _SPECS.pop(engine_id, None)
