"""`sd-stream` and `sd-stream-t2v`: StreamDiffusion-style image diffusion on diffusers components.

The folder ($NEXTFRAME_MODEL_DIR/sd-stream/, standard diffusers pipeline layout) gives a
UNet2DConditionModel, AutoencoderTiny (`vae_tiny/`, preferred) or AutoencoderKL (`vae/`), a CLIP
text encoder and tokenizer, and a scheduler. Two denoising paths:

- **stream batch** (`stream_batch=true`, the live default): StreamDiffusion's pipelining. A session
  keeps the latents of its last `steps-1` frames, each parked at a later timestep of the schedule;
  one UNet call denoises the new frame's first step together with the older frames' later steps
  (and every session of the batch at once, with per-row timesteps). The output is the frame that
  finished its last step, so the picture lags `steps-1` frames; controls reach the very next
  output. The maths is the scheduler's in DDPM form: x0 from the epsilon (or v) prediction, the
  scheduler's boundary scalings when it has them (LCM), then a re-noise to the next timestep with
  the session's stored noise (StreamDiffusion's "stock noise": temporally stable pictures).
- **sequential** (`stream_batch=false`): each frame runs the whole schedule with `scheduler.step`,
  exactly as diffusers' img2img / txt2img pipelines do, with a generator re-seeded every frame.

With `steps=1` the two paths compute the same thing, and both equal diffusers' own pipeline on the
same folder, seed and settings (tests/test: inference/tests/test_diffusion_engines.py, tolerance
stated there). Residual CFG (`cfg=self`) uses the stored noise as the unconditional prediction (no
second pass); `cfg=full` runs the unconditional pass on the empty prompt. The stochastic
similarity filter skips an input whose cosine similarity to the previous input exceeds the
threshold, with probability rising from 0 at the threshold to 1 at identity; the previous output
is sent again and the skip is counted (`state.skipped`). Prompt embeddings are cached (LRU, by
prompt): a new prompt is encoded once, in the step that first sees it, so it shows in that frame.
"""
from __future__ import annotations

import copy
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..base import BadFrame, Engine, ModelLoadError, StepInput, StepOutput
from ..specs import SD_STREAM, SD_STREAM_T2V
from .common import (
    Device,
    PromptCache,
    load_folder,
    maybe_compile,
    memory_mark,
    memory_used,
    module_bytes,
    pick_device,
    round_up,
    session_bytes_per_pixel,
    to_uint8,
)

PROMPT_CACHE = 64


class SDModel:
    """The loaded components, the prompt-embedding cache and the schedules (shared by every session)."""

    def __init__(self, path: Path, dev: Device | None = None) -> None:
        self.path = path
        self.dev = dev or pick_device()
        comps = load_folder(path, "sd-stream", self.dev)
        self.unet = comps["unet"]
        self.vae = comps.get("vae_tiny") or comps["vae"]
        self.text_encoder = comps["text_encoder"]
        self.tokenizer = comps["tokenizer"]
        self.scheduler = comps["scheduler"]
        self.kl = hasattr(self.vae, "quant_conv") or type(self.vae).__name__ == "AutoencoderKL"
        cfg = self.vae.config
        blocks = cfg.encoder_block_out_channels if "encoder_block_out_channels" in cfg else cfg.block_out_channels
        self.vae_factor = 2 ** (len(blocks) - 1)
        self.scaling = float(cfg.scaling_factor)
        if self.unet.config.in_channels != cfg.latent_channels:
            raise ModelLoadError(f"{path}: unet takes {self.unet.config.in_channels} channels, the vae gives "
                                 f"{cfg.latent_channels}")
        if self.unet.config.cross_attention_dim != self.text_encoder.config.hidden_size:
            raise ModelLoadError(f"{path}: unet cross_attention_dim {self.unet.config.cross_attention_dim} != text "
                                 f"encoder hidden_size {self.text_encoder.config.hidden_size}")
        if self.unet.config.time_cond_proj_dim is not None:
            raise ModelLoadError(f"{path}: guidance-embedded UNets (time_cond_proj_dim) are not supported")
        self.prediction = self.scheduler.config.get("prediction_type", "epsilon")
        self.alphas = self.scheduler.alphas_cumprod.to(self.dev.device, torch.float32)
        self.unet_call = maybe_compile(self.unet, self.dev)
        self._prompts = PromptCache(PROMPT_CACHE)
        self._schedules: dict[tuple[int, float], list[int]] = {}
        self._lock = threading.Lock()
        self.weights_bytes = module_bytes(self.unet, self.vae, self.text_encoder)

    # -- prompts ------------------------------------------------------------------------------------
    def embed(self, prompt: str) -> torch.Tensor:
        """(1, L, D) text embedding of a prompt, as the diffusers pipelines compute it; cached."""
        return self._prompts.get(prompt, self._encode)

    def _encode(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.dev.device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = (ids != self.tokenizer.pad_token_id).long()
        return self.text_encoder(ids, attention_mask=mask)[0].to(self.dev.dtype)

    def cached_prompts(self) -> int:
        return len(self._prompts)

    # -- schedules ----------------------------------------------------------------------------------
    def schedule(self, steps: int, strength: float) -> tuple[list[int], int]:
        """(timesteps run, schedule length): the img2img pipeline's slice of a ceil(steps/strength) schedule."""
        key = (steps, round(strength, 6))
        with self._lock:
            hit = self._schedules.get(key)
        if hit is None:
            n = max(steps, math.ceil(steps / strength - 1e-9))
            s = copy.deepcopy(self.scheduler)
            s.set_timesteps(n)
            init = min(int(n * strength), n)
            hit = [int(round(float(t))) for t in s.timesteps[(n - init) * s.order:]]
            hit.append(n)
            with self._lock:
                self._schedules[key] = hit
        return hit[:-1], hit[-1]

    def boundary(self, t: int) -> tuple[float, float]:
        f = getattr(self.scheduler, "get_scalings_for_boundary_condition_discrete", None)
        if f is None:
            return 0.0, 1.0
        c_skip, c_out = f(t)
        return float(c_skip), float(c_out)

    # -- VAE ----------------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> scaled latents; KL: mean + std * eps, as latent_dist.sample draws."""
        out = self.vae.encode(images)
        if hasattr(out, "latent_dist"):
            d = out.latent_dist
            lat = d.mean if eps is None else d.mean + d.std * eps
        else:
            lat = out.latents
        return lat * self.scaling

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.scaling).sample

    def predict(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.unet_call(x, t, encoder_hidden_states=emb, return_dict=False)[0]


@dataclass
class SDState:
    width: int
    height: int
    seed: int
    fps: float
    frames: int = 0
    skipped: int = 0
    time: float = 0.0
    # stream batch: latents of frames in flight (one per later stage), for this schedule key
    key: tuple[Any, ...] | None = None
    inflight: list[torch.Tensor] = field(default_factory=list)
    noise: torch.Tensor | None = None  # (steps, C, h, w) stored noise per stage (+ KL encode eps, t2v drift)
    extra: torch.Tensor | None = None
    prev_input: torch.Tensor | None = None
    prev_output: np.ndarray | None = None
    filter_rng: torch.Generator = field(default_factory=torch.Generator)


class SDStreamEngine(Engine):
    """Video-to-video: each webcam frame is re-noised to `strength` and denoised under the prompt."""

    spec = SD_STREAM
    text_to_video = False

    def __init__(self, path: str | Path, dev: Device | None = None) -> None:
        mark = memory_mark()
        self.model = SDModel(Path(path), dev)
        self._warm_up(64)
        # The pool's memory cost, measured: CUDA's peak over load + warm-up, or the weights on the CPU;
        # per session, CUDA's peak during a step at 256x256 (the static per-pixel guess on the CPU).
        self.spec = replace(type(self).spec, base_memory_bytes=memory_used(mark, self.model.dev,
                                                                           self.model.weights_bytes))
        per_pixel = session_bytes_per_pixel(self.model.dev, self._warm_up, 256)
        if per_pixel is not None:
            self.spec = replace(self.spec, memory_bytes_per_pixel=per_pixel)

    def _warm_up(self, side: int) -> None:
        """One step of a fresh session at load, so the first session's first frame is not the allocator's
        (or compile's)."""
        s = self.new_state(side, side, "", {}, 0)
        frame = None if self.text_to_video else np.zeros((side, side, 3), np.uint8)
        self.step([StepInput(s, frame, "", self.spec.default_params(), 0, 0)])

    # -- state ----------------------------------------------------------------------------------------
    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 30.0) -> SDState:
        st = SDState(width=width, height=height, seed=seed, fps=fps)
        st.filter_rng.manual_seed((seed ^ 0x5D5D) & ((1 << 63) - 1))
        return st

    def _seed(self, st: SDState, params: dict[str, Any]) -> int:
        s = int(params.get("seed", -1))
        return st.seed if s < 0 else s

    def _latent_hw(self, st: SDState) -> tuple[int, int, int, int]:
        f = self.model.vae_factor
        H, W = round_up(st.height, f), round_up(st.width, f)
        return H, W, H // f, W // f

    def _noise(self, st: SDState, params: dict[str, Any], steps: int, key: tuple[Any, ...]) -> torch.Tensor:
        """The session's stored noise: drawn from generator(seed) in the pipeline's order of draws."""
        if st.key != key or st.noise is None:
            _, _, h, w = self._latent_hw(st)
            from diffusers.utils.torch_utils import randn_tensor

            g = torch.Generator().manual_seed(self._seed(st, params))
            shape = (1, self.model.unet.config.in_channels, h, w)
            draws = []
            if self.model.kl and not self.text_to_video:
                draws.append(randn_tensor(shape, generator=g, dtype=torch.float32))  # latent_dist.sample
            draws.extend(randn_tensor(shape, generator=g, dtype=torch.float32) for _ in range(steps + 1))
            if self.text_to_video:
                draws.append(randn_tensor(shape, generator=g, dtype=torch.float32))  # the drift direction
            st.noise = torch.cat(draws).to(self.model.dev.device, self.model.dev.dtype)
            st.key, st.inflight = key, []
        return st.noise

    # -- inputs ---------------------------------------------------------------------------------------
    def _image(self, st: SDState, frame: np.ndarray) -> torch.Tensor:
        if frame.shape != (st.height, st.width, 3) or frame.dtype != np.uint8:
            raise BadFrame(f"expected a {st.height}x{st.width} RGB frame, got {frame.shape} {frame.dtype}")
        H, W, _, _ = self._latent_hw(st)
        x = torch.from_numpy(frame).to(self.model.dev.device).permute(2, 0, 1)[None].float() / 255.0
        if (st.height, st.width) != (H, W):
            x = F.pad(x, (0, W - st.width, 0, H - st.height), mode="replicate")
        return (x * 2.0 - 1.0).to(self.model.dev.dtype)

    def _similar(self, st: SDState, frame: np.ndarray | None, params: dict[str, Any]) -> bool:
        """The stochastic similarity filter: True when this input is skipped."""
        if not params.get("similarity_filter") or frame is None:
            return False
        if frame.shape != (st.height, st.width, 3):
            raise BadFrame(f"expected a {st.height}x{st.width} RGB frame, got {frame.shape}")
        cur = torch.from_numpy(np.ascontiguousarray(frame[::4, ::4])).float().flatten()
        prev, st.prev_input = st.prev_input, cur
        if prev is None or st.prev_output is None:
            return False
        sim = float(F.cosine_similarity(cur, prev, dim=0))
        thr = float(params["similarity_threshold"])
        if sim <= thr or thr >= 1.0:
            return False
        p_skip = (sim - thr) / (1.0 - thr)
        if float(torch.rand((), generator=st.filter_rng)) < p_skip:
            st.prev_input = prev  # compare the next frame with the last one processed
            return True
        return False

    def _start_latents(self, st: SDState, it: StepInput, noise: torch.Tensor, t0: int) -> torch.Tensor:
        """The new frame at the first timestep: img2img re-noise of the encoded input, or the (drifting) noise."""
        m = self.model
        if self.text_to_video:
            drift = float(it.params.get("motion", 0.0)) * st.time
            return math.cos(drift) * noise[0:1] + math.sin(drift) * noise[-1:]
        base = 1 if m.kl else 0
        lat = m.encode(self._image(st, _frame_of(it)), noise[0:1] if m.kl else None)
        a = m.alphas[t0]
        return a.sqrt() * lat + (1 - a).sqrt() * noise[base:base + 1]

    # -- the step --------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        outs: list[StepOutput | None] = [None] * len(items)
        stream: list[int] = []
        for i, it in enumerate(items):
            st: SDState = it.state
            if not self.text_to_video and it.frame is None:
                raise BadFrame("sd-stream needs an input frame")
            if self._similar(st, it.frame, it.params):
                st.skipped += 1
                assert st.prev_output is not None
                outs[i] = StepOutput(frames=[st.prev_output], skipped_inputs=1)
                continue
            if it.params.get("stream_batch", True):
                stream.append(i)
            else:
                outs[i] = StepOutput(frames=[self._sequential(st, it)])
        if stream:
            for i, frame in zip(stream, self._stream([items[i] for i in stream])):
                outs[i] = StepOutput(frames=[frame])
        for it in items:
            it.state.frames += 1
            it.state.time += 1.0 / it.state.fps
        return [o for o in outs if o is not None]

    def _steps_strength(self, params: dict[str, Any]) -> tuple[int, float]:
        return int(params.get("steps", 1)), 1.0 if self.text_to_video else float(params.get("strength", 0.5))

    def _stream(self, items: Sequence[StepInput]) -> list[np.ndarray]:
        """One UNet call over every stage of every session (per-row timesteps)."""
        m = self.model
        rows_x, rows_t, rows_emb, rows_stock, owner = [], [], [], [], []
        cfg_rows: list[tuple[int, float, str]] = []
        plans = []
        for k, it in enumerate(items):
            st: SDState = it.state
            steps, strength = self._steps_strength(it.params)
            ts, _ = m.schedule(steps, strength)
            key = (tuple(ts), self._seed(st, it.params), st.width, st.height)
            noise = self._noise(st, it.params, len(ts), key)
            base = 1 if (m.kl and not self.text_to_video) else 0
            stage_x = [self._start_latents(st, it, noise, ts[0])] + st.inflight
            emb = m.embed(it.prompt)
            mode, g = str(it.params.get("cfg", "none")), float(it.params.get("guidance", 1.0))
            plans.append((st, ts, len(stage_x), base))
            for j, x in enumerate(stage_x):
                rows_x.append(x)
                rows_t.append(ts[j])
                rows_emb.append(emb)
                rows_stock.append(noise[base + j:base + j + 1])
                owner.append((k, j))
                cfg_rows.append((len(rows_x) - 1, g, mode))
        n = len(rows_x)
        x = torch.cat(rows_x)
        t = torch.tensor(rows_t, device=m.dev.device)
        emb = torch.cat(rows_emb)
        full = [r for r, g, mode in cfg_rows if mode == "full" and g != 1.0]
        if full:
            neg = m.embed("").expand(len(full), -1, -1)
            pred_all = m.predict(torch.cat([x, x[full]]), torch.cat([t, t[full]]), torch.cat([emb, neg]))
            pred, uncond = pred_all[:n].clone(), pred_all[n:]
            for q, r in enumerate(full):
                g = cfg_rows[r][1]
                pred[r] = uncond[q] + g * (pred[r] - uncond[q])
        else:
            pred = m.predict(x, t, emb)
        for r, g, mode in cfg_rows:
            if mode == "self" and g != 1.0:
                pred[r] = rows_stock[r][0] + g * (pred[r] - rows_stock[r][0])
        a = m.alphas[t.long()].view(-1, 1, 1, 1).to(x.dtype)
        if m.prediction == "v_prediction":
            x0 = a.sqrt() * x - (1 - a).sqrt() * pred
        else:
            x0 = (x - (1 - a).sqrt() * pred) / a.sqrt()
        scal = torch.tensor([m.boundary(tt) for tt in rows_t], device=x.device, dtype=x.dtype)
        den = scal[:, 1].view(-1, 1, 1, 1) * x0 + scal[:, 0].view(-1, 1, 1, 1) * x
        finished: list[torch.Tensor] = []
        r = 0
        for st, ts, n_stage, base in plans:
            d = den[r:r + n_stage]
            stored = st.noise
            assert stored is not None  # set by _noise above
            nxt = []
            for j in range(min(n_stage, len(ts) - 1)):
                an = m.alphas[ts[j + 1]]
                nxt.append(an.sqrt() * d[j:j + 1] + (1 - an).sqrt() * stored[base + j + 1:base + j + 2])
            # The oldest frame finished its last step; until the pipe is full the newest frame's
            # first-step estimate is shown (a 1-step preview).
            finished.append(d[n_stage - 1:n_stage] if n_stage == len(ts) else d[0:1])
            st.inflight = nxt
            r += n_stage
        images = to_uint8(m.decode(torch.cat(finished)))
        frames = self.model.dev.to_host(images)
        out = []
        for (st, *_), img in zip(plans, frames):
            img = np.ascontiguousarray(img[:st.height, :st.width])
            st.prev_output = img
            out.append(img)
        return out

    def _sequential(self, st: SDState, it: StepInput) -> np.ndarray:
        """The whole schedule for one frame with scheduler.step, as the diffusers pipelines run it."""
        from diffusers.utils.torch_utils import randn_tensor

        m = self.model
        steps, strength = self._steps_strength(it.params)
        n_sched = m.schedule(steps, strength)[1]
        sched = copy.deepcopy(m.scheduler)
        sched.set_timesteps(n_sched, device=m.dev.device)
        init = min(int(n_sched * strength), n_sched)
        t_start = n_sched - init
        timesteps = sched.timesteps[t_start * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(t_start * sched.order)
        g = torch.Generator().manual_seed(self._seed(st, it.params))
        _, _, h, w = self._latent_hw(st)
        shape = (1, m.unet.config.in_channels, h, w)
        if self.text_to_video:
            lat = randn_tensor(shape, generator=g, dtype=torch.float32).to(m.dev.device, m.dev.dtype)
            drift = float(it.params.get("motion", 0.0)) * st.time
            if drift:
                other = randn_tensor(shape, generator=torch.Generator().manual_seed(self._seed(st, it.params) + 1))
                lat = math.cos(drift) * lat + math.sin(drift) * other.to(lat)
            noise = lat
            lat = lat * sched.init_noise_sigma
        else:
            image = self._image(st, _frame_of(it))
            out = m.vae.encode(image)
            if hasattr(out, "latent_dist"):
                eps = randn_tensor(out.latent_dist.mean.shape, generator=g, dtype=torch.float32).to(image)
                z = (out.latent_dist.mean + out.latent_dist.std * eps) * m.scaling
            else:
                z = out.latents * m.scaling
            noise = randn_tensor(shape, generator=g, dtype=torch.float32).to(z)
            lat = sched.add_noise(z, noise, timesteps[:1])
        emb = m.embed(it.prompt)
        mode, gs = str(it.params.get("cfg", "none")), float(it.params.get("guidance", 1.0))
        for t in timesteps:
            inp = sched.scale_model_input(lat, t)
            if mode == "full" and gs > 1.0:
                both = m.predict(torch.cat([inp, inp]), t, torch.cat([m.embed(""), emb]))
                u, c = both.chunk(2)
                pred = u + gs * (c - u)
            else:
                pred = m.predict(inp, t, emb)
                if mode == "self" and gs != 1.0:
                    pred = noise + gs * (pred - noise)
            lat = sched.step(pred, t, lat, generator=g, return_dict=False)[0]
        img = m.dev.to_host(to_uint8(m.decode(lat)))[0]
        img = np.ascontiguousarray(img[:st.height, :st.width])
        st.prev_output = img
        return img

    # -- clips ---------------------------------------------------------------------------------------
    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        """Clips batch over time: up to `CLIP_BATCH` frames go through the UNet as one stream-batch call."""
        params = {**self.spec.default_params(), **params}
        if not self.text_to_video and (input_frames is None or len(input_frames) != n_frames):
            raise BadFrame("a video-to-video clip needs one input frame per output frame")
        out: list[np.ndarray] = []
        i = 0
        while i < n_frames:
            k = min(CLIP_BATCH, n_frames - i)
            # Independent copies of the state advance in lock-step within one call: frames of a clip are
            # rows of one batch (the stored noise is the session's, so each equals its live frame at steps=1).
            items = []
            for j in range(k):
                frame = None if input_frames is None else np.ascontiguousarray(input_frames[i + j])
                items.append(StepInput(state if j == 0 else _shadow(state, j), frame, prompt, params, 0, i + j))
            if int(params.get("steps", 1)) == 1 and params.get("stream_batch", True):
                filt = {**params, "similarity_filter": False}
                items = [replace(x, params=filt) for x in items]
                frames = [o.frames[0] for o in self.step(items)]
                state.frames += k - 1
                state.time += (k - 1) / state.fps
            else:
                frames = [self.step([StepInput(state, x.frame, prompt, params, 0, x.frame_index)])[0].frames[0]
                          for x in items]
            out.extend(frames)
            i += k
        return np.stack(out)


CLIP_BATCH = 8


def _frame_of(it: StepInput) -> np.ndarray:
    if it.frame is None:
        raise BadFrame("sd-stream needs an input frame")
    return it.frame


def _shadow(st: SDState, j: int) -> SDState:
    """A copy of a session's state `j` frames ahead (shares the stored noise; its time moved on)."""
    s = replace(st, inflight=[], prev_input=None, prev_output=None)
    s.time = st.time + j / st.fps
    return s


class SDStreamT2VEngine(SDStreamEngine):
    """Text-to-video: txt2img every frame from the session's noise, drifting with `motion`."""

    spec = SD_STREAM_T2V
    text_to_video = True
