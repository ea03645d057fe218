"""The interactive frame loop: sessions, the per-device EDF scheduler, pipelined stages, metrics.

Pure Python + torch; never imports Django. The WebSocket consumer is glue around DeviceRuntime.
"""
from __future__ import annotations

from .clock import Clock, FakeClock, MonotonicClock
from .core import DeviceCore
from .device import DeviceRuntime, SessionHandle
from .metrics import DeviceMetrics, SessionMetrics
from .prometheus import RuntimeCollector
from .types import NO_INPUT_SEQ, OutputFrame, SessionConfig, SessionFault

__all__ = ["Clock", "DeviceCore", "DeviceMetrics", "DeviceRuntime", "FakeClock", "MonotonicClock",
           "NO_INPUT_SEQ", "OutputFrame", "RuntimeCollector", "SessionConfig", "SessionFault", "SessionHandle",
           "SessionMetrics"]
