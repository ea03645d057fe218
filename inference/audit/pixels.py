"""The audit's eyes: frame distances, the visual-change detector, the probe control, test inputs.

The detector trusts nothing the server says. It compares consecutive output frames (mean absolute
difference of RGB values, 0..255) and calls a frame a *change* when its difference from the previous
frame stands far above what the same session showed while nobody steered it (the idle baseline).
A probe control is chosen so that each of its values looks clearly different: an enum parameter
(dreamfield's `palette`) cycles through its choices; otherwise the first float parameter (stylize's
`strength`) steps through its range. Every cycle ends on the parameter's default so the session is
back where it started (the state-persistence check compares against a fresh session at defaults).
Pure numpy + simplejpeg: no torch, no Django.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simplejpeg

#: A change must exceed this mean absolute difference whatever the baseline (JPEG noise is ~1).
MIN_CHANGE = 3.0
#: ... and this many times the largest idle difference.
CHANGE_OVER_IDLE_MAX = 1.5
#: ... and this many times the median idle difference.
CHANGE_OVER_IDLE_MEDIAN = 4.0


def decode(jpeg: bytes) -> np.ndarray:
    """JPEG -> (H, W, 3) uint8 RGB."""
    return simplejpeg.decode_jpeg(jpeg, colorspace="RGB")


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames (0 = identical, 255 = black vs white)."""
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def change_threshold(idle_diffs: Sequence[float]) -> float:
    """The difference above which a frame counts as a visible change, from the idle baseline."""
    if not idle_diffs:
        return MIN_CHANGE
    arr = np.asarray(idle_diffs, dtype=np.float64)
    return float(max(MIN_CHANGE, CHANGE_OVER_IDLE_MAX * arr.max(), CHANGE_OVER_IDLE_MEDIAN * np.median(arr)))


@dataclass(frozen=True)
class Probe:
    """The control the audit steers with: one parameter and the values it cycles through."""

    param: str
    values: tuple[Any, ...]
    default: Any

    def value(self, i: int) -> Any:
        return self.values[i % len(self.values)]

    def as_dict(self) -> dict[str, Any]:
        return {"param": self.param, "values": list(self.values), "default": self.default}


def choose_probe(params: Sequence[dict[str, Any]], name: str | None = None) -> Probe | None:
    """Pick the probe control from a model's params schema (GET /v1/models `params` items).

    `name` forces a parameter. None when the model has no steerable parameter (e.g. identity):
    its control lag is then not applicable, and the audit says so instead of inventing a number.
    """
    by_name = {p["name"]: p for p in params}
    if name is not None:
        if name not in by_name:
            raise ValueError(f"the model has no param {name!r} (it has: {', '.join(by_name) or 'none'})")
        candidates = [by_name[name]]
    else:
        candidates = [p for p in params if p.get("type") == "enum" and len(p.get("choices") or ()) >= 2]
        candidates += [p for p in params if p.get("type") == "float" and p.get("min") is not None
                       and p.get("max") is not None and p["max"] > p["min"]]
    for p in candidates:
        default: Any = p.get("default")
        if p.get("type") == "enum":
            choices = [c for c in p["choices"] if c != default]
            return Probe(p["name"], tuple(choices) + (default,), default)
        if p.get("type") == "float":
            lo, hi = float(p["min"]), float(p["max"])
            # Distinct, far-apart values; a cyclic parameter (hue: -180 == 180) never gets both ends.
            values = [lo + (hi - lo) * f for f in (0.0, 0.5, 0.25)]
            values = [round(v, 6) for v in values if abs(v - float(default)) > 0.1 * (hi - lo)]
            return Probe(p["name"], tuple(values) + (default,), default)
    if name is not None:  # a forced parameter the probe cannot steer must not pass for "no parameter"
        raise ValueError(f"param {name!r} cannot be probed: it needs to be an enum with 2+ choices or a float "
                         f"with a range")
    return None


def pattern(width: int, height: int, t: int, variant: int = 0) -> np.ndarray:
    """A synthetic input frame for video-to-video models: smooth colour ramps drifting 1 px per frame.

    `variant` 1 is a visibly different scene (the persistence check switches to it once).
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if variant == 0:
        r = (x + t) / max(width, 1)
        g = y / max(height, 1)
        b = 0.5 + 0.5 * np.sin((x + y + t) / 9.0)
    else:  # a fixed scene: the same image whatever `t`, so a restart can be fed exactly the same frame
        r = 0.5 + 0.5 * np.cos(y / 5.0)
        g = 1.0 - x / max(width, 1)
        b = ((x // 8 + y // 8) % 2).astype(np.float32)
    img = np.stack([r % 1.0, g, b], axis=-1)
    return (np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode(frame: np.ndarray, quality: int = 90) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=quality, colorspace="RGB",
                                  colorsubsampling="420")
