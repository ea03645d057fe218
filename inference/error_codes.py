"""The one registry of live-protocol codes: error codes, end reasons, control rejections, close codes.

Every part of the live path speaks these names - the protocol codec (inference/protocol.py), the
engines (`EngineError.code`), the frame loop (`SessionFault.code`) and the WebSocket consumer - so a
code that one of them emits is always one the others accept. They are PROTOCOL.md's public
contract: members are only ever added, never renamed. As `StrEnum`s they compare equal to, and
serialise as, the plain strings on the wire.

No imports beyond the standard library: the web side loads this on every connection.
"""
from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """`code` of an `error` message (and of engine errors and runtime faults)."""

    BAD_MESSAGE = "bad_message"
    BAD_FRAME = "bad_frame"
    UNKNOWN_MODEL = "unknown_model"
    INVALID_PARAMS = "invalid_params"
    CAPACITY_UNAVAILABLE = "capacity_unavailable"
    QUOTA_EXCEEDED = "quota_exceeded"
    CONCURRENCY_LIMIT = "concurrency_limit"
    RATE_LIMITED = "rate_limited"
    NOT_STARTED = "not_started"
    # v1.1
    MODERATION = "moderation"
    ACCOUNT_SUSPENDED = "account_suspended"
    SERVER_ERROR = "server_error"
    # v1.4: a session.redirect ticket presented to a node other than the one it sends the client to.
    WRONG_NODE = "wrong_node"


class ControlRejectCode(StrEnum):
    """`code` of a `control.rejected` message."""

    MODERATION = "moderation"
    INVALID_PARAMS = "invalid_params"


class EndReason(StrEnum):
    """`reason` of `session.ended` (and of the session record)."""

    CLIENT = "client"
    QUOTA = "quota"
    MODERATION = "moderation"
    REVOKED = "revoked"
    IDLE = "idle"
    MAX_DURATION = "max_duration"
    SERVER_ERROR = "server_error"
    SHUTDOWN = "shutdown"
    # v1.2: the client read nothing of what the server sent for LIVE_SLOW_READER_TIMEOUT_S.
    SLOW_READER = "slow_reader"


class CloseCode(IntEnum):
    """WebSocket close codes the server sends (RFC 6455 registry and the 4xxx application range)."""

    NORMAL = 1000
    TRY_AGAIN = 1013
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    CONCURRENCY = 4429
    # The server is shutting down (a socket without a session, or opened while the server drains).
    GOING_AWAY = 1001


# An error that refuses a session outright is sent as `error` and then the socket is closed with
# this code. Errors not listed here leave the socket open (the client may try again on it).
CLOSE_CODE_FOR_ERROR: dict[ErrorCode, CloseCode] = {
    ErrorCode.CAPACITY_UNAVAILABLE: CloseCode.TRY_AGAIN,
    ErrorCode.CONCURRENCY_LIMIT: CloseCode.CONCURRENCY,
    ErrorCode.QUOTA_EXCEEDED: CloseCode.FORBIDDEN,
    ErrorCode.ACCOUNT_SUSPENDED: CloseCode.FORBIDDEN,
    ErrorCode.WRONG_NODE: CloseCode.FORBIDDEN,
}


def close_code_for(code: ErrorCode | str) -> CloseCode | None:
    """The close code that follows a refusing `error` of `code`; None when the socket stays open."""
    try:
        return CLOSE_CODE_FOR_ERROR.get(ErrorCode(code))
    except ValueError:
        return None
