"""The written-down rules that turn Evidence into a tier (docs/audit.md explains each one).

Rules, applied in order:
1. fast-batch - the first output exists only once (nearly) all of it exists:
   `ttff_ms >= FAST_BATCH_TTFF_SHARE x complete_ms`; or probe controls were sent during a run and
   none of them ever showed (neither in the pixels nor in the headers): no mid-run control.
2. interactive - all of:
   a. control lag p50 <= INTERACTIVE_MAX_LAG_FRAMES frames, measured in the pixels (the header is
      used only when the pixel detector could not see the probe; not applicable when the model has
      no steerable parameter);
   b. FPS holds during interaction: `fps_sustained >= FPS_HOLD_RATIO x fps_idle`;
   c. state is not lost: persistence is `persists` (a restart at the same input gives a different
      frame - the output depends on history - and the continued frame is closer to its predecessor
      than the restart's frame is) or `stateless` (a restart gives the same frame: nothing to lose).
3. streaming - continuous output that fails rule 2 (typically: a control lands only at the next
   chunk, lag > 1 frame).
"""
from __future__ import annotations

from .evidence import Evidence

INTERACTIVE_MAX_LAG_FRAMES = 1.0
FPS_HOLD_RATIO = 0.8
FAST_BATCH_TTFF_SHARE = 0.8
#: A restart must differ from the continued frame by at least this (mean abs diff) to show memory.
STATE_MEMORY_MIN = 1.5
#: The continued frame must be closer to its predecessor than a restart's frame is, by a margin
#: above JPEG noise: d(N, N-1) <= STATE_CONTINUITY_MAX_RATIO x d(restart, N-1). Text-to-video
#: engines score ~0.04 here; stylize after a scene switch ~0.94 (its state is a feature EMA, so most
#: of the jump is the new input's, common to both distances).
STATE_CONTINUITY_MAX_RATIO = 0.97


def state_verdict(memory: float, continuity: float, restart_gap: float) -> tuple[str, float, float]:
    """Persistence verdict from three distances: (verdict, score in 0..1, continuity ratio).

    memory = d(continued frame N, restart's frame at the same input), continuity = d(N, N-1),
    restart_gap = d(restart's frame, N-1).
    """
    ratio = continuity / restart_gap if restart_gap > 1e-9 else (0.0 if continuity <= 1e-9 else float("inf"))
    if memory < STATE_MEMORY_MIN:
        return "stateless", 0.0, round(min(ratio, 1e6), 4)
    score = max(0.0, min(1.0, 1.0 - ratio))
    verdict = "persists" if ratio <= STATE_CONTINUITY_MAX_RATIO else "inconsistent"
    return verdict, round(score, 4), round(min(ratio, 1e6), 4)


def classify(ev: Evidence) -> tuple[str, list[str]]:
    """The tier the evidence supports, and the reasons (one line per rule that decided)."""
    reasons: list[str] = []
    if ev.complete_ms is not None and ev.ttff_ms is not None and ev.complete_ms > 0 \
            and ev.ttff_ms >= FAST_BATCH_TTFF_SHARE * ev.complete_ms:
        reasons.append(f"first output after {ev.ttff_ms:.0f} ms = {ev.ttff_ms / ev.complete_ms:.0%} of the "
                       f"time until the last frame was computed ({ev.complete_ms:.0f} ms): nothing plays before "
                       "the clip is done")
        if ev.mid_run_control is not True:
            reasons.append("no control can act while it renders")
        return "fast-batch", reasons
    if ev.complete_ms is not None and ev.ttff_ms is not None and ev.complete_ms > 0:
        reasons.append(f"first output after {ev.ttff_ms:.0f} ms, well before the last frame was computed "
                       f"({ev.complete_ms:.0f} ms): output plays while the rest still renders, not fast-batch")
    if ev.controls_sent > 0 and ev.mid_run_control is False:
        reasons.append(f"none of {ev.controls_sent} controls sent during the run showed, in pixels or headers")
        return "fast-batch", reasons

    ok = True
    if ev.control_lag_frames is None:
        reasons.append("control lag not applicable: the model has no steerable parameter")
    else:
        src = ev.control_lag_source
        if ev.control_lag_frames <= INTERACTIVE_MAX_LAG_FRAMES:
            reasons.append(f"controls show after {ev.control_lag_frames:g} frames (p50, {src}) "
                           f"<= {INTERACTIVE_MAX_LAG_FRAMES:g}")
        else:
            ok = False
            reasons.append(f"controls show only after {ev.control_lag_frames:g} frames (p50, {src}) "
                           f"> {INTERACTIVE_MAX_LAG_FRAMES:g}: they land late")
        hd = ev.control_lag_frames_header
        if src == "pixels" and hd is not None and abs(hd - ev.control_lag_frames) > INTERACTIVE_MAX_LAG_FRAMES:
            reasons.append(f"the server's headers claim a lag of {hd:g} frames; the pixels say "
                           f"{ev.control_lag_frames:g} (pixels win)")
    if ev.fps_idle and ev.fps_sustained is not None:
        ratio = ev.fps_sustained / ev.fps_idle
        if ratio >= FPS_HOLD_RATIO:
            reasons.append(f"FPS holds during interaction ({ev.fps_sustained:.1f} vs {ev.fps_idle:.1f} idle)")
        else:
            ok = False
            reasons.append(f"FPS drops during interaction ({ev.fps_sustained:.1f} vs {ev.fps_idle:.1f} idle, "
                           f"{ratio:.0%} < {FPS_HOLD_RATIO:.0%})")
    else:
        ok = False
        reasons.append("no FPS measured")
    if ev.state_persistence in ("persists", "stateless"):
        reasons.append(f"state: {ev.state_persistence}")
    else:
        ok = False
        reasons.append(f"state: {ev.state_persistence} (consecutive frames not more consistent than a restart)")
    return ("interactive" if ok else "streaming"), reasons


def apply_verdict(ev: Evidence) -> Evidence:
    ev.tier, ev.reasons = classify(ev)
    return ev
