"""Live protocol v1 codec: client message parsing, server message serialisation, binary headers.

hypothesis is not installed, so the "property" tests draw many cases from a seeded random.Random:
deterministic, yet they cover far more inputs than hand-written examples.
"""

from __future__ import annotations

import json
import random
import struct
from decimal import Decimal

import pytest

from inference import protocol as p

# --- client message parsing ----------------------------------------------------------------------


def test_session_start_full() -> None:
    msg = p.parse_client_message(
        json.dumps(
            {"type": "session.start", "model": "identity", "width": 512, "height": 256,
             "fps": 30, "prompt": "a cat", "params": {"strength": 0.5}}
        )
    )
    assert msg == p.SessionStart("identity", 512, 256, 30, "a cat", {"strength": 0.5})


def test_session_start_minimal_takes_defaults() -> None:
    msg = p.parse_client_message('{"type":"session.start","model":"m"}')
    assert msg == p.SessionStart("m")
    assert (msg.width, msg.height, msg.fps, msg.prompt, msg.params) == (None,) * 5


def test_control_and_stop() -> None:
    assert p.parse_client_message('{"type":"control","seq":3,"prompt":"x"}') == p.Control(3, "x")
    assert p.parse_client_message('{"type":"control","seq":4,"params":{}}') == p.Control(4, None, {})
    assert p.parse_client_message('{"type":"session.stop"}') == p.SessionStop()


@pytest.mark.parametrize(
    "message",
    [
        p.SessionStart("m"),
        p.SessionStart("m", 64, 48, 24, "p", {"a": [1, 2]}),
        p.Control(1, prompt="p"),
        p.Control(0xFFFFFFFF, params={"k": None}),
        p.SessionStop(),
    ],
)
def test_client_messages_round_trip(message: p.ClientMessage) -> None:
    text = message.to_json()
    assert json.loads(text)["type"] == message.type
    assert p.parse_client_message(text) == message


BAD_MESSAGES = [
    ("not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1,2]", "JSON object is expected, got array"),
    ('"session.stop"', "got string"),
    ("{}", "missing required field 'type'"),
    ('{"type": 5}', "type must be a string"),
    ('{"type":"session.begin"}', "unknown message type 'session.begin'"),
    ('{"type":"session.start"}', "missing required field 'model'"),
    ('{"type":"session.start","model":""}', "model must not be empty"),
    ('{"type":"session.start","model":7}', "model must be a string"),
    ('{"type":"session.start","model":"m","width":"512"}', "width must be an integer, got string"),
    ('{"type":"session.start","model":"m","width":512.0}', "width must be an integer, got number"),
    ('{"type":"session.start","model":"m","width":true}', "width must be an integer, got boolean"),
    ('{"type":"session.start","model":"m","height":0}', "height must be between 1"),
    ('{"type":"session.start","model":"m","height":-4}', "height must be between 1"),
    ('{"type":"session.start","model":"m","width":100000}', "width must be between 1 and 8192"),
    ('{"type":"session.start","model":"m","fps":0}', "fps must be between 1"),
    ('{"type":"session.start","model":"m","fps":null}', "fps must be an integer, got null"),
    ('{"type":"session.start","model":"m","prompt":["a"]}', "prompt must be a string, got array"),
    ('{"type":"session.start","model":"m","params":[]}', "params must be an object, got array"),
    ('{"type":"session.start","model":"m","params":"x"}', "params must be an object"),
    ('{"type":"session.start","model":"m","promt":"typo"}', "unknown field 'promt' in session.start"),
    ('{"type":"control","prompt":"x"}', "missing required field 'seq'"),
    ('{"type":"control","seq":"1","prompt":"x"}', "seq must be an integer, got string"),
    ('{"type":"control","seq":1.5,"prompt":"x"}', "seq must be an integer"),
    ('{"type":"control","seq":-1,"prompt":"x"}', "seq must be between 0 and 4294967295"),
    ('{"type":"control","seq":4294967296,"prompt":"x"}', "seq must be between"),
    ('{"type":"control","seq":1}', "control must carry a prompt and/or params"),
    ('{"type":"control","seq":1,"params":5}', "params must be an object, got number"),
    ('{"type":"control","seq":1,"prompt":"x","frame":3}', "unknown field 'frame' in control"),
    ('{"type":"session.stop","reason":"bye"}', "unknown field 'reason' in session.stop"),
    ('{"type":"session.stop","type":"session.stop"}', "duplicate field 'type'"),
    ('{"type":"session.start","model":"m","params":{"x":NaN}}', "NaN is not valid JSON"),
    ('{"type":"session.start","model":"m","params":{"x":Infinity}}', "Infinity is not valid JSON"),
    ("[" * 100000 + "]" * 100000, "larger than"),
    ('{"type":"control","seq":1,"params":{"x":1e400}}', "out of range"),
    ('{"type":"control","seq":' + "9" * 5000 + ',"prompt":"x"}', "not valid JSON"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_MESSAGES)
def test_malformed_client_messages_are_bad_message(text: str, expected: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_message(text)
    assert info.value.code == "bad_message"
    assert expected in info.value.message


def test_deep_nesting_within_size_limit_is_bad_message() -> None:
    text = '{"type":"control","seq":1,"params":' + "[" * 20000 + "]" * 20000 + "}"
    assert len(text) < p.MAX_TEXT_BYTES
    with pytest.raises(p.ProtocolError) as info:
        p.parse_client_message(text)
    assert info.value.code == "bad_message"


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    # Each "é" is 2 bytes: under the limit in characters, over it in bytes.
    prompt = "é" * (p.MAX_TEXT_BYTES // 2)
    text = json.dumps({"type": "control", "seq": 1, "prompt": prompt}, ensure_ascii=False)
    assert len(text) <= p.MAX_TEXT_BYTES < len(text.encode())
    with pytest.raises(p.ProtocolError, match="larger than 65536 bytes"):
        p.parse_client_message(text)
    # The same prompt fits when it is shorter.
    ok = json.dumps({"type": "control", "seq": 1, "prompt": "é" * 1000}, ensure_ascii=False)
    assert p.parse_client_message(ok) == p.Control(1, "é" * 1000)


def test_lone_surrogate_is_bad_message() -> None:
    with pytest.raises(p.ProtocolError, match="UTF-8"):
        p.parse_client_message('{"type":"session.stop"}\ud800')


def test_error_from_protocol_error_is_an_error_message() -> None:
    exc = p.ProtocolError("bad_frame", "short")
    assert json.loads(exc.to_json()) == {"type": "error", "code": "bad_frame", "message": "short"}
    with pytest.raises(ValueError):
        p.ProtocolError("not_a_code", "x")


def test_random_json_values_never_escape_as_other_exceptions() -> None:
    """Fuzz: any JSON value either parses to a message or raises ProtocolError('bad_message')."""
    rng = random.Random(1234)
    valid = {"model": "m", "width": 64, "height": 48, "fps": 30, "prompt": "p", "params": {},
             "seq": 1, "extra": 1}

    def value(depth: int = 0):
        choice = rng.randrange(7 if depth < 3 else 5)
        return [
            lambda: None, lambda: rng.choice([True, False]), lambda: rng.randint(-5, 2**33),
            lambda: rng.random() * 100, lambda: rng.choice(["", "m", "session.start", "x" * 10]),
            lambda: [value(depth + 1) for _ in range(rng.randrange(3))],
            lambda: {rng.choice(KEYS): value(depth + 1) for _ in range(rng.randrange(4))},
        ][choice]()

    def message():
        # Mostly well-typed fields, sometimes a random value: reaches both outcomes often.
        obj = {"type": rng.choice(TYPES)}
        for key in rng.sample(KEYS[1:], rng.randrange(len(KEYS))):
            obj[key] = valid[key] if rng.random() < 0.8 else value()
        return obj if rng.random() < 0.9 else value()

    outcomes = {"parsed": 0, "rejected": 0}
    for _ in range(3000):
        text = json.dumps(message())
        try:
            msg = p.parse_client_message(text)
        except p.ProtocolError as exc:
            assert exc.code == "bad_message" and exc.message
            outcomes["rejected"] += 1
        else:
            outcomes["parsed"] += 1
            assert p.parse_client_message(msg.to_json()) == msg
    assert outcomes["parsed"] > 50 and outcomes["rejected"] > 50, outcomes


KEYS = ["type", "model", "width", "height", "fps", "prompt", "params", "seq", "extra"]
TYPES = ["session.start", "control", "session.stop", "nope"]


# --- server messages -----------------------------------------------------------------------------


def test_session_ready_layout() -> None:
    text = p.SessionReady("s1", "identity", "interactive", 512, 512, 30, 33.3, "cuda:0", 0.25,
                          Decimal("0.00042")).to_json()
    assert json.loads(text) == {
        "type": "session.ready", "session_id": "s1", "model": "identity", "tier": "interactive",
        "width": 512, "height": 512, "fps": 30, "frame_budget_ms": 33.3,
        "reservation": {"device": "cuda:0", "share": 0.25},
        "price_per_gpu_second": "0.00042", "currency": "usd",
    }
    # An invalid message cannot even be built.
    with pytest.raises(ValueError, match="tier"):
        p.SessionReady("s", "m", "fast-batch", 1, 1, 1, 1, "d", 1, "1")
    with pytest.raises(ValueError, match="float"):
        p.SessionReady("s", "m", "streaming", 1, 1, 1, 1, "d", 1, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a decimal"):
        p.SessionReady("s", "m", "streaming", 1, 1, 1, 1, "d", 1, "cheap")


def test_control_messages() -> None:
    assert json.loads(p.ControlApplied(3, 17).to_json()) == {"type": "control.applied", "seq": 3, "frame": 17}
    assert json.loads(p.ControlRejected(4, "moderation", "no").to_json()) == {
        "type": "control.rejected", "seq": 4, "code": "moderation", "message": "no"}
    with pytest.raises(ValueError):
        p.ControlRejected(4, "bad_message", "no")


def test_metrics_non_finite_floats_go_as_null() -> None:
    nan, inf = float("nan"), float("inf")
    wire = json.loads(p.Metrics(90, inf, nan, 30.0, 41.0, nan, nan, 2, 1, inf).to_json())
    assert wire["type"] == "metrics"
    assert wire["fps"] is wire["ttff_ms"] is wire["jitter_ms"] is wire["gpu_seconds"] is None
    assert wire["latency_ms"] == {"p50": 30.0, "p95": 41.0, "p99": None}  # NaN is not JSON; null is
    assert wire["dropped_outputs"] == 0  # v1.2 field, present even when a caller leaves it out


def test_moderation_error_and_ended() -> None:
    assert json.loads(p.Moderation(5, "replaced", "violence").to_json()) == {
        "type": "moderation", "frame": 5, "action": "replaced", "category": "violence"}
    with pytest.raises(ValueError):
        p.Moderation(5, "blurred", "x")
    assert json.loads(p.Error("capacity_unavailable", "full", retry_after_s=5).to_json()) == {
        "type": "error", "code": "capacity_unavailable", "message": "full", "retry_after_s": 5}
    assert "retry_after_s" not in json.loads(p.Error("not_started", "start first").to_json())
    with pytest.raises(ValueError):
        p.Error("oops", "x")
    ended = json.loads(p.SessionEnded("client", p.Usage(1.5, 45, "0.01")).to_json())
    assert ended == {"type": "session.ended", "reason": "client",
                     "usage": {"gpu_seconds": 1.5, "frames": 45, "cost": "0.01", "currency": "usd"}}
    assert p.SessionEnded("idle", p.Usage(1.5, 45, Decimal("0.01"))).to_json() == p.SessionEnded(
        "idle", p.Usage(gpu_seconds=1.5, frames=45, cost="0.01")).to_json()
    with pytest.raises(ValueError):
        p.SessionEnded("tired", p.Usage(0, 0, "0"))
    with pytest.raises(ValueError, match="cost"):
        p.Usage(0, 0, 0.1)  # type: ignore[arg-type]  # money is never a float


# The exact wire text (compact separators, field order, optional fields omitted), pinned byte for
# byte: clients in other languages may compare or hash it, and docs/protocol.md shows these forms.
WIRE_TEXT = {
    "session.ready": '{"type":"session.ready","session_id":"s1","model":"identity","tier":"interactive",'
                     '"width":512,"height":512,"fps":30,"frame_budget_ms":33.3,'
                     '"reservation":{"device":"cuda:0","share":0.25},"price_per_gpu_second":"0.00042",'
                     '"currency":"usd"}',
    "control.applied": '{"type":"control.applied","seq":3,"frame":17}',
    "control.rejected": '{"type":"control.rejected","seq":4,"code":"moderation","message":"no"}',
    "metrics": '{"type":"metrics","frames_out":90,"fps":29.8,"ttff_ms":null,'
               '"latency_ms":{"p50":30.0,"p95":41.0,"p99":null},"jitter_ms":1.5,"deadline_misses":2,'
               '"dropped_inputs":1,"dropped_outputs":3,"gpu_seconds":0.75}',
    "moderation": '{"type":"moderation","frame":5,"action":"replaced","category":"violence"}',
    "error": '{"type":"error","code":"capacity_unavailable","message":"full","retry_after_s":5}',
    "error without retry": '{"type":"error","code":"not_started","message":"start first"}',
    "session.ended": '{"type":"session.ended","reason":"client",'
                     '"usage":{"gpu_seconds":1.5,"frames":45,"cost":"0.01","currency":"usd"}}',
    "session.start": '{"type":"session.start","model":"m","width":64,"fps":24,"prompt":"p","params":{"a":[1,2]}}',
    "control": '{"type":"control","seq":1,"prompt":"p"}',
    "session.stop": '{"type":"session.stop"}',
    "session.redirect": '{"type":"session.redirect","url":"wss://h/nodes/gpu-2/v1/live","ticket":"nft_x","retry_after_s":0}',
}


def test_wire_text_is_byte_exact() -> None:
    built: dict[str, p.Message] = {
        "session.ready": p.SessionReady("s1", "identity", "interactive", 512, 512, 30, 33.3, "cuda:0", 0.25,
                                        Decimal("0.00042")),
        "control.applied": p.ControlApplied(3, 17),
        "control.rejected": p.ControlRejected(4, p.ControlRejectCode.MODERATION, "no"),
        "metrics": p.Metrics(90, 29.8, None, 30.0, 41.0, float("nan"), 1.5, 2, 1, 0.75, 3),
        "moderation": p.Moderation(5, "replaced", "violence"),
        "error": p.Error(p.ErrorCode.CAPACITY_UNAVAILABLE, "full", retry_after_s=5),
        "error without retry": p.Error("not_started", "start first"),
        "session.ended": p.SessionEnded(p.EndReason.CLIENT, p.Usage(1.5, 45, "0.01")),
        "session.start": p.SessionStart("m", 64, None, 24, "p", {"a": [1, 2]}),
        "control": p.Control(1, prompt="p"),
        "session.stop": p.SessionStop(),
        "session.redirect": p.SessionRedirect("wss://h/nodes/gpu-2/v1/live", "nft_x"),
    }
    assert {name: message.to_json() for name, message in built.items()} == WIRE_TEXT


def test_codes_match_the_contract() -> None:
    # PROTOCOL.md v1 and the v1.1 additions; the registry only ever grows.
    assert {"bad_message", "bad_frame", "unknown_model", "invalid_params",
                             "capacity_unavailable", "quota_exceeded", "concurrency_limit",
                             "rate_limited", "not_started", "moderation", "account_suspended",
                             "server_error", "wrong_node"} == p.ERROR_CODES
    assert {"client", "quota", "moderation", "revoked", "idle", "max_duration",
                             "server_error", "shutdown", "slow_reader"} == p.END_REASONS
    assert {"moderation", "invalid_params"} == p.CONTROL_REJECT_CODES
    assert (p.CLOSE_NORMAL, p.CLOSE_TRY_AGAIN, p.CLOSE_UNAUTHENTICATED, p.CLOSE_FORBIDDEN,
            p.CLOSE_CONCURRENCY) == (1000, 1013, 4401, 4403, 4429)


def test_every_code_in_the_registry_serialises_and_refusals_have_a_close_code() -> None:
    from inference.error_codes import CLOSE_CODE_FOR_ERROR, EndReason, ErrorCode

    # The runtime reports server_error: the codec must take it (it refused it once, and the
    # engine failure that raised it went unreported).
    for code in ErrorCode:
        assert json.loads(p.Error(code, "m").to_json())["code"] == code.value
    for reason in EndReason:
        assert json.loads(p.SessionEnded(reason, p.Usage(0, 0, "0")).to_json())["reason"] == reason.value
    assert p.close_code_for("capacity_unavailable") == 1013
    assert p.close_code_for("concurrency_limit") == 4429
    assert p.close_code_for("quota_exceeded") == p.close_code_for("account_suspended") == 4403
    assert p.close_code_for("wrong_node") == 4403
    assert p.close_code_for("bad_frame") is None and p.close_code_for("nonsense") is None
    assert set(CLOSE_CODE_FOR_ERROR.values()) <= p.CLOSE_CODES


def test_parse_server_message() -> None:
    assert p.parse_server_message('{"type":"metrics","new_field":1}')["new_field"] == 1
    for text in ["nope", "[]", '{"x":1}', '{"type":1}']:
        with pytest.raises(p.ProtocolError):
            p.parse_server_message(text)


# --- binary frames -------------------------------------------------------------------------------

JPEG = b"\xff\xd8\xff\xe0fake-jpeg-body\xff\xd9"


def test_input_frame_layout_is_big_endian_12_bytes() -> None:
    data = p.pack_input_frame(0x01020304, 0x05060708090A0B0C, JPEG)
    assert data[:12] == bytes(range(1, 13))
    assert data[12:] == JPEG
    assert p.unpack_input_frame(data) == p.InputFrame(0x01020304, 0x05060708090A0B0C, JPEG)


def test_output_frame_layout_is_big_endian_20_bytes() -> None:
    data = p.pack_output_frame(1, 2, 3, 4, JPEG)
    assert data[:20] == struct.pack(">IIQI", 1, 2, 3, 4)
    assert data[:20] == bytes([0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4])
    header, jpeg = p.unpack_output_frame(data)
    assert header == p.OutputFrameHeader(1, 2, 3, 4) and jpeg == JPEG


def test_output_frame_without_input_uses_the_sentinel() -> None:
    data = p.pack_output_frame(7, None, 0, 0, JPEG)
    assert data[4:8] == b"\xff\xff\xff\xff" and data[8:16] == bytes(8)
    assert p.unpack_output_frame(data).header == p.OutputFrameHeader(7, None, 0, 0)


def test_binary_round_trips_random() -> None:
    rng = random.Random(42)
    for _ in range(2000):
        seq, ts = rng.randrange(0, 2**32 - 1), rng.randrange(0, 2**64)
        payload = JPEG[:2] + rng.randbytes(rng.randrange(0, 64))
        assert p.unpack_input_frame(memoryview(p.pack_input_frame(seq, ts, payload))) == (seq, ts, payload)
        fi, cs = rng.randrange(2**32), rng.randrange(2**32)
        iseq = rng.choice([None, rng.randrange(2**32 - 1)])
        its = 0 if iseq is None else rng.randrange(2**64)
        frame = p.unpack_output_frame(bytearray(p.pack_output_frame(fi, iseq, its, cs, payload)))
        assert frame == p.OutputFrame(p.OutputFrameHeader(fi, iseq, its, cs), payload)


@pytest.mark.parametrize("size", range(0, 13))
def test_short_input_frames_are_bad_frame(size: int) -> None:
    data = p.pack_input_frame(1, 2, JPEG)[:size]
    with pytest.raises(p.ProtocolError) as info:
        p.unpack_input_frame(data)
    assert info.value.code == "bad_frame"
    assert ("shorter than the 12-byte header" if size < 12 else "no JPEG payload") in info.value.message


@pytest.mark.parametrize("size", range(0, 21))
def test_short_output_frames_are_bad_frame(size: int) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.unpack_output_frame(p.pack_output_frame(1, 2, 3, 4, JPEG)[:size])
    assert info.value.code == "bad_frame"


def test_input_frame_payload_checks() -> None:
    with pytest.raises(p.ProtocolError, match="not a JPEG"):
        p.unpack_input_frame(struct.pack(">IQ", 1, 2) + b"PNG....")
    with pytest.raises(p.ProtocolError, match="exceeds the 8-byte limit"):
        p.unpack_input_frame(p.pack_input_frame(1, 2, JPEG), max_payload_bytes=8)
    assert p.unpack_input_frame(p.pack_input_frame(1, 2, JPEG), max_payload_bytes=len(JPEG)).jpeg == JPEG
    with pytest.raises(p.ProtocolError, match="reserved"):
        p.unpack_input_frame(struct.pack(">IQ", 0xFFFFFFFF, 2) + JPEG)


@pytest.mark.parametrize(
    "args",
    [(-1, 0, JPEG), (2**32 - 1, 0, JPEG), (2**32, 0, JPEG), (0, -1, JPEG), (0, 2**64, JPEG),
     (0, 0, b""), (True, 0, JPEG), (1.0, 0, JPEG)],
)
def test_pack_input_frame_rejects_out_of_range(args) -> None:
    with pytest.raises(ValueError):
        p.pack_input_frame(*args)


@pytest.mark.parametrize(
    "args",
    [(-1, 0, 0, 0), (2**32, 0, 0, 0), (0, 2**32, 0, 0), (0, 0, 2**64, 0), (0, 0, 0, -1), (0, 0, 0, 2**32)],
)
def test_pack_output_frame_rejects_out_of_range(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        p.pack_output_frame(*args, JPEG)
    with pytest.raises(ValueError):
        p.pack_output_frame(0, None, 0, 0, b"")


def test_protocol_module_stays_light() -> None:
    """The web side imports the protocol on every connection: no torch, numpy or Django in it."""
    import subprocess
    import sys

    code = ("import sys, inference.protocol; "
            "print(','.join(m for m in ('torch','numpy','django') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_moderation_v1_1_source_and_detector_are_on_the_wire_only_when_known() -> None:
    full = p.Moderation(5, "replaced", "listed_image", "input", "hash")
    assert json.loads(full.to_json()) == {"type": "moderation", "frame": 5, "action": "replaced",
                                          "category": "listed_image", "source": "input", "detector": "hash"}
    assert json.loads(p.Moderation(5, "ended", "sexual", "output", "classifier").to_json())["detector"] == "classifier"
    assert "source" not in json.loads(p.Moderation(5, "replaced", "x").to_json())
    with pytest.raises(ValueError):
        p.Moderation(5, "replaced", "x", source="sideways")
    with pytest.raises(ValueError):
        p.Moderation(5, "replaced", "x", detector="vibes")
