"""`dreamfield` and `dreamfield-chunked`: a text-to-video engine that needs no downloaded weights.

A CPPN-style coordinate network: every pixel's (x, y, r) goes through a small MLP whose first layer is
biased by a latent vector and by time, so the image flows as time and the latent move. The weights
come from a fixed seed (the same on every machine); the prompt picks a target latent through sha256,
and the session's latent eases toward it, so changing the prompt morphs the picture rather than
cutting. Params act on the very next frame: `speed` scales how far time advances, `zoom` scales the
coordinates, `detail` the spatial frequency, `palette` the colour mapping, `morph` the easing time.

Speed: the first layer is linear in the coordinates, so (x, y, r) @ W1 is computed once per resolution
and cached; a frame then costs two 20x20 matmuls over all pixels, three sin and one sigmoid, in
float32 with preallocated scratch buffers. Batching sessions on a CPU does not beat a loop (the per-frame working set already
fills the cache), so step() renders its batch one frame after another; on a GPU one would stack them.
"""
from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import Engine, StepInput, StepOutput
from .specs import DREAM_HIDDEN, DREAM_LATENT_DIM, DREAMFIELD, DREAMFIELD_CHUNKED, PALETTE_NAMES

LATENT_DIM = DREAM_LATENT_DIM
HIDDEN = DREAM_HIDDEN
WEIGHT_SEED = 0xD2EA_F1E1  # fixed: every deployment renders the same pictures for the same prompt

PALETTES: dict[str, tuple[list[list[float]], list[float]]] = {
    # (3x3 colour matrix applied to the network's RGB, offset)
    "natural": ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0, 0, 0]),
    "fire": ([[1.0, 0.5, 0.1], [0.6, 0.4, 0.0], [0.1, 0.1, 0.1]], [0.05, 0.0, 0.0]),
    "ocean": ([[0.1, 0.2, 0.3], [0.2, 0.6, 0.5], [0.2, 0.4, 0.9]], [0.0, 0.05, 0.1]),
    "mono": ([[0.3, 0.3, 0.3], [0.59, 0.59, 0.59], [0.11, 0.11, 0.11]], [0, 0, 0]),
    "neon": ([[1.2, -0.6, 1.0], [-0.5, 1.3, 0.3], [0.8, 0.2, -0.4]], [0.0, 0.0, 0.1]),
}


def prompt_latent(prompt: str, seed: int) -> torch.Tensor:
    """Deterministic target latent of a prompt: sha256(seed, prompt) seeds a normal draw."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") & ((1 << 63) - 1))
    return torch.randn(LATENT_DIM, generator=g)


@dataclass
class DreamState:
    width: int
    height: int
    seed: int
    fps: float
    prompt: str
    target: torch.Tensor
    latent: torch.Tensor
    time: float = 0.0
    frames: int = 0
    wander: torch.Tensor = field(default_factory=lambda: torch.zeros(LATENT_DIM))


class _Field:
    """The fixed network and its per-resolution coordinate cache (shared by every session).

    Activations are laid out channels x pixels: (20 x 20) @ (20 x HW) matmuls and a (3 x HW) output
    are 2-4x faster on CPU than the pixels x channels layout with its skinny 20 x 3 product. Hidden
    non-linearities are sin (SIREN-like): half the cost of tanh, and richer patterns.
    """

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(WEIGHT_SEED)
        w1 = torch.randn(3, HIDDEN, generator=g) * 2.0
        self.wz = torch.randn(LATENT_DIM + 2, HIDDEN, generator=g)
        self.w1t = w1.t().contiguous()
        self.w2t = (torch.randn(HIDDEN, HIDDEN, generator=g) * (1.5 / math.sqrt(HIDDEN))).t().contiguous()
        self.w3t = (torch.randn(HIDDEN, HIDDEN, generator=g) * (1.5 / math.sqrt(HIDDEN))).t().contiguous()
        self.w4t = (torch.randn(HIDDEN, 3, generator=g) * (2.0 / math.sqrt(HIDDEN))).t().contiguous()
        self._pw: dict[tuple[int, int], torch.Tensor] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # scratch buffers per thread: engines are shared across threads
        self._palettes = {k: (torch.tensor(m, dtype=torch.float32).t().contiguous(),
                              torch.tensor(o, dtype=torch.float32)[:, None])
                          for k, (m, o) in PALETTES.items()}

    def coords_times_w1(self, width: int, height: int) -> torch.Tensor:
        """W1^T @ (x, y, r) for every pixel: (HIDDEN, H*W), cached per resolution."""
        key = (width, height)
        with self._lock:
            pw = self._pw.get(key)
            if pw is None:
                # Keep the aspect ratio: the shorter side spans [-1, 1].
                s = min(width, height)
                xs = torch.linspace(-width / s, width / s, width)
                ys = torch.linspace(-height / s, height / s, height)
                yy, xx = torch.meshgrid(ys, xs, indexing="ij")
                coords = torch.stack([xx, yy, torch.sqrt(xx * xx + yy * yy)], 0).reshape(3, -1)
                pw = self.w1t @ coords
                if len(self._pw) >= 16:  # bounded cache: sessions use few distinct sizes
                    self._pw.clear()
                self._pw[key] = pw
            return pw

    def _scratch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        bufs = getattr(self._local, "bufs", None)
        if bufs is None or bufs[0].shape[1] != n:
            bufs = (torch.empty(HIDDEN, n), torch.empty(HIDDEN, n))
            self._local.bufs = bufs
        return bufs

    @torch.inference_mode()
    def render(self, width: int, height: int, latent_t: torch.Tensor, zoom: float, detail: float,
               palette: str) -> np.ndarray:
        rgb = self.render_rgb(width, height, latent_t, zoom, detail, palette)
        return rgb.mul_(255.0).to(torch.uint8).view(3, height, width).permute(1, 2, 0).contiguous().numpy()

    @torch.inference_mode()
    def render_rgb(self, width: int, height: int, latent_t: torch.Tensor, zoom: float, detail: float,
                   palette: str) -> torch.Tensor:
        """The frame as a (3, H*W) float tensor in [0, 1] (backdrop composites it before any uint8)."""
        pw = self.coords_times_w1(width, height)
        a, b = self._scratch(pw.shape[1])
        bias = (latent_t @ self.wz)[:, None]
        # (x, y, r) @ W1 is linear, so zoom and detail are one scalar on the cached product.
        torch.mul(pw, zoom * detail, out=a).add_(bias).sin_()
        torch.mm(self.w2t, a, out=b).sin_()
        torch.mm(self.w3t, b, out=a).sin_()
        rgb = torch.mm(self.w4t, a).sigmoid_()
        if palette != "natural":
            m, off = self._palettes[palette]
            rgb = torch.addmm(off, m, rgb).clamp_(0.0, 1.0)
        return rgb


_FIELD: _Field | None = None


def shared_field() -> _Field:
    global _FIELD
    if _FIELD is None:
        _FIELD = _Field()
    return _FIELD


def advance(state: DreamState, prompt: str, params: dict[str, Any]) -> torch.Tensor:
    """Move one session's time and latent by one frame; return the latent+time input of that frame."""
    if prompt != state.prompt:
        state.prompt = prompt
        state.target = prompt_latent(prompt, state.seed)
    dt = 1.0 / state.fps
    state.time += dt * float(params["speed"])
    ease = 1.0 - math.exp(-dt / float(params["morph"]))
    state.latent = state.latent + (state.target - state.latent) * ease
    state.frames += 1
    # A slow wander around the current latent keeps the picture alive with a fixed prompt.
    wobble = 0.35 * torch.sin(state.time * (0.5 + state.wander))
    t = state.time
    return torch.cat([state.latent + wobble, torch.tensor([math.sin(t), math.cos(0.7 * t)])])


class DreamfieldEngine(Engine):
    spec = DREAMFIELD

    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> DreamState:
        target = prompt_latent(prompt, seed)
        g = torch.Generator().manual_seed(seed & ((1 << 63) - 1))
        return DreamState(width=width, height=height, seed=seed, fps=fps, prompt=prompt,
                          target=target, latent=target.clone(), wander=torch.rand(LATENT_DIM, generator=g))

    def _frames(self, state: DreamState, n: int, prompt: str, params: dict[str, Any]) -> list[np.ndarray]:
        f = shared_field()
        out = []
        for _ in range(n):
            lt = advance(state, prompt, params)
            out.append(f.render(state.width, state.height, lt, float(params["zoom"]), float(params["detail"]),
                                str(params["palette"])))
        return out

    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        return [StepOutput(frames=self._frames(it.state, self.spec.chunk_frames, it.prompt, it.params))
                for it in items]

    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        params = {**self.spec.default_params(), **params}  # callers outside the loop may pass a partial set
        return np.stack(self._frames(state, n_frames, prompt, params))


class DreamfieldChunkedEngine(DreamfieldEngine):
    """The same field rendered 8 frames per step: controls land at the next chunk (streaming tier)."""

    spec = DREAMFIELD_CHUNKED

if tuple(PALETTES) != PALETTE_NAMES:  # the spec (torch-free) and the renderer must agree
    raise RuntimeError("specs.PALETTE_NAMES must list the palettes defined in dreamfield.py")
