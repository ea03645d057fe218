"""`causal-video` and `causal-video-chunked`: autoregressive video with a rolling KV cache.

The model is a `WanTransformer3DModel` loaded from `$NEXTFRAME_MODEL_DIR/causal-video/transformer/`
(diffusers layout, so a causal checkpoint of the Wan2.1 family converted to diffusers - Self-Forcing,
CausVid - loads as is). Its forward is re-run here block by block with the same modules and
weights (`CausalWan`), changing only the self-attention: the frames being generated attend to
themselves and to a per-block cache of keys and values of the frames already made.

- **Rolling cache with attention sinks** (`RollingKVCache`): keys are stored *before* RoPE and the
  rotary phases are applied at attention time with positions re-indexed inside the cache (sinks,
  then the window, then the new frames), so positions stay below the model's `rope_max_seq_len`
  however long the session runs, and memory is bounded: `sink + window` frames per block.
- **Generation** (Self-Forcing's few-step flow matching): a chunk of k latent frames starts as noise;
  each of `steps` steps predicts the flow v, takes x0 = x - sigma v, and re-noises to the next
  (shifted) sigma; then the clean chunk is run once more at t=0 and its keys/values are committed to
  the cache. Chunk 1 is `causal-video` (interactive), chunk 4 `causal-video-chunked` (streaming).
- **Prompt switch**: `recache=true` rebuilds the cache of the kept frames from their clean latents under
  the new prompt; `recache=false` clears it (the next frame starts a new shot).
- **Decoding**: each latent frame is decoded by the folder's AutoencoderKLWan as its own first
  frame (frames folded into the batch), which works for any temporal factor but does not use the
  VAE's 4x temporal upsampling with its causal feature cache (not wired: see docs/engines.md).

With a window covering every frame, no cache and full attention, `CausalWan.forward` equals
`WanTransformer3DModel.forward` on the same weights and inputs (tested, tolerance stated there).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..base import Engine, ModelLoadError, StepInput, StepOutput
from ..specs import CAUSAL_VIDEO, CAUSAL_VIDEO_CHUNKED
from .common import (
    Device,
    PromptCache,
    load_folder,
    memory_mark,
    memory_used,
    module_bytes,
    pick_device,
    round_up,
    session_bytes_per_pixel,
    to_uint8,
)

PROMPT_CACHE = 32
MAX_TEXT_TOKENS = 512  # Wan's text length


class RollingKVCache:
    """Per-block keys (pre-RoPE) and values of `sink` first frames plus the last `window` frames."""

    def __init__(self, n_blocks: int, tokens_per_frame: int, sink: int, window: int) -> None:
        self.n_blocks, self.tpf, self.sink, self.window = n_blocks, tokens_per_frame, sink, window
        self.k: list[torch.Tensor | None] = [None] * n_blocks
        self.v: list[torch.Tensor | None] = [None] * n_blocks
        self.frames = 0       # frames held now (<= sink + window)
        self.committed = 0    # frames ever committed

    def commit(self, kvs: Sequence[tuple[torch.Tensor, torch.Tensor]], n_frames: int) -> None:
        """Append the keys/values of `n_frames` new frames ((B, n*tpf, H, D) per block); roll the window."""
        held = self.frames + n_frames
        keep_tail = min(held - min(self.sink, held), self.window)
        for b, (k, v) in enumerate(kvs):
            old_k, old_v = self.k[b], self.v[b]
            k_all = k if old_k is None else torch.cat([old_k, k], 1)
            v_all = v if old_v is None else torch.cat([old_v, v], 1)
            sink_frames = min(self.sink, held)
            if sink_frames + keep_tail < held:
                s, t = sink_frames * self.tpf, keep_tail * self.tpf
                k_all = torch.cat([k_all[:, :s], k_all[:, k_all.shape[1] - t:]], 1)
                v_all = torch.cat([v_all[:, :s], v_all[:, v_all.shape[1] - t:]], 1)
            self.k[b], self.v[b] = k_all.contiguous(), v_all.contiguous()
        self.frames = min(held, min(self.sink, held) + keep_tail)
        self.committed += n_frames

    def get(self, b: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.k[b], self.v[b]

    def clear(self) -> None:
        self.k = [None] * self.n_blocks
        self.v = [None] * self.n_blocks
        self.frames = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v) if t is not None)


def _rope_apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on (B, S, H, D) with (1, S, 1, D) tables (interleaved pairs)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(x)


class CausalWan:
    """WanTransformer3DModel's forward, block by block, with a KV cache and optional block-causal mask."""

    def __init__(self, model: Any) -> None:
        self.m = model
        cfg = model.config
        self.patch = tuple(cfg.patch_size)
        self.heads = int(cfg.num_attention_heads)
        rope = model.rope
        self.split = [rope.t_dim, rope.h_dim, rope.w_dim]
        self.max_pos = int(rope.max_seq_len)

    def rope_tables(self, frame_pos: torch.Tensor, pph: int, ppw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (1, F*pph*ppw, 1, D) for frames at positions `frame_pos` (the model's own tables)."""
        r = self.m.rope
        out = []
        for table in (r.freqs_cos, r.freqs_sin):
            ft, fh, fw = table.split(self.split, dim=1)
            n = len(frame_pos)
            parts = [ft[frame_pos].view(n, 1, 1, -1).expand(n, pph, ppw, -1),
                     fh[:pph].view(1, pph, 1, -1).expand(n, pph, ppw, -1),
                     fw[:ppw].view(1, 1, ppw, -1).expand(n, pph, ppw, -1)]
            out.append(torch.cat(parts, -1).reshape(1, n * pph * ppw, 1, -1))
        return out[0], out[1]

    def embed_text(self, enc: torch.Tensor) -> torch.Tensor:
        return self.m.condition_embedder.text_embedder(enc)

    def time_embed(self, timestep: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ce = self.m.condition_embedder
        ts = ce.timesteps_proj(timestep)
        te_dtype = next(iter(ce.time_embedder.parameters())).dtype
        if ts.dtype != te_dtype:
            ts = ts.to(te_dtype)
        temb = ce.time_embedder(ts).type_as(like)
        proj = ce.time_proj(ce.act_fn(temb)).unflatten(1, (6, -1))
        return temb, proj

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, ctx: torch.Tensor,
                cache: RollingKVCache | None = None, block_frames: int | None = None,
                collect: bool = False) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """x (B, C, F, H, W) -> flow (B, C, F, H, W); `ctx` is the text after `embed_text`.

        With a cache the new frames follow the cached ones (positions re-indexed inside the cache)
        and see all of them; `block_frames` masks attention block-causally inside x (frames of one
        block see their block and earlier ones); None = full attention. `collect` returns each
        block's pre-RoPE keys and values of x's tokens (for `RollingKVCache.commit`).
        """
        m = self.m
        B, _, Fn, H, W = x.shape
        pt, ph, pw = self.patch
        ppf, pph, ppw = Fn // pt, H // ph, W // pw
        cached = cache.frames if cache is not None else 0
        if cached + ppf > self.max_pos:
            raise ValueError(f"{cached + ppf} frames exceed the model's rope_max_seq_len {self.max_pos}")
        dev = x.device
        kcos, ksin = self.rope_tables(torch.arange(cached + ppf, device=dev), pph, ppw)
        n_new = ppf * pph * ppw
        qcos, qsin = kcos[:, -n_new:], ksin[:, -n_new:]
        h = m.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        temb, tproj = self.time_embed(timestep, ctx)
        mask = None
        if block_frames is not None:
            blk = torch.arange(ppf, device=dev).repeat_interleave(pph * ppw) // block_frames
            mask = blk[:, None] >= blk[None, :]
            if cached:
                mask = torch.cat([torch.ones(n_new, cached * pph * ppw, dtype=torch.bool, device=dev), mask], 1)
        kvs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for b, block in enumerate(m.blocks):
            h, kv = self._block(block, h, ctx, tproj, (qcos, qsin), (kcos, ksin),
                                cache.get(b) if cache is not None else (None, None), mask)
            if collect:
                kvs.append(kv)
        shift, scale = (m.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        h = (m.norm_out(h.float()) * (1 + scale) + shift).type_as(h)
        h = m.proj_out(h)
        h = h.reshape(B, ppf, pph, ppw, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return h.flatten(6, 7).flatten(4, 5).flatten(2, 3), kvs

    def _block(self, blk: Any, h: torch.Tensor, ctx: torch.Tensor, tproj: torch.Tensor,
               qrope: tuple[torch.Tensor, torch.Tensor], krope: tuple[torch.Tensor, torch.Tensor],
               past: tuple[torch.Tensor | None, torch.Tensor | None],
               mask: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        shift, scale, gate, c_shift, c_scale, c_gate = (blk.scale_shift_table + tproj.float()).chunk(6, dim=1)
        nh = (blk.norm1(h.float()) * (1 + scale) + shift).type_as(h)
        a = blk.attn1
        q = a.norm_q(a.to_q(nh)).unflatten(2, (a.heads, -1))
        k = a.norm_k(a.to_k(nh)).unflatten(2, (a.heads, -1))
        v = a.to_v(nh).unflatten(2, (a.heads, -1))
        pk, pv = past
        k_all = k if pk is None else torch.cat([pk, k], 1)
        v_all = v if pv is None else torch.cat([pv, v], 1)
        q = _rope_apply(q, *qrope)
        kr = _rope_apply(k_all, *krope)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), kr.transpose(1, 2), v_all.transpose(1, 2),
                                             attn_mask=mask)
        out = out.transpose(1, 2).flatten(2, 3).type_as(q)
        out = a.to_out[1](a.to_out[0](out))
        h = (h.float() + out * gate).type_as(h)
        nh = blk.norm2(h.float()).type_as(h)
        h = h + blk.attn2(nh, ctx, None, None)
        nh = (blk.norm3(h.float()) * (1 + c_scale) + c_shift).type_as(h)
        h = (h.float() + blk.ffn(nh).float() * c_gate).type_as(h)
        return h, (k, v)


class CausalModel:
    """The loaded folder: transformer (as CausalWan), VAE, text encoder, prompt cache."""

    def __init__(self, path: Path, dev: Device | None = None) -> None:
        self.path = path
        self.dev = dev or pick_device(prefer_bf16=True)
        comps = load_folder(path, "causal-video", self.dev)
        self.transformer = comps["transformer"]
        self.net = CausalWan(self.transformer)
        self.vae = comps["vae"]
        self.text_encoder = comps["text_encoder"]
        self.tokenizer = comps["tokenizer"]
        tc, vc = self.transformer.config, self.vae.config
        if tc.in_channels != vc.z_dim:
            raise ModelLoadError(f"{path}: transformer takes {tc.in_channels} channels, the vae gives {vc.z_dim}")
        if tc.text_dim != self.text_encoder.config.hidden_size:
            raise ModelLoadError(f"{path}: transformer text_dim {tc.text_dim} != text encoder hidden size "
                                 f"{self.text_encoder.config.hidden_size}")
        if tc.image_dim is not None or tc.added_kv_proj_dim is not None:
            raise ModelLoadError(f"{path}: image-conditioned (I2V) transformers are not supported")
        self.vae_factor = int(vc.scale_factor_spatial or 8)
        self.multiple = self.vae_factor * int(tc.patch_size[1])
        self.shift = 5.0
        sched = path / "scheduler" / "scheduler_config.json"
        if sched.is_file():
            try:
                conf = json.loads(sched.read_text())
                self.shift = float(conf.get("shift", conf.get("flow_shift", 5.0)))
            except (OSError, ValueError, TypeError) as exc:
                raise ModelLoadError(f"{sched}: unreadable: {exc}") from None
        self.mean = torch.tensor(vc.latents_mean, device=self.dev.device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(vc.latents_std, device=self.dev.device).view(1, -1, 1, 1, 1)
        self.max_len = min(MAX_TEXT_TOKENS, int(self.tokenizer.model_max_length))
        self._prompts = PromptCache(PROMPT_CACHE)
        self.weights_bytes = module_bytes(self.transformer, self.vae, self.text_encoder)

    def encode_text(self, prompt: str) -> torch.Tensor:
        """(1, L, text_dim) as WanPipeline builds it: the real tokens' states, zero-padded to L."""
        tok = self.tokenizer(prompt, padding="max_length", max_length=self.max_len, truncation=True,
                             return_attention_mask=True, return_tensors="pt")
        ids, mask = tok.input_ids.to(self.dev.device), tok.attention_mask.to(self.dev.device)
        n = int(mask.sum())
        states = self.text_encoder(ids, attention_mask=mask).last_hidden_state.to(self.dev.dtype)
        out = torch.zeros_like(states)
        out[:, :n] = states[:, :n]
        return out

    def context(self, prompt: str) -> torch.Tensor:
        """The prompt after the transformer's text projection; cached (LRU)."""
        return self._prompts.get(prompt, lambda p: self.net.embed_text(self.encode_text(p)))

    def sigmas(self, steps: int, shift: float | None = None) -> list[float]:
        """`steps` descending sigmas in (0, 1], shifted like FlowMatchEulerDiscreteScheduler(shift)."""
        s = self.shift if shift is None else shift
        return [s * x / (1 + (s - 1) * x) for x in (1.0 - i / steps for i in range(steps))]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, C, k, h, w) -> (k, 3, H, W) in [-1, 1]: each latent frame decoded as a first frame."""
        z = (latents.float() * self.std + self.mean).to(self.vae.dtype)
        k = z.shape[2]
        z = z.permute(0, 2, 1, 3, 4).reshape(k, z.shape[1], 1, z.shape[3], z.shape[4])
        return self.vae.decode(z).sample[:, :, 0]


@dataclass
class CausalState:
    width: int
    height: int
    seed: int
    fps: float
    prompt: str
    cache: RollingKVCache | None = None
    clean: list[torch.Tensor] = field(default_factory=list)  # clean latents of the kept frames, (1,C,1,h,w)
    gen: torch.Generator = field(default_factory=torch.Generator)
    frames: int = 0
    recaches: int = 0
    resets: int = 0
    seed_used: int = -2


class CausalVideoEngine(Engine):
    spec = CAUSAL_VIDEO

    def __init__(self, path: str | Path, dev: Device | None = None) -> None:
        mark = memory_mark()
        self.model = CausalModel(Path(path), dev)
        tc = self.model.transformer.config
        el = torch.finfo(self.model.dev.dtype).bits // 8
        # KV bytes per output pixel at the default window: blocks x (k, v) x inner dim per token.
        tokens_per_pixel = 1.0 / (self.model.multiple ** 2)
        defaults = type(self).spec.default_params()
        kv_per_pixel = (tc.num_layers * 2 * tc.num_attention_heads * tc.attention_head_dim * el
                        * (defaults["window"] + defaults["sink"]) * tokens_per_pixel)
        # The window is capped by what the model's RoPE table covers (sinks + window + a chunk), so a
        # too-large window is refused as invalid_params instead of failing a step.
        spec0 = type(self).spec
        sink_max = int(spec0.param("sink").max or 0)  # type: ignore[union-attr]
        window_max = min(int(spec0.param("window").max or 0), self.model.net.max_pos - sink_max - spec0.chunk_frames)  # type: ignore[union-attr]
        if window_max < 1:
            raise ModelLoadError(f"{path}: rope_max_seq_len {self.model.net.max_pos} leaves no room for a window")
        params = [replace(p, default=self.model.shift) if p.name == "shift"
                  else replace(p, max=window_max, default=min(p.default, window_max)) if p.name == "window"
                  else p for p in spec0.params]
        self.spec = replace(type(self).spec, params=params,
                            memory_bytes_per_pixel=int(math.ceil(kv_per_pixel / type(self).spec.chunk_frames)) + 64)
        self._warm_up(self.model.multiple)
        # The pool's memory cost, measured: CUDA's peak over load + warm-up, or the weights on the CPU;
        # per session, CUDA's peak during a step (the KV-cache estimate above on the CPU).
        self.spec = replace(self.spec, base_memory_bytes=memory_used(mark, self.model.dev, self.model.weights_bytes))
        per_pixel = session_bytes_per_pixel(self.model.dev, self._warm_up, 8 * self.model.multiple,
                                            self.spec.chunk_frames)
        if per_pixel is not None:
            self.spec = replace(self.spec, memory_bytes_per_pixel=max(per_pixel, self.spec.memory_bytes_per_pixel))

    def _warm_up(self, side: int) -> None:
        s = self.new_state(side, side, "", {}, 0)
        self.step([StepInput(s, None, "", self.spec.default_params(), 0, 0)])

    def new_state(self, width: int, height: int, prompt: str, params: dict[str, Any], seed: int,
                  fps: float = 16.0) -> CausalState:
        return CausalState(width=width, height=height, seed=seed, fps=fps, prompt=prompt)

    def _latent_hw(self, st: CausalState) -> tuple[int, int]:
        m = self.model
        return round_up(st.height, m.multiple) // m.vae_factor, round_up(st.width, m.multiple) // m.vae_factor

    def _ensure(self, st: CausalState, params: dict[str, Any]) -> RollingKVCache:
        h, w = self._latent_hw(st)
        tc = self.model.transformer.config
        tpf = (h // tc.patch_size[1]) * (w // tc.patch_size[2])
        sink, window = int(params.get("sink", 1)), int(params.get("window", 8))
        seed = int(params.get("seed", -1))
        seed = st.seed if seed < 0 else seed
        if seed != st.seed_used:
            st.gen.manual_seed(seed & ((1 << 63) - 1))
            st.seed_used = seed
        if sink + window + self.spec.chunk_frames > self.model.net.max_pos:
            raise ValueError(f"sink + window + chunk exceeds the model's rope_max_seq_len {self.model.net.max_pos}")
        c = st.cache
        if c is None or (c.sink, c.window, c.tpf) != (sink, window, tpf):
            c = st.cache = RollingKVCache(len(self.model.transformer.blocks), tpf, sink, window)
            st.clean = []
        return c

    def _commit(self, st: CausalState, cache: RollingKVCache, x0: torch.Tensor, ctx: torch.Tensor) -> None:
        """Run the clean frames at t=0, append their keys/values, keep their latents for a re-cache."""
        zero = torch.zeros(1, device=x0.device)
        _, kvs = self.model.net.forward(x0, zero, ctx, cache=cache, collect=True)
        cache.commit(kvs, x0.shape[2])
        st.clean.extend(x0[:, :, i:i + 1] for i in range(x0.shape[2]))
        keep = cache.sink + cache.window
        if len(st.clean) > keep:  # the same frames the cache keeps: the sinks and the window
            st.clean = st.clean[:cache.sink] + st.clean[len(st.clean) - cache.window:]

    def _switch(self, st: CausalState, cache: RollingKVCache, prompt: str, params: dict[str, Any]) -> None:
        st.prompt = prompt
        if cache.frames == 0:
            return
        kept = st.clean
        cache.clear()
        st.clean = []
        if not params.get("recache", True):
            st.resets += 1
            return
        ctx = self.model.context(prompt)
        for x0 in kept:  # frame by frame, as they were made: causal
            self._commit(st, cache, x0, ctx)
        st.recaches += 1

    @torch.inference_mode()
    def _chunk(self, st: CausalState, prompt: str, params: dict[str, Any], k: int) -> list[np.ndarray]:
        m = self.model
        cache = self._ensure(st, params)
        if prompt != st.prompt:
            self._switch(st, cache, prompt, params)
        ctx = m.context(prompt)
        h, w = self._latent_hw(st)
        shape = (1, m.transformer.config.in_channels, k, h, w)
        x = torch.randn(shape, generator=st.gen).to(m.dev.device, m.dev.dtype)
        sig = m.sigmas(int(params.get("steps", 2)), params.get("shift"))
        x0 = x
        for i, s in enumerate(sig):
            t = torch.full((1,), s * 1000.0, device=x.device)
            v, _ = m.net.forward(x, t, ctx, cache=cache)
            x0 = x - s * v
            if i + 1 < len(sig):
                nxt = sig[i + 1]
                x = (1 - nxt) * x0 + nxt * torch.randn(shape, generator=st.gen).to(x)
        self._commit(st, cache, x0, ctx)
        frames = m.dev.to_host(to_uint8(m.decode(x0)))
        st.frames += k
        return [np.ascontiguousarray(f[:st.height, :st.width]) for f in frames]

    def step(self, items: Sequence[StepInput]) -> list[StepOutput]:
        # Sessions hold caches of different lengths: one after another (a GPU build would pad and batch).
        return [StepOutput(frames=self._chunk(it.state, it.prompt, it.params, self.spec.chunk_frames))
                for it in items]

    def render_clip(self, state: Any, n_frames: int, prompt: str, params: dict[str, Any],
                    input_frames: np.ndarray | None = None) -> np.ndarray:
        """Clips batch over time: chunks of up to CLIP_CHUNK frames per transformer call."""
        params = {**self.spec.default_params(), **params}
        out: list[np.ndarray] = []
        while len(out) < n_frames:
            out.extend(self._chunk(state, prompt, params, min(CLIP_CHUNK, n_frames - len(out))))
        return np.stack(out[:n_frames])


CLIP_CHUNK = 4


class CausalVideoChunkedEngine(CausalVideoEngine):
    spec = CAUSAL_VIDEO_CHUNKED
