"""Loading a diffusers-layout folder offline, the device/dtype choice, and measured costs.

Every component is read with `from_pretrained(folder/<name>, local_files_only=True)` (nothing is
fetched from a hub: HF_HUB_OFFLINE is set before the libraries are imported). Only the classes the
engine accepts (`local.FOLDERS`) are imported. An optional `nextframe-sha256.json` in the folder
({"relative/path": "hex digest"}) pins the weight files: a mismatch is a load error.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..base import ModelLoadError
from ..local import FolderError, read_index

HASH_FILE = "nextframe-sha256.json"


@dataclass(frozen=True)
class Device:
    """Where an engine runs: CUDA (fp16/bf16, pinned host buffers) when present, else the CPU in fp32."""

    device: torch.device
    dtype: torch.dtype

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def to_host(self, images: torch.Tensor) -> np.ndarray:
        """(N, H, W, 3) uint8 on the device -> numpy; through a pinned buffer on CUDA (async copy)."""
        if not self.cuda:
            return images.numpy()
        host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(images, non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return host.numpy()


def pick_device(prefer_bf16: bool = False) -> Device:
    want = os.environ.get("NEXTFRAME_ENGINE_DEVICE", "")
    if want != "cpu" and torch.cuda.is_available():
        dtype = torch.bfloat16 if prefer_bf16 and torch.cuda.is_bf16_supported() else torch.float16
        return Device(torch.device(want or "cuda"), dtype)
    return Device(torch.device("cpu"), torch.float32)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def check_hashes(path: Path) -> int:
    """Verify the pinned file hashes if the folder pins any; returns how many were checked."""
    manifest = path / HASH_FILE
    if not manifest.is_file():
        return 0
    try:
        pins = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{manifest}: unreadable: {exc}") from None
    if not isinstance(pins, dict):
        raise ModelLoadError(f"{manifest}: not an object of path -> sha256")
    for rel, digest in pins.items():
        f = (path / rel).resolve()
        if path.resolve() not in f.parents:
            raise ModelLoadError(f"{manifest}: {rel!r} is outside the folder")
        if not f.is_file():
            raise ModelLoadError(f"{path}: pinned file {rel} is missing")
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != str(digest).lower():
            raise ModelLoadError(f"{path}: {rel} has sha256 {h.hexdigest()}, pinned {digest}")
    return len(pins)


def write_hashes(path: Path) -> None:
    """Pin every weight file of a folder (used by the tiny builders; an operator can run it too)."""
    pins = {}
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            pins[str(f.relative_to(path))] = hashlib.sha256(f.read_bytes()).hexdigest()
    (path / HASH_FILE).write_text(json.dumps(pins, indent=1, sort_keys=True))


def load_folder(path: Path, folder_name: str, dev: Device, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every component named by model_index.json (only accepted classes), loaded offline onto `dev`."""
    _offline()
    try:
        index = read_index(path, folder_name)
    except FolderError as exc:
        raise ModelLoadError(str(exc)) from None
    check_hashes(path)
    out: dict[str, Any] = {}
    for name, qualified in index.items():
        if name in skip:
            continue
        library, cls_name = qualified.split(".", 1)
        try:
            cls = getattr(importlib.import_module(library), cls_name)
            if name == "scheduler":
                out[name] = cls.from_pretrained(str(path), subfolder="scheduler", local_files_only=True)
            elif "Tokenizer" in cls_name:
                out[name] = cls.from_pretrained(str(path / name), local_files_only=True)
            else:
                # torch_dtype at load keeps the modules a model pins to fp32 (Wan's norms, RoPE) in fp32.
                model = cls.from_pretrained(str(path / name), local_files_only=True, torch_dtype=dev.dtype)
                out[name] = model.to(dev.device).eval().requires_grad_(False)
        except ModelLoadError:
            raise
        except Exception as exc:  # the libraries raise OSError, ValueError, KeyError, RuntimeError ...
            raise ModelLoadError(f"{path}: cannot load {name} ({qualified}): {type(exc).__name__}: {exc}") from exc
    return out


def module_bytes(*modules: Any) -> int:
    """Bytes of the parameters and buffers of torch modules (what the weights take on the device)."""
    total = 0
    for m in modules:
        if isinstance(m, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in m.parameters())
            total += sum(t.numel() * t.element_size() for t in m.buffers())
    return total


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, rounding like the diffusers image processor."""
    x = (images.float() / 2 + 0.5).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def maybe_compile(module: torch.nn.Module, dev: Device) -> Any:
    """torch.compile on CUDA when NEXTFRAME_COMPILE=1 (warm-up at load pays the compile, not a session)."""
    if dev.cuda and os.environ.get("NEXTFRAME_COMPILE") == "1":
        return torch.compile(module, mode="max-autotune-no-cudagraphs")
    return module


class PromptCache:
    """An LRU of prompt -> encoded tensor, shared by the sessions of an engine (thread-safe).

    `get(prompt, encode)` encodes a prompt the first time only; a new prompt therefore costs one
    encoder pass in the step that first sees it, and none after."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, prompt: str, encode: Callable[[str], torch.Tensor]) -> torch.Tensor:
        with self._lock:
            hit = self._items.get(prompt)
            if hit is not None:
                self._items.move_to_end(prompt)
                return hit
        with torch.inference_mode():
            value = encode(prompt)
        with self._lock:
            self._items[prompt] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def memory_mark() -> int:
    """CUDA bytes allocated now (0 without CUDA); the peak counter restarts here."""
    if not torch.cuda.is_available():
        return 0
    torch.cuda.reset_peak_memory_stats()
    return int(torch.cuda.memory_allocated())


def memory_used(mark: int, dev: Device, weights_bytes: int) -> int:
    """What loading and warming up took: CUDA's peak above `mark`, or on the CPU the weights + 16 MiB."""
    if dev.cuda:
        return int(torch.cuda.max_memory_allocated()) - mark
    return weights_bytes + (16 << 20)


def session_bytes_per_pixel(dev: Device, run: Callable[[int], None], side: int, chunk: int = 1) -> int | None:
    """On CUDA: the allocator's peak during one session's step at side x side (what a session adds:
    its state and the step's activations), per pixel and per chunk frame; None on the CPU."""
    if not dev.cuda:
        return None
    torch.cuda.synchronize()
    mark = memory_mark()
    run(side)
    torch.cuda.synchronize()
    return int(math.ceil((torch.cuda.max_memory_allocated() - mark) / (side * side * chunk)))


def round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m
