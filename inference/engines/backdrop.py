"""`backdrop`: a webcam engine that puts the person in front of a generated, blurred or plain background.

Per frame: the pretrained MediaPipe Selfie Segmentation model (`backdrop_model`, run by LiteRT) gives
each pixel's probability of being the person, at the model's input size (256x256, or 144x256 for wide
frames). That mask is smoothed over time the way MediaPipe's SegmentationSmoothingCalculator does it:
a pixel the model is sure about takes the new value at once (no ghosting when the person moves), an
uncertain one (edges, hair) keeps `smoothing` of the previous mask (no flicker). The mask is feathered
(a Gaussian blur of `feather` output pixels), scaled up to the frame, and the person is composited over
the background chosen by `mode`:

- `generate`: the platform's own `dreamfield` generator, steered by the session's prompt (its text
  encoder: similar prompts, similar pictures) and by `palette`, `speed`, `morph`. It is rendered with
  its longer side at most 256 px and scaled up: a background is soft anyway, and that keeps 512x512 at
  ~10 ms of generator per frame instead of ~46 ms;
- `blur`: the room itself, blurred by `blur` output pixels (computed at a reduced size, then scaled up);
- `color`: a plain colour (`color`; `green` is a chroma key for streaming tools).

Every param, and the prompt, act on the very next frame; the mask and the background's time and latent
are the state carried across frames. A clip (`render_clip`) runs the segmentation, the feathering and
the composite batched over time; only the cheap mask smoothing and the generator are sequential.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .backdrop_model import ModelFile, SelfieSegmenter, shared_segmenter
from .base import Engine, StepInput, StepOutput
from .dreamfield import PROMPT_WAIT_S, DreamfieldEngine, DreamState, advance, reported_seq, shared_field
from .specs import BACKDROP, BACKDROP_COLORS

#: The generated background's longer side is rendered at most this long, then scaled up.
BACKGROUND_MAX_SIDE = 256
#: RGB in [0, 1] of the `color` choices.
COLORS: dict[str, tuple[float, float, float]] = {
    "green": (0.0, 177 / 255, 64 / 255), "blue": (0.0, 71 / 255, 187 / 255), "white": (1.0, 1.0, 1.0),
    "grey": (0.5, 0.5, 0.5), "black": (0.0, 0.0, 0.0),
}
# MediaPipe's SegmentationSmoothingCalculator: 1 - (entropy-like certainty polynomial of (p - 0.5)^2).
_UNCERTAINTY = (5.68842, -0.748699, -57.8051, 291.309, -624.717)


@dataclass
class BackdropState:
    width: int
    height: int
    dream: DreamState
    mask: torch.Tensor | None = None   # (1, h, w) smoothed person probability at the model's size
    frames: int = 0


def smooth_mask(previous: torch.Tensor | None, new: torch.Tensor, ratio: float) -> torch.Tensor:
    """MediaPipe's mask smoothing: mix in `ratio` x uncertainty of the previous mask, per pixel."""
    if previous is None or previous.shape != new.shape or ratio <= 0.0:
        return new.clone()
    c1, c2, c3, c4, c5 = _UNCERTAINTY
    t = new - 0.5
    x = t * t
    certainty = x * (c1 + x * (c2 + x * (c3 + x * (c4 + x * c5))))
    keep = (1.0 - certainty.clamp_(max=1.0)).mul_(ratio)
    return torch.lerp(new, previous, keep)


class _BlurMatrices:
    """Gaussian blur as two matrix products: out = Mh @ x @ Mw^T, with edge replication folded into M.

    Cached per (side, sigma). On one CPU thread a (16, 1, 256, 256) blur takes ~0.4 ms per frame this
    way against ~9 ms as a separable depthwise convolution (torch's single-channel conv path is slow)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, float], torch.Tensor] = {}
        self._lock = threading.Lock()

    def get(self, n: int, sigma: float) -> torch.Tensor:
        key = (n, round(sigma, 2))
        with self._lock:
            m = self._cache.get(key)
            if m is None:
                radius = max(1, math.ceil(3.0 * key[1]))
                offsets = torch.arange(-radius, radius + 1)
                g = torch.exp(-(offsets.float() ** 2) / (2.0 * key[1] ** 2))
                g /= g.sum()
                rows = torch.arange(n).repeat_interleave(len(offsets))
                cols = (torch.arange(n)[:, None] + offsets[None, :]).clamp_(0, n - 1).reshape(-1)
                m = torch.zeros(n, n).index_put_((rows, cols), g.repeat(n), accumulate=True)
                if len(self._cache) >= 64:
                    self._cache.clear()
                self._cache[key] = m
            return m


_MATRICES = _BlurMatrices()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W) with edge replication; sigma in pixels of `x`."""
    if sigma < 0.3:
        return x
    mh = _MATRICES.get(x.shape[2], sigma)
    mw = _MATRICES.get(x.shape[3], sigma)
    return torch.matmul(mh, torch.matmul(x, mw.t()))


def blur_room(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A strong blur of (N, 3, H, W) made cheap: area-downscale, a small Gaussian, bilinear upscale."""
    h, w = x.shape[2], x.shape[3]
    factor = max(1, int(sigma // 3))
    if factor > 1:
        small = F.interpolate(x, size=(max(1, h // factor), max(1, w // factor)), mode="area")
        return F.interpolate(gaussian_blur(small, sigma / factor), size=(h, w), mode="bilinear", align_corners=False)
    return gaussian_blur(x, sigma)


def background_size(width: int, height: int) -> tuple[int, int]:
    """The generator's render size for a frame: the frame's aspect, the longer side at most 256 px."""
    scale = min(1.0, BACKGROUND_MAX_SIDE / max(width, height))
    return max(2, round(width * scale)), max(2, round(height * scale))


class BackdropEngine(Engine):
    spec = BACKDROP

    def __init__(self, segmenter: SelfieSegmenter | None = None) -> None:
        self.segmenter = segmenter or shared_segmenter()
        self._dream = DreamfieldEngine()
        # One helper thread per engine (so per process): clips segment on it while rendering backgrounds.
        self._clip_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backdrop-clip-seg")
        if tuple(COLORS) != BACKDROP_COLORS:  # the spec (torch-free) and the renderer must agree
            raise RuntimeError("specs.BACKDROP_COLORS must list the colours defined in backdrop.py")

    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> BackdropState:
        bw, bh = background_size(width, height)
        return BackdropState(width=width, height=height, dream=self._dream.new_state(bw, bh, prompt, params, seed, fps))

    # -- the stages, batched over the first dimension ------------------------------------------------------
    @staticmethod
    def _to_tensor(frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1], channels-last memory (a permuted view)."""
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32).mul_(1.0 / 255.0)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 1, h, w) person probability at the model's input size."""
        model: ModelFile = SelfieSegmenter.model_for(x.shape[3], x.shape[2])
        h, w = model.input_hw
        small = F.interpolate(x, size=(h, w), mode="bilinear", antialias=x.shape[2] > h or x.shape[3] > w,
                              align_corners=False)
        probs = self.segmenter.run(small.permute(0, 2, 3, 1).contiguous().numpy(), model)
        return torch.from_numpy(probs).unsqueeze(1)

    @staticmethod
    def alpha(masks: torch.Tensor, feather: float, height: int, width: int) -> torch.Tensor:
        """Smoothed masks (N, 1, h, w) -> feathered alpha (N, 1, H, W) at the frame's size."""
        if height * width < masks.shape[2] * masks.shape[3]:
            # A frame smaller than the mask: scale down first, blur at the frame's size (4x fewer pixels at 128).
            return gaussian_blur(F.interpolate(masks, size=(height, width), mode="area"), feather).clamp(0.0, 1.0)
        soft = gaussian_blur(masks, feather * masks.shape[2] / height)  # output pixels -> mask pixels
        if soft.shape[2:] != (height, width):
            soft = F.interpolate(soft, size=(height, width), mode="bilinear", align_corners=False)
        return soft.clamp(0.0, 1.0)

    def backgrounds(self, state: BackdropState, x: torch.Tensor, prompt: str, params: dict[str, Any],
                    wait_s: float | None = PROMPT_WAIT_S) -> torch.Tensor:
        """The next len(x) backgrounds of one session (N, 3, H, W); the generator's state moves by N frames."""
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        mode = params["mode"]
        latents = [advance(state.dream, prompt, params, wait_s) for _ in range(n)]  # time flows in every mode
        if mode == "blur":
            return blur_room(x, float(params["blur"]))
        if mode == "color":
            return torch.tensor(COLORS[params["color"]], dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, h, w)
        d = state.dream
        field = shared_field()
        rgb = torch.stack([field.render_rgb(d.width, d.height, lt, 1.0, 1.0, str(params["palette"]))
                           for lt in latents]).view(n, 3, d.height, d.width)
        if (d.height, d.width) != (h, w):
            rgb = F.interpolate(rgb, size=(h, w), mode="bilinear", align_corners=False)
        return rgb

    @staticmethod
    def composite(x: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor) -> np.ndarray:
        """Person over background: (N, H, W, 3) uint8."""
        out = torch.lerp(bg, x, alpha) if bg.shape == x.shape else bg + (x - bg) * alpha
        return out.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()

    # -- the Engine interface ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        if any(it.frame is None for it in items):
            raise ValueError("backdrop is video-to-video: a step needs an input frame")
        # Sessions of one batch share a resolution: one segmentation call for all of them.
        x = self._to_tensor(np.stack([it.frame for it in items]))  # type: ignore[misc]
        probs = self.segment(x)
        h, w = x.shape[2], x.shape[3]
        outs = []
        for i, it in enumerate(items):
            st: BackdropState = it.state
            st.mask = smooth_mask(st.mask, probs[i], float(it.params["smoothing"]))
            st.frames += 1
            a = self.alpha(st.mask.unsqueeze(0), float(it.params["feather"]), h, w)
            bg = self.backgrounds(st, x[i:i + 1], it.prompt, it.params)
            outs.append(StepOutput(frames=[self.composite(x[i:i + 1], a, bg)[0]],
                                   control_seq=reported_seq(st.dream, it.prompt, it.control_seq)))
        return outs

    @torch.inference_mode()
    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        if input_frames is None or len(input_frames) != n_frames:
            raise ValueError("backdrop needs exactly n_frames input frames")
        params = {**self.spec.default_params(), **params}  # callers outside the loop may pass a partial set
        x = self._to_tensor(input_frames)
        # Batching over time: the segmentation runs on a second thread beside the batch's backgrounds (they
        # do not depend on the mask). LiteRT and torch release the GIL, so a clip uses both cores, the way
        # the live loop uses the second one for JPEG.
        probs, bg = self._segment_beside_backgrounds(state, x, prompt, params)
        masks = torch.empty_like(probs)
        ratio = float(params["smoothing"])
        for i in range(n_frames):  # sequential, but (1, 256, 256) per frame: cheap
            state.mask = smooth_mask(state.mask, probs[i], ratio)
            masks[i] = state.mask
        state.frames += n_frames
        a = self.alpha(masks, float(params["feather"]), x.shape[2], x.shape[3])
        return self.composite(x, a, bg)

    def _segment_beside_backgrounds(self, state: BackdropState, x: torch.Tensor, prompt: str,
                                    params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A clip batch's masks and backgrounds on two threads. The helper starts segmenting frames while
        this thread renders every background of the batch; then both take the frames left, one at a time,
        from a shared counter. Nobody waits on a fixed split: when a thread is preempted (by the clip's
        encoder, which runs beside us) the other takes its share, and the last wait is at most one frame."""
        n = x.shape[0]
        h, w = SelfieSegmenter.model_for(x.shape[3], x.shape[2]).input_hw
        probs = torch.empty(n, 1, h, w)
        lock = threading.Lock()
        taken = [0]

        def take() -> int | None:
            with lock:
                if taken[0] >= n:
                    return None
                taken[0] += 1
                return taken[0] - 1

        @torch.inference_mode()  # inference mode is per thread: the helper thread enters it here
        def segment_frames() -> None:
            while (i := take()) is not None:
                probs[i] = self.segment(x[i:i + 1])[0]

        helper = self._clip_pool.submit(segment_frames)
        try:
            bg = self.backgrounds(state, x, prompt, params, None)
            segment_frames()
        except BaseException:
            with lock:
                taken[0] = n  # the helper stops after its current frame
            raise
        finally:
            helper.result()
        return probs, bg
