"""`dreamfield` and `dreamfield-chunked`: a text-to-video engine steered by a real sentence encoder.

A CPPN-style coordinate network: every pixel's (x, y, r) goes through a small MLP whose first layer is
biased by a latent vector and by time, so the image flows as time and the latent move. The network's
weights come from a fixed seed (the same on every machine). The prompt is understood by a pretrained
sentence encoder (all-MiniLM-L6-v2, `text_encoder.py`): its 384-d embedding goes through a fixed, seeded
linear projection to the latent, so prompts that mean similar things land on nearby latents and give
similar pictures. The session's latent eases toward the prompt's, so changing the prompt morphs the
picture rather than cutting. Params act on the very next frame: `speed` scales how far time advances,
`zoom` scales the coordinates, `detail` the spatial frequency, `palette` the colour mapping, `morph`
the easing time.

A prompt's embedding is cached (one encode per new prompt, ~3-16 ms). A session starts with its
prompt encoded on the caller's thread; a prompt changed mid-session is encoded on a background thread
and the step waits for it at most `PROMPT_WAIT_S`: when it is not ready, the frame keeps the previous
prompt and reports the previous control seq (`StepOutput.control_seq`), so the header, control.applied
and the measured control lag say exactly when the new prompt landed (docs/engines.md).

Speed: the first layer is linear in the coordinates, so (x, y, r) @ W1 is computed once per resolution
and cached; a frame then costs two 20x20 matmuls over all pixels, three sin and one sigmoid, in
float32 with preallocated scratch buffers. Batching sessions on a CPU does not beat a loop (the per-frame working set already
fills the cache), so step() renders its batch one frame after another; on a GPU one would stack them.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import Engine, StepInput, StepOutput
from .specs import DREAM_HIDDEN, DREAM_LATENT_DIM, DREAMFIELD, DREAMFIELD_CHUNKED, PALETTE_NAMES
from .text_encoder import EMBEDDING_DIM, prompt_embeddings

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


PROJECTION_SEED = 0x7E47_E1
#: Scale of the projected latent. The field is a chain of sines, so a latent distance beyond ~1 gives an
#: unrelated picture; at this scale unrelated prompts (cosine ~0.1-0.3) land ~0.7 apart and paraphrases
#: (cosine ~0.8) ~0.3, so the picture's distance follows the meaning's instead of saturating.
LATENT_SCALE = 0.12
#: Amplitude of the slow wander around the prompt's latent (it keeps a fixed prompt alive).
WANDER = 0.35 * LATENT_SCALE
#: How long a step waits for a new prompt's embedding before it renders with the previous one.
PROMPT_WAIT_S = 0.02
_PROJECTION: torch.Tensor | None = None


def _projection() -> torch.Tensor:
    """The fixed (384, LATENT_DIM) map from a unit sentence embedding to a latent (components ~ N(0, LATENT_SCALE^2))."""
    global _PROJECTION
    if _PROJECTION is None:
        g = torch.Generator().manual_seed(PROJECTION_SEED)
        _PROJECTION = torch.randn(EMBEDDING_DIM, LATENT_DIM, generator=g) * LATENT_SCALE
    return _PROJECTION


def embedding_latent(embedding: np.ndarray) -> torch.Tensor:
    """A prompt's latent from its (384,) unit embedding: close embeddings give close latents."""
    return torch.from_numpy(np.asarray(embedding, np.float32)) @ _projection()


def prompt_latent(prompt: str, seed: int = 0) -> torch.Tensor:
    """The target latent of a prompt (encoded now if not cached). The same on every machine and for every
    seed: the seed varies how the picture wanders, not what the prompt means."""
    return embedding_latent(prompt_embeddings().get(prompt))


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
    #: The newest control seq whose prompt is in `target` (reported while a newer prompt is encoding).
    applied_seq: int = 0


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


def take_prompt(state: DreamState, prompt: str, wait_s: float | None) -> bool:
    """Aim the session at `prompt`'s latent if its embedding is ready within `wait_s` (None: wait for it).

    Returns whether `state.target` now is the prompt's; if not, the previous prompt stays and the
    encode goes on in the background (a later frame asks again)."""
    if prompt == state.prompt:
        return True
    emb = prompt_embeddings()
    v = emb.get(prompt) if wait_s is None else emb.lookup(prompt, wait_s)
    if v is None:
        return False
    state.prompt = prompt
    state.target = embedding_latent(v)
    return True


def reported_seq(state: DreamState, prompt: str, control_seq: int) -> int | None:
    """What a step's output says it reflects: the given seq once `prompt` is applied, else the last one that was."""
    if state.prompt == prompt:
        state.applied_seq = control_seq
        return None
    return state.applied_seq


def advance(state: DreamState, prompt: str, params: dict[str, Any], wait_s: float | None = PROMPT_WAIT_S) -> torch.Tensor:
    """Move one session's time and latent by one frame; return the latent+time input of that frame."""
    take_prompt(state, prompt, wait_s)
    dt = 1.0 / state.fps
    state.time += dt * float(params["speed"])
    ease = 1.0 - math.exp(-dt / float(params["morph"]))
    state.latent = state.latent + (state.target - state.latent) * ease
    state.frames += 1
    # A slow wander around the current latent keeps the picture alive with a fixed prompt.
    wobble = WANDER * torch.sin(state.time * (0.5 + state.wander))
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

    def _frames(self, state: DreamState, n: int, prompt: str, params: dict[str, Any],
                wait_s: float | None) -> list[np.ndarray]:
        f = shared_field()
        out = []
        for _ in range(n):
            lt = advance(state, prompt, params, wait_s)
            out.append(f.render(state.width, state.height, lt, float(params["zoom"]), float(params["detail"]),
                                str(params["palette"])))
        return out

    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        outs = []
        for it in items:
            frames = self._frames(it.state, self.spec.chunk_frames, it.prompt, it.params, PROMPT_WAIT_S)
            outs.append(StepOutput(frames=frames, control_seq=reported_seq(it.state, it.prompt, it.control_seq)))
        return outs

    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        params = {**self.spec.default_params(), **params}  # callers outside the loop may pass a partial set
        # No frame deadline in a clip: its prompt is there from the first frame.
        return np.stack(self._frames(state, n_frames, prompt, params, None))


class DreamfieldChunkedEngine(DreamfieldEngine):
    """The same field rendered 8 frames per step: controls land at the next chunk (streaming tier)."""

    spec = DREAMFIELD_CHUNKED

if tuple(PALETTES) != PALETTE_NAMES:  # the spec (torch-free) and the renderer must agree
    raise RuntimeError("specs.PALETTE_NAMES must list the palettes defined in dreamfield.py")
