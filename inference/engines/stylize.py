"""`stylize`: video-to-video engine that restyles webcam frames with state carried across frames.

A small conv net (3 -> 8 -> 8 features -> 3 colours) with fixed weights turns each frame into a
stylized picture. The 8 feature maps are blended with the previous frames' (an exponential moving
average, `smoothing`), which is the carried state: it suppresses flicker and makes motion leave a
trail. Params act on the next frame: `strength` mixes stylized over input, `hue` rotates colours,
`contrast` is a gain before the output squashing.

Weights: deterministic from a fixed seed, or loaded from a local state_dict
(`StylizeEngine(weights_path=...)` or `$NEXTFRAME_MODEL_DIR/stylize/weights.pt`). Nothing is downloaded.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import Engine, ModelLoadError, StepInput, StepOutput
from .specs import STYLIZE

WEIGHT_SEED = 0x57_11_2E
FEATURES = 8


class StylizeNet(nn.Module):
    """The fixed network. `features()` is per frame; `colours()` runs on the temporally blended features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, FEATURES, 3, padding=1)
        self.conv2 = nn.Conv2d(FEATURES, FEATURES, 3, padding=1)
        self.to_rgb = nn.Conv2d(FEATURES, 3, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))

    def colours(self, f: torch.Tensor) -> torch.Tensor:
        return self.to_rgb(f)


def _deterministic_net() -> StylizeNet:
    net = StylizeNet()
    g = torch.Generator().manual_seed(WEIGHT_SEED)
    with torch.no_grad():
        for p in net.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else FEATURES
            p.copy_(torch.randn(p.shape, generator=g) * (1.6 / math.sqrt(fan_in)))
    return net


def default_weights_path() -> Path | None:
    root = os.environ.get("NEXTFRAME_MODEL_DIR")
    return Path(root) / "stylize" / "weights.pt" if root else None


def load_net(weights_path: str | os.PathLike[str] | None) -> tuple[StylizeNet, str]:
    """The net with weights from `weights_path` if given, else the default path if it exists, else seeded init.

    Returns (net, source). A file that exists but does not fit raises ModelLoadError naming the fault.
    """
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    if path is None or (weights_path is None and not path.exists()):
        return _deterministic_net(), "deterministic-init"
    if not path.exists():
        raise ModelLoadError(f"stylize weights not found at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable files
        raise ModelLoadError(f"cannot read stylize weights at {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"stylize weights at {path} are not a state_dict (got {type(state).__name__})")
    net = StylizeNet()
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: expected {expected[k]}, got {got[k]}" for k in expected if k in got and got[k] != expected[k]]
    if missing or unexpected or wrong:
        raise ModelLoadError(f"stylize weights at {path} do not fit the network: missing={missing} "
                             f"unexpected={unexpected} wrong_shapes={wrong}")
    net.load_state_dict(state)
    return net, str(path)


def _hue_matrix(degrees: float) -> torch.Tensor:
    # Rotation about the grey axis (1,1,1)/sqrt(3): Rodrigues' formula.
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    k = 1.0 / 3.0
    r = math.sqrt(k)
    return torch.tensor([
        [c + (1 - c) * k, (1 - c) * k - r * s, (1 - c) * k + r * s],
        [(1 - c) * k + r * s, c + (1 - c) * k, (1 - c) * k - r * s],
        [(1 - c) * k - r * s, (1 - c) * k + r * s, c + (1 - c) * k],
    ], dtype=torch.float32)


@dataclass
class StylizeState:
    width: int
    height: int
    features: torch.Tensor | None = None  # (1, 8, H, W) EMA of past features
    frames: int = 0


class StylizeEngine(Engine):
    spec = STYLIZE

    def __init__(self, weights_path: str | os.PathLike[str] | None = None) -> None:
        net, self.weights_source = load_net(weights_path)
        # torch's stubs lack Module.to(memory_format=...), which exists at runtime.
        self.net = net.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> StylizeState:
        return StylizeState(width=width, height=height)

    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        # (N, H, W, 3) uint8 -> (N, 3, H, W) float in channels-last memory: a permuted view, no copy.
        t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        return t.to(torch.float32).mul_(1.0 / 255.0)

    def _finish(self, x: torch.Tensor, feats: torch.Tensor, params: dict[str, Any]) -> np.ndarray:
        y = torch.sigmoid(self.net.colours(feats) * float(params["contrast"]))
        if params["hue"]:
            y = torch.einsum("nchw,dc->ndhw", y, _hue_matrix(float(params["hue"])))
        out = torch.lerp(x, y, float(params["strength"])).clamp_(0.0, 1.0)
        return out.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    def _blend(self, state: StylizeState, f: torch.Tensor, smoothing: float) -> torch.Tensor:
        if state.features is None or state.features.shape != f.shape:
            state.features = f.clone()  # not a view: it would keep the whole batch's features alive
        else:
            state.features = torch.lerp(f, state.features, smoothing)
        state.frames += 1
        return state.features

    @torch.inference_mode()
    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        if any(it.frame is None for it in items):
            raise ValueError("stylize is video-to-video: a step needs an input frame")
        # Sessions of one batch share a resolution, so the feature convs run as one batched call.
        x = self._to_tensor(np.stack([it.frame for it in items]))  # type: ignore[misc]
        feats = self.net.features(x)
        outs = []
        for i, it in enumerate(items):
            blended = self._blend(it.state, feats[i:i + 1], float(it.params["smoothing"]))
            outs.append(StepOutput(frames=[self._finish(x[i:i + 1], blended, it.params)[0]]))
        return outs

    @torch.inference_mode()
    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        if input_frames is None or len(input_frames) != n_frames:
            raise ValueError("stylize needs exactly n_frames input frames")
        params = {**self.spec.default_params(), **params}  # callers outside the loop may pass a partial set
        x = self._to_tensor(input_frames)
        feats = self.net.features(x)  # batched over time; only the cheap EMA below is sequential
        blended = torch.empty_like(feats)
        for i in range(n_frames):
            blended[i:i + 1] = self._blend(state, feats[i:i + 1], float(params["smoothing"]))
        return self._finish(x, blended, params)
