"""JPEG decode/encode and the input size policy: every bad input is rejected with a reason."""
from __future__ import annotations

import numpy as np
import pytest

from inference.codec import MAX_FRAME_BYTES, MAX_INPUT_SIDE, decode_jpeg, encode_jpeg, fit_to_size
from inference.engines.base import BadFrame


def _img(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full_like(xx, 128)], -1).astype(np.uint8)


def test_round_trip_keeps_the_picture():
    a = _img(64, 96)
    data = encode_jpeg(a)
    assert data[:2] == b"\xff\xd8"
    out = decode_jpeg(data, 96, 64)
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - a).mean() < 3


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"GIF89a" + b"\0" * 100, "not a JPEG"),
    (b"\xff\xd8\xff\xe0" + b"\x13" * 200, "corrupt JPEG"),
])
def test_garbage_is_rejected_with_a_reason(data, reason):
    with pytest.raises(BadFrame, match=reason) as e:
        decode_jpeg(data, 64, 64)
    assert e.value.code == "bad_frame" and reason in e.value.reason


def test_truncated_jpeg_is_rejected():
    data = encode_jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(BadFrame, match="truncated JPEG"):
        decode_jpeg(data[: len(data) // 2], 64, 64)


def test_oversize_is_rejected_before_decoding():
    data = encode_jpeg(_img(64, 64))
    with pytest.raises(BadFrame, match="oversize"):
        decode_jpeg(data, 64, 64, max_bytes=len(data) - 1)
    assert MAX_FRAME_BYTES == 2 * 1024 * 1024


@pytest.mark.parametrize("src,dst", [((64, 512), (64, 64)), ((16, 16), (128, 128)), ((2, 2), (16, 16))])
def test_dimensions_outside_the_policy_are_rejected(src, dst):
    with pytest.raises(BadFrame, match="wrong dimensions"):
        decode_jpeg(encode_jpeg(_img(*src)), dst[1], dst[0])


def test_huge_dimensions_are_rejected_from_the_header():
    big = encode_jpeg(np.zeros((16, MAX_INPUT_SIDE + 16, 3), np.uint8))
    with pytest.raises(BadFrame, match=f"{MAX_INPUT_SIDE} px"):
        decode_jpeg(big, 4096, 4096)


def test_other_sizes_are_centre_cropped_then_resized():
    # A 4:3 input for a square session: the middle square is kept, the sides are cropped.
    src = np.zeros((96, 128, 3), np.uint8)
    src[:, 16:112] = 200           # the centre 96x96 is bright, the 16 px side bands are black
    out = decode_jpeg(encode_jpeg(src, quality=95), 48, 48)
    assert out.shape == (48, 48, 3)
    assert out[:, :3].mean() > 180 and out[:, -3:].mean() > 180   # no black band survived
    # Same aspect, larger: just scaled down (libjpeg DCT scaling then resize).
    assert decode_jpeg(encode_jpeg(_img(256, 256)), 64, 64).shape == (64, 64, 3)
    # Smaller: scaled up.
    assert decode_jpeg(encode_jpeg(_img(32, 32)), 64, 64).shape == (64, 64, 3)


def test_fit_to_size_crops_tall_inputs_vertically():
    src = np.zeros((100, 50, 3), np.uint8)
    src[25:75] = 255
    out = fit_to_size(src, 50, 50)
    assert out.shape == (50, 50, 3) and out.min() == 255


def test_encode_rejects_wrong_arrays():
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        encode_jpeg(np.zeros((8, 8, 3), np.float32))
