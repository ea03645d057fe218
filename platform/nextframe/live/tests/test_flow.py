"""SocketFlow: the push producer that tells the live consumer when a WebSocket stops draining."""
from __future__ import annotations

from nextframe.live.flow import EXTENSION, SocketFlow, attach, flow_of


class FakeTimer:
    def __init__(self, delay: float, fn) -> None:
        self.delay, self.fn, self.cancelled = delay, fn, False

    def active(self) -> bool:
        return not self.cancelled

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_flow():
    timers: list[FakeTimer] = []
    aborted: list[bool] = []
    clock = Clock()
    flow = SocketFlow(abort=lambda: aborted.append(True), abort_after_s=15.0,
                      call_later=lambda d, fn: timers.append(FakeTimer(d, fn)) or timers[-1], clock=clock)
    return flow, timers, aborted, clock


def test_backed_up_and_stalled_for_follow_pause_and_resume():
    flow, timers, aborted, clock = make_flow()
    assert not flow.backed_up and flow.stalled_for() == 0.0
    flow.pauseProducing()
    clock.now += 4.0
    flow.pauseProducing()  # a second pause does not restart the stall
    assert flow.backed_up and flow.stalled_for() == 4.0 and len(timers) == 1
    flow.resumeProducing()  # the buffer drained completely: the client read everything
    assert not flow.backed_up and flow.stalled_for() == 0.0 and timers[0].cancelled
    assert flow.pauses == 1 and aborted == []


def test_a_connection_still_backed_up_at_the_backstop_is_aborted():
    flow, timers, aborted, clock = make_flow()
    flow.pauseProducing()
    assert timers[0].delay == 15.0
    clock.now += 15.0
    timers[0].fn()
    assert aborted == [True] and flow.aborted
    # A timer that fires after a resume (a race with the reactor) aborts nothing.
    flow2, timers2, aborted2, _ = make_flow()
    flow2.pauseProducing()
    flow2.paused_since = None
    timers2[0].fn()
    assert aborted2 == []


def test_attach_replaces_daphnes_leftover_producer_and_publishes_the_flow_in_the_scope():
    class Transport:
        def __init__(self) -> None:
            self.producer: str | None = "http-channel"
            self.streaming: bool | None = None

        def unregisterProducer(self) -> None:
            self.producer = None

        def registerProducer(self, producer, streaming) -> None:
            assert self.producer is None, "Twisted refuses a second producer"
            self.producer, self.streaming = producer, streaming

        def abortConnection(self) -> None:
            pass

    class Protocol:
        transport = Transport()

    scope: dict = {"type": "websocket"}
    flow = attach(Protocol(), scope, abort_after_s=15.0, call_later=FakeTimer)
    assert Protocol.transport.producer is flow and Protocol.transport.streaming is True
    assert scope["extensions"][EXTENSION] is flow and flow_of(scope) is flow
    assert flow_of({"type": "websocket"}) is None
