"""Human-readable rendering of Evidence: the table `nextframe audit` prints without --json."""
from __future__ import annotations

from typing import Any

from .evidence import Evidence


def _num(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def format_table(ev: Evidence) -> str:
    """A two-column table of the evidence, the verdict and its reasons."""
    declared = ev.declared_tier or "n/a"
    verdict = ev.tier or "?"
    flag = "" if ev.declared_tier in (None, verdict) else f"   (declared {declared}: DISAGREES)"
    lag_frames = (f"{_num(ev.control_lag_frames_pixels, '', 1)} pixels / {_num(ev.control_lag_frames_header, '', 1)} header"
                  if ev.controls_sent else "n/a (no steerable parameter)")
    lag_ms = (f"{_num(ev.control_lag_ms_pixels, ' ms')} pixels / {_num(ev.control_lag_ms_header, ' ms')} header"
              if ev.controls_sent else "n/a")
    rows = [
        ("model", f"{ev.model} ({ev.kind}) via {ev.transport}, {ev.width}x{ev.height} @ {ev.fps:g} fps"),
        ("tier", f"{verdict}{flag}"),
        ("TTFF p50", f"{_num(ev.ttff_ms, ' ms')} over {ev.sessions} sessions {[round(x, 1) for x in ev.ttff_samples_ms]}"),
    ]
    if ev.complete_ms is not None:
        # A clip: TTFF is the first deliverable frame; beside it, when its last frame was computed.
        rows += [
            ("last frame computed", _num(ev.complete_ms, " ms")),
            ("throughput", f"{_num(ev.fps_sustained)} frames/s of clip"),
            ("mid-run control", "none (the clip API takes no control while rendering)"),
            ("server reported", ", ".join(f"{k} {v}" for k, v in (ev.server_reported or {}).items())),
            ("clip timings", ", ".join(f"{k} {v}" for k, v in (ev.clip_timings or {}).items())),
            ("measured at", ev.measured_at),
        ]
    else:
        rows += [
            ("FPS idle / sustained", f"{_num(ev.fps_idle)} / {_num(ev.fps_sustained)}"),
            ("control lag (frames)", lag_frames),
            ("control lag (ms)", lag_ms),
            ("controls landed", f"{ev.controls_landed_pixels} pixels, {ev.controls_landed_header} header of "
                                f"{ev.controls_sent}" + (f" (probe {ev.probe['param']})" if ev.probe else "")),
            ("jitter", _num(ev.jitter_ms, " ms")),
            ("deadline misses", "n/a" if ev.deadline_miss_rate is None else f"{ev.deadline_miss_rate:.1%}"),
            ("state", f"{ev.state_persistence} (score {_num(ev.state_persistence_score, '', 2)}, "
                      f"restart distance {_num(ev.state_memory, '', 1)})"),
            ("measured at", ev.measured_at),
        ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("why:")
    lines += [f"  - {r}" for r in ev.reasons]
    return "\n".join(lines)
