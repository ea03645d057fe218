"""The `nextframe live` command: run one live session from the terminal and print its metrics.

Built on the reference client (`inference.client`); `nextframe live ...` calls `main(argv)`.
`--output out.mp4` keeps what the session made as an H.264 MP4 at the session's size and fps, and
`--save-frames DIR` as the received JPEGs (frame_000000.jpg, ...), via `client.SessionRecorder`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from inference.client import LiveClient, LiveClientError, ReceivedFrame, SessionRecorder, file_source, pattern_source


def format_metrics(m: dict[str, Any]) -> str:
    """One readable line for a metrics message (missing numbers show as '-')."""

    def num(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lat = m.get("latency_ms") or {}
    return (
        f"frames {m.get('frames_out', '-')} | fps {num(m.get('fps'))} | ttff {num(m.get('ttff_ms'), 0)} ms"
        f" | latency p50 {num(lat.get('p50'))} p95 {num(lat.get('p95'))} p99 {num(lat.get('p99'))} ms"
        f" | jitter {num(m.get('jitter_ms'))} ms | misses {m.get('deadline_misses', '-')}"
        f" | drops {m.get('dropped_inputs', '-')} | gpu-s {num(m.get('gpu_seconds'), 2)}"
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nextframe live", description="Run one live session and print its metrics.")
    ap.add_argument("--url", default=os.environ.get("NEXTFRAME_LIVE_URL", "ws://127.0.0.1:8000/v1/live"))
    ap.add_argument("--key", default=os.environ.get("NEXTFRAME_API_KEY"), help="API key (or NEXTFRAME_API_KEY)")
    ap.add_argument("--ticket", help="a ticket from POST /v1/tickets instead of a key")
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", help="'pattern' or a video/image file; omit for text-to-video models")
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--fps", type=int)
    ap.add_argument("--prompt")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=JSON", help="model param (repeatable)")
    ap.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    ap.add_argument("--control-every", type=int, metavar="N", help="send a control every N output frames")
    ap.add_argument("--control-prompt", action="append", default=[], help="prompts to cycle through (repeatable)")
    ap.add_argument("--json", action="store_true", help="print server messages as JSON lines")
    ap.add_argument("--output", metavar="FILE.mp4", help="write the received frames to an H.264 MP4 (session size and fps)")
    ap.add_argument("--save-frames", metavar="DIR", help="write each received frame as DIR/frame_000000.jpg, ...")
    return ap


def _parse_params(items: list[str]) -> dict[str, Any] | None:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw  # a bare word is a string
    return params or None


def _out(line: str, *, err: bool = False) -> None:
    print(line, file=sys.stderr if err else sys.stdout, flush=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Run:
    """One CLI session: a sender paced at the session fps, a receiver printing what arrives.

    Besides the server's metrics it measures two things on the client clock: the round trip of
    input frames (their capture timestamp comes back in the output header) and the control-to-frame
    lag (from sending a control to the first received frame whose header carries its seq).
    """

    def __init__(self, client: LiveClient, args: argparse.Namespace, ready: dict[str, Any],
                 recorder: SessionRecorder | None = None) -> None:
        self.client, self.args, self.ready, self.recorder = client, args, ready, recorder
        self.stop = asyncio.Event()
        self.frames_received = 0
        self.last_frame_index = -1
        self.control_seq = 0
        # In-flight controls, by seq: the last frame index seen when sent (for the lag in frames,
        # until control.applied/rejected) and the send time (until a frame carries the seq).
        self.control_sent_frame: dict[int, int] = {}
        self.control_sent_at: dict[int, float] = {}
        self.control_lag_ms: list[float] = []
        self.round_trip_ms: list[float] = []

    def emit(self, event: dict[str, Any]) -> None:
        if self.args.json:
            _out(json.dumps(event))
            return
        kind = event["type"]
        if kind == "metrics":
            _out(format_metrics(event))
        elif kind == "error":
            _out(f"error {event.get('code')}: {event.get('message')}", err=True)
        elif kind == "control.rejected":
            self.control_sent_frame.pop(event.get("seq", -1), None)
            self.control_sent_at.pop(event.get("seq", -1), None)
            _out(f"control {event.get('seq')} rejected ({event.get('code')}): {event.get('message')}", err=True)
        elif kind == "control.applied":
            seen = self.control_sent_frame.pop(event.get("seq", -1), None)
            lag = "" if seen is None else f" (lag {event['frame'] - seen - 1} frames)"
            _out(f"control {event.get('seq')} applied at frame {event.get('frame')}{lag}")
        elif kind == "moderation":
            _out(f"moderation: frame {event.get('frame')} {event.get('action')} ({event.get('category')})", err=True)
        elif kind == "session.ended":
            u = event.get("usage") or {}
            _out(f"session ended ({event.get('reason')}): {u.get('frames')} frames, "
                 f"{u.get('gpu_seconds')} GPU-seconds, cost {u.get('cost')} {u.get('currency', '')}".rstrip())

    def summary(self) -> str:
        parts = [f"client: {self.frames_received} frames received"]
        if self.round_trip_ms:
            rt = self.round_trip_ms
            parts.append(f"round trip p50 {_percentile(rt, 0.5):.1f} p95 {_percentile(rt, 0.95):.1f} ms")
        if self.control_lag_ms:
            lag = self.control_lag_ms
            parts.append(f"control-to-frame p50 {_percentile(lag, 0.5):.1f} ms ({len(lag)} controls)")
        return ", ".join(parts)

    async def receive(self) -> None:
        async for event in self.client:
            if isinstance(event, ReceivedFrame):
                await self.on_frame(event)
                continue
            self.emit(event)
            if event["type"] == "session.ended":
                self.stop.set()

    async def on_frame(self, frame: ReceivedFrame) -> None:
        header = frame.header
        self.frames_received += 1
        if self.recorder is not None:
            await self.recorder.add(frame)
        self.last_frame_index = header.frame_index
        if header.input_seq is not None:
            self.round_trip_ms.append(frame.received_at * 1000 - header.input_capture_ts_us / 1000)
        for seq in [s for s in self.control_sent_at if s <= header.control_seq]:
            sent_at = self.control_sent_at.pop(seq)
            if seq == header.control_seq:  # older ones were superseded, not measured
                self.control_lag_ms.append((frame.received_at - sent_at) * 1000)
        every = self.args.control_every
        if every and self.frames_received % every == 0 and not self.stop.is_set():
            self.control_seq += 1
            prompts = self.args.control_prompt or [f"{self.args.prompt or 'control'} #{self.control_seq}"]
            prompt = prompts[(self.control_seq - 1) % len(prompts)]
            self.control_sent_frame[self.control_seq] = self.last_frame_index
            self.control_sent_at[self.control_seq] = time.monotonic()
            await self.client.control(self.control_seq, prompt=prompt)

    async def send(self, source: Iterator[bytes]) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / max(int(self.ready.get("fps") or 30), 1)
        next_at = loop.time()
        seq = 0
        while not self.stop.is_set():
            jpeg = await asyncio.to_thread(next, source, None)  # decoding must not stall the loop
            if jpeg is None:
                return  # a finite source ran out: the session goes on with the last frame sent
            # Capture times are on the monotonic clock, the clock ReceivedFrame.received_at uses.
            await self.client.send_frame(seq, time.monotonic_ns() // 1000, jpeg)
            seq += 1
            next_at += interval
            delay = next_at - loop.time()
            if delay <= 0:
                next_at = loop.time()  # fell behind: send the next one now, never a burst to catch up
                continue
            try:
                await asyncio.wait_for(self.stop.wait(), delay)
            except TimeoutError:
                pass


def _exit_code(reason: str | None) -> int:
    if reason in ("client", "idle", "max_duration"):
        return 0
    return 2 if reason == "revoked" else 1


async def _run(args: argparse.Namespace, params: dict[str, Any] | None) -> int:
    loop = asyncio.get_running_loop()
    async with LiveClient(args.url, key=args.key, ticket=args.ticket) as client:
        ready = await client.start(args.model, args.width, args.height, args.fps, args.prompt, params)
        recorder = None
        if args.output or args.save_frames:
            recorder = SessionRecorder(args.output, args.save_frames)
            recorder.open(int(ready["width"]), int(ready["height"]), float(ready["fps"]))
        run = _Run(client, args, ready, recorder)
        def interrupt() -> None:  # Ctrl-C stops the session cleanly; a second Ctrl-C interrupts for real
            run.stop.set()
            loop.remove_signal_handler(signal.SIGINT)

        try:
            loop.add_signal_handler(signal.SIGINT, interrupt)
        except (RuntimeError, ValueError, NotImplementedError):
            pass  # not the main thread (tests) or no signals on this platform
        if not args.json:  # in JSON mode, session.ready is printed from the event stream
            _out(f"session {ready.get('session_id')}: {ready.get('model')} {ready.get('width')}x"
                 f"{ready.get('height')} @ {ready.get('fps')} fps, tier {ready.get('tier')}")
        tasks = [asyncio.create_task(run.receive())]
        if args.input:
            w, h = int(ready["width"]), int(ready["height"])
            source = pattern_source(w, h) if args.input == "pattern" else file_source(args.input, w, h)
            tasks.append(asyncio.create_task(run.send(source)))
        stopper = asyncio.create_task(run.stop.wait())
        recorded = True
        try:
            done, _ = await asyncio.wait([stopper, *tasks], timeout=args.duration,
                                         return_when=asyncio.FIRST_COMPLETED)
            failed = [exc for t in done if t is not stopper and (exc := t.exception()) is not None]
            run.stop.set()
            if failed and not isinstance(failed[0], LiveClientError):
                # The input broke (unreadable file...): still end the session politely, then report.
                try:
                    await client.stop()
                except LiveClientError:
                    pass
            if failed:
                raise failed[0]
            ended = await client.stop()
            await asyncio.wait(tasks, timeout=5)
        finally:
            stopper.cancel()
            for task in tasks:
                task.cancel()
            try:
                loop.remove_signal_handler(signal.SIGINT)
            except (RuntimeError, ValueError, NotImplementedError):
                pass
            if recorder is not None:
                # Whatever ended the session, finish the files with what was received.
                await asyncio.gather(*tasks, return_exceptions=True)
                recorded = await _finish(recorder, args.json)
        if run.frames_received and not args.json:
            _out(run.summary())
        code = _exit_code(ended.get("reason"))
        return code if recorded else (code or 1)


async def _finish(recorder: SessionRecorder, json_mode: bool) -> bool:
    """Close the recorder and say what was saved (on stderr in JSON mode); False if writing failed."""
    try:
        summary = await recorder.close()
    except Exception as exc:  # a full disk, a frame that does not decode...
        _out(f"error: could not save the session's frames: {exc}", err=True)
        return False
    _out(_recorded(summary), err=json_mode)
    return True


def _recorded(summary: dict[str, Any]) -> str:
    kept = []
    if summary["output"]:
        if summary["output_frames"]:
            kept.append(f"{summary['output']} ({summary['output_frames']} frames, {summary['width'] - summary['width'] % 2}x"
                        f"{summary['height'] - summary['height'] % 2} @ {summary['fps']} fps, H.264)")
        else:
            kept.append(f"no {summary['output']} (no frames received)")
    if summary["frames_dir"]:
        kept.append(f"{summary['frames']} JPEGs in {summary['frames_dir']}")
    return "saved " + ", ".join(kept)


def main(argv: list[str] | None = None) -> int:
    """`nextframe live ...`: run one session; 0 on a normal end, 2 for auth failures, 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["live"]:
        argv = argv[1:]  # called with the subcommand still in front
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse prints the usage; return its status instead of exiting
        return int(exc.code or 0)
    try:
        params = _parse_params(args.param)
    except ValueError as exc:
        _out(str(exc), err=True)
        return 1
    if args.input and args.input != "pattern" and not os.path.isfile(args.input):
        _out(f"--input {args.input!r}: no such file (use 'pattern' for the test pattern)", err=True)
        return 1
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        _out(f"--output {args.output!r}: its folder does not exist", err=True)
        return 1
    if args.save_frames and os.path.exists(args.save_frames):
        if not os.path.isdir(args.save_frames):
            _out(f"--save-frames {args.save_frames!r}: exists and is not a folder", err=True)
            return 1
        if any(name.startswith("frame_") and name.endswith(".jpg") for name in os.listdir(args.save_frames)):
            # Mixing two sessions' frames under one numbering would be silently wrong.
            _out(f"--save-frames {args.save_frames!r}: already holds frame_*.jpg files; use an empty folder", err=True)
            return 1
    try:
        return asyncio.run(_run(args, params))
    except LiveClientError as exc:
        retry = f" (retry after {exc.retry_after_s} s)" if exc.retry_after_s else ""
        _out(f"error: {exc}{retry}", err=True)
        return 2 if exc.is_auth else 1
    except KeyboardInterrupt:
        _out("interrupted", err=True)
        return 130
    except (OSError, ValueError) as exc:  # unreadable input file and the like
        _out(f"error: {exc}", err=True)
        return 1
