"""Perceptual hashes of frames and the lists they are checked against (pure numpy, no Django).

`phash` is imagehash's pHash, bit for bit (tested against `imagehash.phash`): greyscale, 32x32
Lanczos resize, 2-D DCT, the 8x8 lowest frequencies compared with their median -> 64 bits. It runs
through PIL and scipy as imagehash does; the list check is one vectorised XOR + popcount over every
listed hash. Measured: resize, JPEG re-encode (q20-90), brightness and noise move a hash by 0-2 bits
of 64, different images by 26-40 (DEPENDENCIES.md), so the default threshold is 8.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

HEX = re.compile(r"^[0-9a-f]{16}$")


def phash(pixels: np.ndarray) -> int:
    """The 64-bit pHash of an HxWx3 (or HxW) uint8 frame."""
    import scipy.fftpack
    from PIL import Image

    image = Image.fromarray(pixels).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    grey = np.asarray(image, dtype=np.float64)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(grey, axis=0), axis=1)
    low = dct[:8, :8]
    bits = (low > np.median(low)).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def to_hex(value: int) -> str:
    return f"{value:016x}"


def from_hex(text: str) -> int:
    text = text.strip().lower()
    if not HEX.match(text):
        raise ValueError("a phash is 16 hexadecimal digits (64 bits, as imagehash prints it)")
    return int(text, 16)


@dataclass(frozen=True)
class HashMatch:
    category: str
    distance: int
    listed: int


class HashList:
    """Listed hashes with their categories; `match` finds the nearest within a Hamming distance."""

    def __init__(self, entries: list[tuple[int, str]] | None = None) -> None:
        entries = entries or []
        self.categories = [c for _, c in entries]
        self.hashes = np.array([h for h, _ in entries], dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.categories)

    def match(self, value: int, max_distance: int) -> HashMatch | None:
        if not self.categories:
            return None
        distances = np.bitwise_count(self.hashes ^ np.uint64(value))
        i = int(np.argmin(distances))
        d = int(distances[i])
        return HashMatch(self.categories[i], d, int(self.hashes[i])) if d <= max_distance else None
