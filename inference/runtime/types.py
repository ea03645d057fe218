"""Plain dataclasses passed between the frame loop's parts (one place for the messages, vLLM-style)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engines.base import StepInput
from ..error_codes import ErrorCode

NO_INPUT_SEQ = 0xFFFFFFFF


@dataclass
class SessionConfig:
    """What a client asks for at session.start; None means the engine's default."""

    engine_id: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    prompt: str = ""
    params: dict[str, Any] | None = None
    seed: int = 0


@dataclass(frozen=True)
class OutputFrame:
    """One produced frame, ready for the 20-byte header of PROTOCOL.md plus its JPEG."""

    frame_index: int
    input_seq: int
    input_capture_ts_us: int
    control_seq: int
    jpeg: bytes
    produced_at: float


@dataclass
class RawInput:
    """An input frame as received: still JPEG bytes."""

    seq: int
    capture_ts_us: int
    jpeg: bytes
    received_at: float


@dataclass
class DecodedInput:
    seq: int
    capture_ts_us: int
    pixels: np.ndarray
    received_at: float


@dataclass
class WorkItem:
    """One session's part of a step, taken from the session by the scheduler."""

    session_id: str
    step_input: StepInput
    release: float         # when this work became due (input received / frame slot start)
    deadline: float        # when its (first) output must be ready
    input: DecodedInput | None
    control_seq: int       # the newest control merged into step_input


@dataclass
class PendingFrame:
    """A produced frame between the step and the client: pixels, provenance and timing."""

    session_id: str
    frame_index: int
    pixels: np.ndarray
    input_seq: int
    input_capture_ts_us: int
    control_seq: int
    release: float
    deadline: float
    not_before: float = 0.0  # chunked engines: the playback time of this frame


@dataclass(frozen=True)
class SessionFault:
    """Something the frame loop reports to a session's owner (the consumer sends it as `error`).

    `fatal`: the session can produce no more frames (its engine failed a step) and is no longer
    scheduled; its owner must end it (`session.ended` reason `server_error`). Otherwise the session
    goes on (a bad input frame, one withheld output).
    """

    code: ErrorCode
    message: str
    fatal: bool = False


@dataclass
class Callbacks:
    on_output: Callable[[OutputFrame], bool]
    on_control_applied: Callable[[int, int], None] | None = None
    on_error: Callable[[SessionFault], None] | None = None
