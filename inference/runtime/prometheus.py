"""Prometheus export of device and session metrics through a custom Collector.

Register it on the registry you serve (`registry.register(RuntimeCollector(rt))`); tests use their own
CollectorRegistry so nothing collides with the process-global one. Values are read from the runtime's
snapshots at scrape time, so the frame loop never pays for Prometheus. Session series carry a
`session` label and disappear when the session closes.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .device import DeviceRuntime

_QUANTILES = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}


class RuntimeCollector(Collector):
    def __init__(self, *runtimes: DeviceRuntime) -> None:
        self.runtimes: tuple[DeviceRuntime, ...] = runtimes

    def collect(self) -> Iterator[Metric]:
        yield from _device_families(self.runtimes)
        yield from _session_families(self.runtimes)


def _device_families(runtimes: Iterable[DeviceRuntime]) -> Iterator[Metric]:
    busy = GaugeMetricFamily("nextframe_device_busy_fraction", "Share of wall time the device spent in steps",
                             labels=["device"])
    sessions = GaugeMetricFamily("nextframe_device_sessions", "Open sessions on the device", labels=["device"])
    steps = CounterMetricFamily("nextframe_device_steps", "Engine steps run", labels=["device"])
    batches = CounterMetricFamily("nextframe_device_batches", "Steps by batch size", labels=["device", "size"])
    depth = GaugeMetricFamily("nextframe_device_queue_depth", "Items waiting per stage queue",
                              labels=["device", "queue"])
    stage = CounterMetricFamily("nextframe_device_stage_busy_seconds", "Seconds spent per pipeline stage",
                                labels=["device", "stage"])
    for rt in runtimes:
        d = rt.device_metrics()
        dev = d["device_id"]
        busy.add_metric([dev], d["busy_fraction"])
        sessions.add_metric([dev], d["sessions"])
        steps.add_metric([dev], d["steps"])
        for size, n in d["batch_sizes"].items():
            batches.add_metric([dev, str(size)], n)
        for q, n in d["queue_depths"].items():
            depth.add_metric([dev, q], n)
        for name, secs in d["stage_busy_s"].items():
            stage.add_metric([dev, name], secs)
    yield from (busy, sessions, steps, batches, depth, stage)


def _session_families(runtimes: Iterable[DeviceRuntime]) -> Iterator[Metric]:
    labels = ["device", "session", "engine"]
    frames = CounterMetricFamily("nextframe_session_frames_out", "Frames delivered", labels=labels)
    latency = GaugeMetricFamily("nextframe_session_latency_ms", "Per-frame latency percentiles (recent window)",
                                labels=labels + ["quantile"])
    ttff = GaugeMetricFamily("nextframe_session_ttff_ms", "Time to first frame", labels=labels)
    jitter = GaugeMetricFamily("nextframe_session_jitter_ms", "Std-dev of inter-frame intervals", labels=labels)
    fps = GaugeMetricFamily("nextframe_session_fps", "Recent output frame rate", labels=labels)
    misses = CounterMetricFamily("nextframe_session_deadline_misses", "Frames later than their deadline",
                                 labels=labels)
    dropped = CounterMetricFamily("nextframe_session_dropped", "Dropped frames by direction",
                                  labels=labels + ["direction"])
    lag = GaugeMetricFamily("nextframe_session_control_lag_frames", "Last control-to-frame lag in frames",
                            labels=labels)
    lag_ms = GaugeMetricFamily("nextframe_session_control_lag_ms", "Last control-to-frame lag in ms", labels=labels)
    gpu = CounterMetricFamily("nextframe_session_gpu_seconds", "Reserved share x wall time", labels=labels)
    for rt in runtimes:
        for m in rt.session_metrics():
            lv = [rt.device_id, m.session_id, m.engine_id]
            frames.add_metric(lv, m.frames_out)
            for q, v in m.latency_ms.items():
                latency.add_metric(lv + [_QUANTILES[q]], v)
            if m.ttff_ms is not None:
                ttff.add_metric(lv, m.ttff_ms)
            jitter.add_metric(lv, m.jitter_ms)
            fps.add_metric(lv, m.fps)
            misses.add_metric(lv, m.deadline_misses)
            dropped.add_metric(lv + ["input"], m.dropped_inputs)
            dropped.add_metric(lv + ["output"], m.dropped_outputs)
            if m.control_lag_frames is not None:
                lag.add_metric(lv, m.control_lag_frames)
                lag_ms.add_metric(lv, m.control_lag_ms or 0.0)
            gpu.add_metric(lv, m.gpu_seconds)
    yield from (frames, latency, ttff, jitter, fps, misses, dropped, lag, lag_ms, gpu)
