"""JPEG in and out of the frame loop (libjpeg-turbo through `simplejpeg`), and the input size policy.

Size policy for an input whose dimensions differ from the session's (W x H):
- Accepted when each side is within 1/4x .. 4x of the session's and the image is at most
  MAX_INPUT_SIDE on either side. Larger images are first decoded at a reduced DCT scale (1/2, 1/4,
  1/8 - nearly free in libjpeg) to the smallest scale still covering the target.
- The image is centre-cropped to the session's aspect ratio ("cover", never letterboxed, never
  stretched), then resized with antialiased bilinear filtering to exactly W x H.
- Anything outside those bounds is rejected with a BadFrame saying so: a client sending 4K into a
  256x256 session is misconfigured, and silently shrinking it would hide a 60x bandwidth waste.
Every rejection carries a reason, and the session goes on.
This module imports no torch at module level: the web side reads MAX_FRAME_BYTES from it.
"""
from __future__ import annotations

import numpy as np
import simplejpeg

from .engines.base import BadFrame

#: Default cap on one input frame's bytes; the WebSocket layer sizes its message limit from it.
MAX_FRAME_BYTES = 2 * 1024 * 1024
#: Largest side accepted at all (decompression-bomb guard, before any pixel is decoded).
MAX_INPUT_SIDE = 4096
#: Inputs may differ from the session size by at most this factor per side.
MAX_SCALE_FACTOR = 4.0

_SOI = b"\xff\xd8"


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    import torch  # lazy: only mismatched inputs pay for it
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].to(torch.float32)
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).contiguous().numpy()


def fit_to_size(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop `arr` (H, W, 3) to the target aspect ratio, then resize to exactly width x height."""
    h, w = arr.shape[:2]
    if (w, h) == (width, height):
        return arr
    # Crop the excess of the longer relative side (compare w/h with width/height without floats).
    if w * height > h * width:
        new_w = max(1, round(h * width / height))
        x0 = (w - new_w) // 2
        arr = arr[:, x0:x0 + new_w]
    elif w * height < h * width:
        new_h = max(1, round(w * height / width))
        y0 = (h - new_h) // 2
        arr = arr[y0:y0 + new_h]
    if arr.shape[:2] == (height, width):
        return np.ascontiguousarray(arr)
    return _resize(arr, width, height)


def decode_jpeg(data: bytes, width: int, height: int, max_bytes: int = MAX_FRAME_BYTES) -> np.ndarray:
    """Decode one input frame to (height, width, 3) uint8 RGB, applying the size policy.

    Raises BadFrame with a reason for empty, oversize, non-JPEG, corrupt or truncated data and for
    dimensions outside the policy.
    """
    if not data:
        raise BadFrame("empty frame: no JPEG bytes after the header")
    if len(data) > max_bytes:
        raise BadFrame(f"oversize frame: {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not bytes(data[:2]) == _SOI:
        raise BadFrame("not a JPEG: missing the SOI marker (FF D8)")
    try:
        src_h, src_w, _, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, RuntimeError) as exc:
        raise BadFrame(f"corrupt JPEG header: {exc}") from None
    if src_w > MAX_INPUT_SIDE or src_h > MAX_INPUT_SIDE:
        raise BadFrame(f"wrong dimensions: {src_w}x{src_h} exceeds the {MAX_INPUT_SIDE} px limit per side")
    if not (width / MAX_SCALE_FACTOR <= src_w <= width * MAX_SCALE_FACTOR
            and height / MAX_SCALE_FACTOR <= src_h <= height * MAX_SCALE_FACTOR):
        raise BadFrame(f"wrong dimensions: {src_w}x{src_h} is not within {MAX_SCALE_FACTOR:g}x of the "
                       f"session's {width}x{height}")
    try:
        # min_height/min_width let libjpeg decode big inputs at 1/2..1/8 scale, still covering the target.
        arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=height, min_width=width, strict=True)
    except (ValueError, RuntimeError) as exc:
        msg = str(exc)
        kind = "truncated JPEG" if "premature" in msg.lower() or "truncat" in msg.lower() else "corrupt JPEG"
        raise BadFrame(f"{kind}: {msg}") from None
    return fit_to_size(arr, width, height)


def encode_jpeg(arr: np.ndarray, quality: int = 85) -> bytes:
    """Encode (H, W, 3) uint8 RGB to JPEG 4:2:0 (what browsers decode fastest)."""
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"encode_jpeg needs (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    return simplejpeg.encode_jpeg(np.ascontiguousarray(arr), quality=quality, colorspace="RGB",
                                  colorsubsampling="420", fastdct=True)
