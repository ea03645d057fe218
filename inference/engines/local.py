"""Engines that load weights from a local folder: where the folders are and whether one looks whole.

Torch-free (the catalog calls it on every GET /v1/models): a folder is listed when it exists and its
`model_index.json` names the components the engine needs, each with a `config.json` (or, for a
tokenizer, some file). The weights themselves are read only when the engine is first built; a folder
that fails then is remembered as broken (`mark_broken`), logged, and no longer listed.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

#: component -> accepted class names ("library.Class"); the loaders import only these.
SD_COMPONENTS = {
    "unet": {"diffusers.UNet2DConditionModel"},
    "text_encoder": {"transformers.CLIPTextModel", "transformers.CLIPTextModelWithProjection"},
    "tokenizer": {"transformers.CLIPTokenizer", "transformers.CLIPTokenizerFast"},
    "scheduler": {"diffusers.LCMScheduler", "diffusers.EulerAncestralDiscreteScheduler",
                  "diffusers.EulerDiscreteScheduler", "diffusers.DDIMScheduler", "diffusers.DDPMScheduler",
                  "diffusers.PNDMScheduler"},
}
SD_VAES = {"vae_tiny": {"diffusers.AutoencoderTiny"}, "vae": {"diffusers.AutoencoderKL", "diffusers.AutoencoderTiny"}}
CAUSAL_COMPONENTS = {
    "transformer": {"diffusers.WanTransformer3DModel"},
    "vae": {"diffusers.AutoencoderKLWan"},
    "text_encoder": {"transformers.UMT5EncoderModel", "transformers.T5EncoderModel", "transformers.CLIPTextModel"},
    "tokenizer": {"transformers.T5Tokenizer", "transformers.T5TokenizerFast", "transformers.CLIPTokenizer",
                  "transformers.AutoTokenizer", "transformers.CLIPTokenizerFast"},
}
#: engine folder -> (required components, alternatives of which one must be there)
FOLDERS: dict[str, tuple[dict[str, set[str]], dict[str, set[str]]]] = {
    "sd-stream": (SD_COMPONENTS, SD_VAES),
    "causal-video": (CAUSAL_COMPONENTS, {}),
}

_lock = threading.Lock()
_broken: dict[str, str] = {}   # folder path -> why (set when a build failed)
_logged: set[tuple[str, str]] = set()


class FolderError(Exception):
    pass


def model_dir() -> Path | None:
    root = os.environ.get("NEXTFRAME_MODEL_DIR")
    return Path(root) if root else None


def folder_of(folder_name: str) -> Path | None:
    root = model_dir()
    return None if root is None else root / folder_name


def read_index(path: Path, folder_name: str) -> dict[str, str]:
    """{component: "library.Class"} of a folder, checked against what the engine accepts; raises FolderError."""
    required, alternatives = FOLDERS[folder_name]
    try:
        raw = json.loads((path / "model_index.json").read_text())
    except FileNotFoundError:
        raise FolderError(f"{path}: model_index.json is missing") from None
    except (OSError, ValueError) as exc:
        raise FolderError(f"{path}: model_index.json is unreadable: {exc}") from None
    if not isinstance(raw, dict):
        raise FolderError(f"{path}: model_index.json is not an object")
    found: dict[str, str] = {}
    for name, value in raw.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2):
            continue
        if value[0] is None:
            continue
        found[name] = f"{value[0]}.{value[1]}"
    out: dict[str, str] = {}
    for name in required:
        if name not in found:
            raise FolderError(f"{path}: model_index.json has no {name!r}")
        out[name] = found[name]
    alt = [n for n in alternatives if n in found]
    if alternatives and not alt:
        raise FolderError(f"{path}: model_index.json has none of {sorted(alternatives)}")
    for name in alt:
        out[name] = found[name]
    for name, cls in out.items():
        accepted = required.get(name) or alternatives[name]
        if cls not in accepted:
            raise FolderError(f"{path}: {name} is {cls}, expected one of {sorted(accepted)}")
        sub = path / name
        if not sub.is_dir():
            raise FolderError(f"{path}: the folder {name}/ is missing")
        if "Tokenizer" not in cls and not (sub / ("scheduler_config.json" if name == "scheduler" else "config.json")).is_file():
            raise FolderError(f"{path}: {name}/ has no config")
    return out


def folder_status(folder_name: str) -> tuple[Path | None, str | None]:
    """(path, None) when the folder is there and looks whole; (path, why) when broken; (None, None) when absent."""
    path = folder_of(folder_name)
    if path is None or not path.is_dir():
        return None, None
    with _lock:
        why = _broken.get(str(path))
    if why is None:
        try:
            read_index(path, folder_name)
        except FolderError as exc:
            why = str(exc)
    if why is not None:
        with _lock:
            if (str(path), why) not in _logged:  # once per fault, not on every catalog request
                _logged.add((str(path), why))
                log.error("model folder %s is broken and is not served: %s", path, why)
    return path, why


def mark_broken(path: Path, why: str) -> None:
    with _lock:
        _broken[str(path)] = why
    log.error("model folder %s failed to load and is not served: %s", path, why)


def forget_broken() -> None:
    """Clear what was remembered (tests; an operator replaced a folder and restarts nothing)."""
    with _lock:
        _broken.clear()
        _logged.clear()
