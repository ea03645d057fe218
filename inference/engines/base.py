"""The engine interface: what an engine declares (EngineSpec) and what it computes (Engine.step).

One module holds the whole contract between the frame loop and the models, so a new engine only
needs this file to be written. Nothing here imports torch: the web side reads specs (GET /v1/models,
session.start validation) on every request.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..error_codes import ErrorCode

ParamType = Literal["float", "int", "str", "bool", "enum"]
EngineKind = Literal["video-to-video", "text-to-video"]
Tier = Literal["interactive", "streaming"]

#: Smallest frame side accepted: smaller frames make JPEG chroma subsampling and the engines meaningless.
MIN_SIDE = 16


class EngineError(Exception):
    """Base of the errors the frame loop reports to clients; `.code` is from the one registry."""

    code: ErrorCode = ErrorCode.SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownModel(EngineError):
    code = ErrorCode.UNKNOWN_MODEL


class InvalidParams(EngineError):
    code = ErrorCode.INVALID_PARAMS


class BadFrame(EngineError):
    """An input frame was rejected; `.reason` says why. The session goes on."""

    code = ErrorCode.BAD_FRAME

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ModelLoadError(EngineError):
    """Local weights exist but do not fit the engine (wrong keys or shapes, unreadable file)."""

    code = ErrorCode.SERVER_ERROR


@dataclass(frozen=True)
class ParamSpec:
    """One steerable parameter of an engine."""

    name: str
    type: ParamType
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    description: str = ""

    def validate(self, value: Any) -> Any:
        """Return `value` coerced to this param's type, or raise InvalidParams."""
        where = f"param {self.name!r}"
        if self.type == "bool":
            if not isinstance(value, bool):
                raise InvalidParams(f"{where} must be a boolean, got {type(value).__name__}")
            return value
        if self.type in ("float", "int"):
            # bool is an int subclass in Python; a JSON true is not a number to a client.
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidParams(f"{where} must be a number, got {type(value).__name__}")
            if self.type == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise InvalidParams(f"{where} must be an integer, got {value}")
                value = int(value)
            else:
                try:
                    value = float(value)
                except OverflowError:  # an integer with hundreds of digits is valid JSON
                    raise InvalidParams(f"{where} is far out of range") from None
                if not math.isfinite(value):
                    raise InvalidParams(f"{where} must be finite")
            if self.min is not None and value < self.min:
                raise InvalidParams(f"{where}={value} is below the minimum {self.min}")
            if self.max is not None and value > self.max:
                raise InvalidParams(f"{where}={value} is above the maximum {self.max}")
            return value
        if not isinstance(value, str):
            raise InvalidParams(f"{where} must be a string, got {type(value).__name__}")
        if self.type == "enum" and value not in (self.choices or ()):
            raise InvalidParams(f"{where}={value!r} is not one of {list(self.choices or ())}")
        if self.max is not None and len(value) > self.max:
            raise InvalidParams(f"{where} is longer than {int(self.max)} characters")
        return value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "default": self.default,
                               "description": self.description}
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


@dataclass(frozen=True)
class Cost:
    """What one session takes from a device: bytes of memory and a share of its compute (0..1)."""

    memory_bytes: int
    compute_share: float


@dataclass(frozen=True)
class EngineSpec:
    """Everything the platform needs to know about an engine without running it."""

    id: str
    kind: EngineKind
    declared_tier: Tier
    default_width: int
    default_height: int
    max_width: int
    max_height: int
    default_fps: float
    max_fps: float
    chunk_frames: int
    params: list[ParamSpec]
    persistent_state: str
    price_per_gpu_second: str
    description: str = ""
    max_prompt_chars: int = 2000
    # Cost model: compute share grows with pixels x fps; memory is a fixed part plus per-pixel buffers.
    # Calibrated on the 2-core CPU device (capacity 1.0); see docs/engines.md.
    compute_share_per_mpix_per_s: float = 0.0
    # Fixed device time per frame whatever its size (JPEG decode/encode, Python, the socket), as a
    # share per frame-per-second: it dominates at small sizes, where a pixel-only model over-admits.
    compute_share_per_fps: float = 0.0
    base_memory_bytes: int = 0
    memory_bytes_per_pixel: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def cost(self, width: int, height: int, fps: float) -> Cost:
        """Memory and compute share of one session at this resolution and frame rate."""
        mpix_per_s = width * height * fps / 1e6
        share = min(1.0, self.compute_share_per_mpix_per_s * mpix_per_s + self.compute_share_per_fps * fps)
        memory = self.base_memory_bytes + self.memory_bytes_per_pixel * width * height * self.chunk_frames
        return Cost(memory_bytes=int(memory), compute_share=round(share, 6))

    def param(self, name: str) -> ParamSpec | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def default_params(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Validate and coerce the given params (a partial update); raise InvalidParams on the first fault."""
        if params is None:
            return {}
        if not isinstance(params, dict):
            raise InvalidParams("params must be an object")
        out: dict[str, Any] = {}
        for name, value in params.items():
            p = self.param(name)
            if p is None:
                known = ", ".join(x.name for x in self.params) or "none"
                raise InvalidParams(f"unknown param {name!r} for model {self.id!r} (known: {known})")
            out[name] = p.validate(value)
        return out

    def resolve_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with the validated `params`: the full parameter set of a new session."""
        merged = self.default_params()
        merged.update(self.validate_params(params))
        return merged

    def validate_prompt(self, prompt: Any) -> str:
        if not isinstance(prompt, str):
            raise InvalidParams("prompt must be a string")
        if len(prompt) > self.max_prompt_chars:
            raise InvalidParams(f"prompt is longer than {self.max_prompt_chars} characters")
        return prompt

    def resolve_size(self, width: int | None, height: int | None, fps: float | None) -> tuple[int, int, float]:
        """Apply defaults and limits to a requested size and frame rate; raise InvalidParams when out of range."""
        w = self.default_width if width is None else width
        h = self.default_height if height is None else height
        f = self.default_fps if fps is None else fps
        for name, v, hi in (("width", w, self.max_width), ("height", h, self.max_height)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidParams(f"{name} must be an integer")
            if v < MIN_SIDE or v > hi:
                raise InvalidParams(f"{name}={v} is outside {MIN_SIDE}..{hi} for model {self.id!r}")
            if v % 2:
                raise InvalidParams(f"{name}={v} must be even (JPEG 4:2:0 chroma)")
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f):
            raise InvalidParams("fps must be a number")
        if f <= 0 or f > self.max_fps:
            raise InvalidParams(f"fps={f} is outside (0, {self.max_fps}] for model {self.id!r}")
        return w, h, float(f)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description for GET /v1/models (the measured tier is added by the audit)."""
        return {
            "id": self.id, "kind": self.kind, "declared_tier": self.declared_tier,
            "description": self.description,
            "default_width": self.default_width, "default_height": self.default_height,
            "max_width": self.max_width, "max_height": self.max_height,
            "default_fps": self.default_fps, "max_fps": self.max_fps,
            "chunk_frames": self.chunk_frames,
            "params": [p.to_dict() for p in self.params],
            "persistent_state": self.persistent_state,
            "price_per_gpu_second": self.price_per_gpu_second,
            "cost_at_default": vars(self.cost(self.default_width, self.default_height, self.default_fps)),
        }


@dataclass
class StepInput:
    """One session's share of a step: its state, newest input (None for text-to-video) and controls."""

    state: Any
    frame: np.ndarray | None
    prompt: str
    params: dict[str, Any]
    control_seq: int
    frame_index: int


@dataclass
class StepOutput:
    """What a step produced for one session.

    `frames` holds `spec.chunk_frames` HxWx3 uint8 arrays (one for per-frame engines).
    `control_seq` is the control the engine says these frames reflect; None means the one it was given.
    An engine that applies controls late must report the older seq here - that is what the header says.
    """

    frames: list[np.ndarray]
    control_seq: int | None = None
    #: Inputs the engine skipped as near-identical to the previous one (it re-sent its last output);
    #: counted into the session's `skipped_inputs` metric.
    skipped_inputs: int = 0


class Engine(ABC):
    """A model that runs inside the frame loop. One instance serves every session of that engine."""

    spec: EngineSpec

    @abstractmethod
    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> Any:
        """The per-session state that carries across frames (`fps` sets how far one frame advances time)."""

    @abstractmethod
    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        """Advance a batch of sessions (same engine, same resolution) by one step; mutates their states."""

    @abstractmethod
    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        """Render `n_frames` consecutive frames of one session at once (batched over time).

        Returns (n, H, W, 3) uint8 and advances `state` exactly as n single steps would. For
        video-to-video engines `input_frames` is (n, H, W, 3) uint8 and required.
        """
