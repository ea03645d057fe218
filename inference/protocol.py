"""Live protocol v1: the one place where the WebSocket contract of PROTOCOL.md is written in code.

Everything a live connection exchanges goes through this module: client text messages are parsed
(and rejected with a ``bad_message`` code when malformed), server text messages are serialised from
typed values, and binary frames are packed/unpacked with their fixed big-endian headers.

The contract is public and only changes additively, so the names, codes and byte layouts here are
fixed. Client messages are parsed strictly (an unknown field is an error naming the field) because a
silently ignored typo (``"promt"``) is worse than a clear rejection; server messages may grow new
optional fields, so clients must ignore fields they do not know.

No torch, numpy or Django here: the web side imports this on every connection.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

# The registry of codes; CLOSE_CODE_FOR_ERROR and close_code_for are re-exported from here.
from .error_codes import CLOSE_CODE_FOR_ERROR as CLOSE_CODE_FOR_ERROR
from .error_codes import CloseCode, ControlRejectCode, EndReason, ErrorCode
from .error_codes import close_code_for as close_code_for

PROTOCOL_VERSION = 1

# --- limits ---------------------------------------------------------------------------------------

# Client text messages are small (a prompt and a few params); anything bigger is abuse or a bug.
MAX_TEXT_BYTES = 64 * 1024
# Sanity bounds checked at the protocol level. A model's own, tighter limits are enforced by the
# engine and reported as `invalid_params`; these only stop absurd values before anything allocates.
MAX_DIMENSION = 8192
MAX_FPS = 240
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF

# --- codes ---------------------------------------------------------------------------------------
# The registry is inference/error_codes.py; these frozensets and constants are its views, kept
# for callers that check membership or name a close code.

ERROR_CODES = frozenset(ErrorCode)
CONTROL_REJECT_CODES = frozenset(ControlRejectCode)
END_REASONS = frozenset(EndReason)
LIVE_TIERS = frozenset({"interactive", "streaming"})
MODERATION_ACTIONS = frozenset({"replaced", "ended"})
MODERATION_SOURCES = frozenset({"input", "output"})  # v1.1
MODERATION_DETECTORS = frozenset({"hash", "classifier"})  # v1.1

CLOSE_NORMAL = CloseCode.NORMAL
CLOSE_TRY_AGAIN = CloseCode.TRY_AGAIN
CLOSE_UNAUTHENTICATED = CloseCode.UNAUTHENTICATED
CLOSE_FORBIDDEN = CloseCode.FORBIDDEN
CLOSE_CONCURRENCY = CloseCode.CONCURRENCY
CLOSE_CODES = frozenset(CloseCode)

# --- binary layouts -------------------------------------------------------------------------------

INPUT_HEADER = struct.Struct(">IQ")  # u32 seq, u64 capture_ts_us
OUTPUT_HEADER = struct.Struct(">IIQI")  # u32 frame_index, u32 input_seq, u64 input_ts_us, u32 control_seq
INPUT_HEADER_BYTES = INPUT_HEADER.size  # 12
OUTPUT_HEADER_BYTES = OUTPUT_HEADER.size  # 20
# `input_seq` value meaning "no input frame was used" (text-to-video, or no input yet).
NO_INPUT_SEQ = 0xFFFFFFFF
JPEG_SOI = b"\xff\xd8"


class ProtocolError(Exception):
    """A message or frame that breaks the contract; `code` is one of ERROR_CODES."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown protocol error code {code!r}")
        code = ErrorCode(code)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_json(self) -> str:
        """The `error` message to send back for this violation."""
        return Error(self.code, self.message).to_json()


# --- messages ------------------------------------------------------------------------------------
# Every text message, in either direction, is a frozen dataclass below; `to_json()` is the one way
# one becomes wire text. Each class's `to_dict()` is its PROTOCOL.md shape; server messages check
# their codes when built, so an invalid message never exists.


class Message:
    """Base of every protocol text message: `to_json()` is the single serialiser."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        # Compact separators: the documented wire form. allow_nan=False: NaN/Infinity are not JSON,
        # and a client parser in another language would choke on them.
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# --- client -> server messages --------------------------------------------------------------------


@dataclass(frozen=True)
class SessionStart(Message):
    """`session.start`: open a session of `model`; omitted fields take the model's defaults."""

    model: str
    width: int | None = None
    height: int | None = None
    fps: int | None = None
    prompt: str | None = None
    params: dict[str, Any] | None = None
    type: str = field(default="session.start", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **_drop_none(self.__dict__)}


@dataclass(frozen=True)
class Control(Message):
    """`control`: change the prompt and/or params from the next frame produced on."""

    seq: int
    prompt: str | None = None
    params: dict[str, Any] | None = None
    type: str = field(default="control", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **_drop_none(self.__dict__)}


@dataclass(frozen=True)
class SessionStop(Message):
    """`session.stop`: end the session; the server answers with `session.ended`."""

    type: str = field(default="session.stop", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}


ClientMessage = SessionStart | Control | SessionStop


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_message", message)


def _reject_constant(name: str) -> Any:
    raise _bad(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    # 1e400 is valid JSON syntax but overflows to inf, which no model param can mean.
    value = float(literal)
    if not math.isfinite(value):
        raise _bad(f"number {literal[:20]} is out of range")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A duplicated key is ambiguous (which one wins differs between parsers): refuse it.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _bad(f"duplicate field {key!r}")
        result[key] = value
    return result


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_field(obj: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    if name not in obj:
        return None
    value = obj[name]
    if not _is_int(value):
        raise _bad(f"{name} must be an integer, got {_json_type(value)}")
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}, got {value}")
    return value


def _str_field(obj: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    if name not in obj:
        if required:
            raise _bad(f"missing required field {name!r}")
        return None
    value = obj[name]
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string, got {_json_type(value)}")
    return value


def _params_field(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if "params" not in obj:
        return None
    value = obj["params"]
    if not isinstance(value, dict):
        raise _bad(f"params must be an object, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_fields(obj: Mapping[str, Any], kind: str, allowed: frozenset[str]) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r} in {kind}")


_START_FIELDS = frozenset({"type", "model", "width", "height", "fps", "prompt", "params"})
_CONTROL_FIELDS = frozenset({"type", "seq", "prompt", "params"})
_STOP_FIELDS = frozenset({"type"})


def parse_client_message(text: str) -> ClientMessage:
    """Parse one client text message; raise ProtocolError('bad_message') when it breaks the contract."""
    if not isinstance(text, str):
        raise _bad("text message expected")
    # len() counts characters, each at least one byte: a cheap reject before encoding a huge string.
    if len(text) > MAX_TEXT_BYTES:
        raise _bad(f"text message larger than {MAX_TEXT_BYTES} bytes")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _bad("text message is not valid UTF-8") from None
    if size > MAX_TEXT_BYTES:
        raise _bad(f"text message larger than {MAX_TEXT_BYTES} bytes")
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise _bad(f"not valid JSON: {exc.msg} at position {exc.pos}") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's 4300-digit conversion limit
        raise _bad(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise _bad("JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise _bad(f"a JSON object is expected, got {_json_type(obj)}")
    if "type" not in obj:
        raise _bad("missing required field 'type'")
    kind = obj["type"]
    if not isinstance(kind, str):
        raise _bad(f"type must be a string, got {_json_type(kind)}")
    if kind == "session.start":
        _check_fields(obj, kind, _START_FIELDS)
        model = _str_field(obj, "model", required=True)
        assert model is not None
        if not model:
            raise _bad("model must not be empty")
        return SessionStart(
            model=model,
            width=_int_field(obj, "width", 1, MAX_DIMENSION),
            height=_int_field(obj, "height", 1, MAX_DIMENSION),
            fps=_int_field(obj, "fps", 1, MAX_FPS),
            prompt=_str_field(obj, "prompt"),
            params=_params_field(obj),
        )
    if kind == "control":
        _check_fields(obj, kind, _CONTROL_FIELDS)
        if "seq" not in obj:
            raise _bad("missing required field 'seq'")
        # seq travels back in the u32 `control_seq` of output headers, hence the range. 0 is allowed
        # but reads as "no control" there, so clients should start at 1.
        seq = _int_field(obj, "seq", 0, U32_MAX)
        assert seq is not None
        prompt = _str_field(obj, "prompt")
        params = _params_field(obj)
        if prompt is None and params is None:
            raise _bad("control must carry a prompt and/or params")
        return Control(seq=seq, prompt=prompt, params=params)
    if kind == "session.stop":
        _check_fields(obj, kind, _STOP_FIELDS)
        return SessionStop()
    raise _bad(f"unknown message type {kind!r}")


# --- server -> client messages --------------------------------------------------------------------


def _decimal_string(value: Decimal | str | int, name: str) -> str:
    # Money travels as decimal strings: a float would lose cents on the way.
    if isinstance(value, float):
        raise ValueError(f"{name} must be a Decimal or decimal string, not a float")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} is not a decimal: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be finite")
    return str(number)


def _finite_or_none(value: float | None) -> float | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _require(value: str, allowed: frozenset[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


@dataclass(frozen=True)
class SessionReady(Message):
    """`session.ready`: the session is admitted, reserved and running."""

    session_id: str
    model: str
    tier: str
    width: int
    height: int
    fps: int
    frame_budget_ms: float
    device: str
    share: float
    price_per_gpu_second: Decimal | str
    currency: str = "usd"

    def __post_init__(self) -> None:
        _require(self.tier, LIVE_TIERS, "tier")
        _decimal_string(self.price_per_gpu_second, "price_per_gpu_second")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "session.ready",
            "session_id": self.session_id,
            "model": self.model,
            "tier": self.tier,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "frame_budget_ms": self.frame_budget_ms,
            "reservation": {"device": self.device, "share": self.share},
            "price_per_gpu_second": _decimal_string(
                self.price_per_gpu_second, "price_per_gpu_second"
            ),
            "currency": self.currency,
        }


@dataclass(frozen=True)
class ControlApplied(Message):
    """`control.applied`: control `seq` is visible from output frame `frame` on."""

    seq: int
    frame: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": "control.applied", "seq": self.seq, "frame": self.frame}


@dataclass(frozen=True)
class ControlRejected(Message):
    """`control.rejected`: control `seq` never reached the model; the previous one keeps playing."""

    seq: int
    code: ControlRejectCode | str
    message: str

    def __post_init__(self) -> None:
        _require(self.code, CONTROL_REJECT_CODES, "code")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "control.rejected", "seq": self.seq, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Metrics(Message):
    """`metrics`: the session's measured numbers, sent about once a second. Non-finite floats go as null."""

    frames_out: int
    fps: float
    ttff_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    jitter_ms: float | None
    deadline_misses: int
    dropped_inputs: int
    gpu_seconds: float
    # v1.2: outputs not sent because the client was not reading them fast enough.
    dropped_outputs: int = 0
    # v1.3: inputs the model skipped as near-identical to the previous one (the previous output was sent
    # again: sd-stream's similarity filter); on the wire only when non-zero.
    skipped_inputs: int = 0

    def to_dict(self) -> dict[str, Any]:
        f = _finite_or_none
        return {
            "type": "metrics",
            "frames_out": self.frames_out,
            "fps": f(self.fps),
            "ttff_ms": f(self.ttff_ms),
            "latency_ms": {
                "p50": f(self.latency_p50_ms),
                "p95": f(self.latency_p95_ms),
                "p99": f(self.latency_p99_ms),
            },
            "jitter_ms": f(self.jitter_ms),
            "deadline_misses": self.deadline_misses,
            "dropped_inputs": self.dropped_inputs,
            "dropped_outputs": self.dropped_outputs,
            "gpu_seconds": f(self.gpu_seconds),
            **({"skipped_inputs": self.skipped_inputs} if self.skipped_inputs else {}),
        }


@dataclass(frozen=True)
class Moderation(Message):
    """`moderation`: frame `frame` was replaced, or the session ended, for `category`.

    v1.1 adds `source` (`input`: `frame` is the input frame's seq; `output`: the output frame_index)
    and `detector` (`hash` | `classifier`); each is on the wire only when known."""

    frame: int
    action: str
    category: str
    source: str | None = None
    detector: str | None = None

    def __post_init__(self) -> None:
        _require(self.action, MODERATION_ACTIONS, "action")
        if self.source is not None:
            _require(self.source, MODERATION_SOURCES, "source")
        if self.detector is not None:
            _require(self.detector, MODERATION_DETECTORS, "detector")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "moderation", "frame": self.frame, "action": self.action,
                             "category": self.category}
        if self.source is not None:
            d["source"] = self.source
        if self.detector is not None:
            d["detector"] = self.detector
        return d


@dataclass(frozen=True)
class Error(Message):
    """`error`: something went wrong; the session goes on unless the error is fatal.

    `retry_after_s` goes on the wire only when given.
    """

    code: ErrorCode | str
    message: str
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        _require(self.code, ERROR_CODES, "code")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.retry_after_s is not None:
            out["retry_after_s"] = self.retry_after_s
        return out


@dataclass(frozen=True)
class Usage:
    """What a session consumed and costs; part of `session.ended` (not a message of its own)."""

    gpu_seconds: float
    frames: int
    cost: Decimal | str
    currency: str = "usd"
    # v1.2: the exact GPU-seconds as a decimal string (micro-GPU-seconds), equal to the ledger's sum;
    # `gpu_seconds` stays a number for existing clients. Sent only when given.
    gpu_seconds_decimal: Decimal | str | None = None

    def __post_init__(self) -> None:
        _decimal_string(self.cost, "cost")
        if self.gpu_seconds_decimal is not None:
            _decimal_string(self.gpu_seconds_decimal, "gpu_seconds_decimal")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gpu_seconds": self.gpu_seconds,
            "frames": self.frames,
            "cost": _decimal_string(self.cost, "cost"),
            "currency": self.currency,
        }
        if self.gpu_seconds_decimal is not None:
            out["gpu_seconds_decimal"] = _decimal_string(self.gpu_seconds_decimal, "gpu_seconds_decimal")
        return out


@dataclass(frozen=True)
class SessionEnded(Message):
    """`session.ended`: the last message; the server closes the socket after it."""

    reason: EndReason | str
    usage: Usage

    def __post_init__(self) -> None:
        _require(self.reason, END_REASONS, "reason")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "session.ended", "reason": self.reason, "usage": self.usage.to_dict()}


@dataclass(frozen=True)
class QuotaWarning(Message):
    """`quota.warning` (v1.1): sent once per session when the organisation has used `percent` of its
    monthly limit. `limit_gpu_seconds` is null when only a spend limit is set."""

    used_gpu_seconds: float
    limit_gpu_seconds: float | None
    percent: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": "quota.warning", "used_gpu_seconds": self.used_gpu_seconds,
                "limit_gpu_seconds": self.limit_gpu_seconds, "percent": self.percent}


@dataclass(frozen=True)
class SessionRedirect(Message):
    """`session.redirect` (v1.4): this node cannot host the session; the server then closes with 1000.

    The client reconnects to `url` with `?ticket=<ticket>` (no other credentials) and sends its
    `session.start` again; the ticket is single-use and carries the reservation made for it."""

    url: str
    ticket: str
    retry_after_s: float = 0

    def __post_init__(self) -> None:
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must be a ws:// or wss:// URL, got {self.url!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "session.redirect", "url": self.url, "ticket": self.ticket, "retry_after_s": self.retry_after_s}


ServerMessage = (
    SessionReady | ControlApplied | ControlRejected | Metrics | Moderation | Error | SessionEnded | QuotaWarning
    | SessionRedirect
)


def parse_server_message(text: str) -> dict[str, Any]:
    """Decode a server text message for a client: a JSON object with a string `type`.

    Returned as a plain dict so that fields added later reach the caller untouched.
    Raises ProtocolError('bad_message') otherwise.
    """
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise _bad("server sent a text message that is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise _bad("server sent a text message without a string 'type'")
    return obj


# --- binary frames --------------------------------------------------------------------------------


class InputFrame(NamedTuple):
    """A client input frame: its counter, its capture time on the client clock, one JPEG."""

    seq: int
    capture_ts_us: int
    jpeg: bytes


class OutputFrameHeader(NamedTuple):
    """The 20-byte header of an output frame; `input_seq` is None when no input frame was used."""

    frame_index: int
    input_seq: int | None
    input_capture_ts_us: int
    control_seq: int


class OutputFrame(NamedTuple):
    header: OutputFrameHeader
    jpeg: bytes


BytesLike = bytes | bytearray | memoryview


def _check_range(name: str, value: int, high: int) -> None:
    if not _is_int(value) or not 0 <= value <= high:
        raise ValueError(f"{name} must be an integer in [0, {high}], got {value!r}")


def pack_input_frame(seq: int, capture_ts_us: int, jpeg: BytesLike) -> bytes:
    """Binary input frame: 12-byte header (u32 seq, u64 capture_ts_us) then the JPEG."""
    # 0xFFFFFFFF is the "no input" marker in output headers, so it is not a usable input seq.
    _check_range("seq", seq, U32_MAX - 1)
    _check_range("capture_ts_us", capture_ts_us, U64_MAX)
    if len(jpeg) == 0:
        raise ValueError("jpeg must not be empty")
    return INPUT_HEADER.pack(seq, capture_ts_us) + bytes(jpeg)


def unpack_input_frame(data: BytesLike, max_payload_bytes: int | None = None) -> InputFrame:
    """Split a binary input frame; raise ProtocolError('bad_frame') when it breaks the layout.

    `max_payload_bytes` (e.g. inference.codec.MAX_FRAME_BYTES) bounds the JPEG size.
    """
    size = len(data)
    if size < INPUT_HEADER_BYTES:
        raise ProtocolError(
            "bad_frame", f"input frame of {size} bytes is shorter than the {INPUT_HEADER_BYTES}-byte header"
        )
    if size == INPUT_HEADER_BYTES:
        raise ProtocolError("bad_frame", "input frame has a header but no JPEG payload")
    payload = size - INPUT_HEADER_BYTES
    if max_payload_bytes is not None and payload > max_payload_bytes:
        raise ProtocolError(
            "bad_frame", f"input frame JPEG of {payload} bytes exceeds the {max_payload_bytes}-byte limit"
        )
    seq, capture_ts_us = INPUT_HEADER.unpack_from(data, 0)
    if seq == NO_INPUT_SEQ:
        raise ProtocolError("bad_frame", "input seq 0xFFFFFFFF is reserved (means 'no input')")
    jpeg = bytes(data[INPUT_HEADER_BYTES:])
    if not jpeg.startswith(JPEG_SOI):
        raise ProtocolError("bad_frame", "input frame payload is not a JPEG (no FF D8 start marker)")
    return InputFrame(seq, capture_ts_us, jpeg)


def pack_output_header(
    frame_index: int, input_seq: int | None, input_capture_ts_us: int, control_seq: int
) -> bytes:
    """The 20-byte output header alone (for callers that assemble the message themselves)."""
    _check_range("frame_index", frame_index, U32_MAX)
    if input_seq is None:
        input_seq = NO_INPUT_SEQ
        input_capture_ts_us = 0 if input_capture_ts_us is None else input_capture_ts_us
    _check_range("input_seq", input_seq, U32_MAX)
    _check_range("input_capture_ts_us", input_capture_ts_us, U64_MAX)
    _check_range("control_seq", control_seq, U32_MAX)
    return OUTPUT_HEADER.pack(frame_index, input_seq, input_capture_ts_us, control_seq)


def pack_output_frame(
    frame_index: int,
    input_seq: int | None,
    input_capture_ts_us: int,
    control_seq: int,
    jpeg: BytesLike,
) -> bytes:
    """Binary output frame: 20-byte header then the JPEG. `input_seq=None` means no input used."""
    if len(jpeg) == 0:
        raise ValueError("jpeg must not be empty")
    return pack_output_header(frame_index, input_seq, input_capture_ts_us, control_seq) + bytes(jpeg)


def unpack_output_frame(data: BytesLike) -> OutputFrame:
    """Split a binary output frame; raise ProtocolError('bad_frame') when it breaks the layout."""
    size = len(data)
    if size < OUTPUT_HEADER_BYTES:
        raise ProtocolError(
            "bad_frame", f"output frame of {size} bytes is shorter than the {OUTPUT_HEADER_BYTES}-byte header"
        )
    if size == OUTPUT_HEADER_BYTES:
        raise ProtocolError("bad_frame", "output frame has a header but no JPEG payload")
    frame_index, input_seq, ts, control_seq = OUTPUT_HEADER.unpack_from(data, 0)
    header = OutputFrameHeader(
        frame_index, None if input_seq == NO_INPUT_SEQ else input_seq, ts, control_seq
    )
    return OutputFrame(header, bytes(data[OUTPUT_HEADER_BYTES:]))
