"""H.264 MP4 encode/probe/decode with PyAV, on real files in a temp directory."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import av
import numpy as np
import pytest

from inference import video
from inference.codec import fit_to_size
from inference.video import (
    BadVideo,
    cover_size,
    decode_video_frames,
    encode_mp4,
    inspect_video,
    iter_video_frames,
    probe_mp4,
)

W, H, FPS = 64, 48, 12


def gradient_frames(n: int, width: int = W, height: int = H) -> list[np.ndarray]:
    """Frames whose mean brightness rises with the index, so decoded order can be checked."""
    frames = []
    for i in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        frame[..., 1] = min(255, 20 * i)
        frames.append(frame)
    return frames


def top_level_atoms(path: Path) -> list[str]:
    """The MP4 top-level box types in file order (size-prefixed boxes, ISO BMFF)."""
    data = path.read_bytes()
    atoms, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:  # 64-bit size follows
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        atoms.append(kind.decode("latin-1"))
        if size == 0:
            break
        pos += size
    return atoms


@pytest.fixture
def clip(tmp_path: Path) -> tuple[Path, video.EncodeResult]:
    path = tmp_path / "clip.mp4"
    return path, encode_mp4(gradient_frames(10), path, FPS, W, H, codec="libx264")


def test_encode_then_probe_matches(clip) -> None:
    path, result = clip
    assert result.frames == 10
    assert result.duration_s == pytest.approx(10 / FPS)
    assert result.bytes == path.stat().st_size > 0
    assert result.codec == "libx264"
    info = probe_mp4(path)
    assert info["frames"] == 10
    assert (info["width"], info["height"]) == (W, H)
    assert info["fps"] == pytest.approx(FPS)
    assert info["duration_s"] == pytest.approx(10 / FPS, abs=1e-3)
    assert info["codec"] == "h264"


def test_faststart_puts_moov_before_mdat(clip) -> None:
    atoms = top_level_atoms(clip[0])
    assert atoms[0] == "ftyp"
    assert atoms.index("moov") < atoms.index("mdat"), atoms


def test_frames_decode_back_in_order_and_close_to_source(clip) -> None:
    frames = decode_video_frames(clip[0], W, H, max_frames=100, max_bytes=10**6)
    source = gradient_frames(10)
    assert len(frames) == 10
    for got, want in zip(frames, source):
        assert got.shape == (H, W, 3) and got.dtype == np.uint8
        # Lossy codec: close, not equal. The mean error stays small for these smooth frames.
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 6
    greens = [f[..., 1].mean() for f in frames]
    assert greens == sorted(greens)


def test_no_temp_files_left_and_target_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"

    def frames_then_crash():
        yield from gradient_frames(3)
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError):
        encode_mp4(frames_then_crash(), path, FPS, W, H)
    assert list(tmp_path.iterdir()) == []  # neither a half file nor a .part left behind
    encode_mp4(gradient_frames(2), path, FPS, W, H)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_first_frame_callback_called_once_after_first_frame(tmp_path: Path) -> None:
    pulled: list[int] = []
    calls: list[int] = []

    def frames():
        for i, frame in enumerate(gradient_frames(5)):
            pulled.append(i)
            yield frame

    encode_mp4(frames(), tmp_path / "a.mp4", FPS, W, H, first_frame_callback=lambda: calls.append(len(pulled)))
    assert calls == [1]  # called once, when only the first frame had been produced


@pytest.mark.parametrize(("width", "height"), [(63, 48), (64, 47), (0, 48), (64, -2)])
def test_odd_or_bad_sizes_are_rejected(tmp_path: Path, width: int, height: int) -> None:
    with pytest.raises(ValueError, match="even|positive"):
        encode_mp4(gradient_frames(1), tmp_path / "x.mp4", FPS, width, height)


def test_wrong_frame_shape_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"frame 1 has shape \(48, 62, 3\)"):
        encode_mp4([gradient_frames(1)[0], np.zeros((48, 62, 3), np.uint8)], tmp_path / "x.mp4", FPS, W, H)
    with pytest.raises(ValueError, match="no frames"):
        encode_mp4([], tmp_path / "x.mp4", FPS, W, H)
    with pytest.raises(ValueError, match="fps"):
        encode_mp4(gradient_frames(1), tmp_path / "x.mp4", 0, W, H)
    assert list(tmp_path.iterdir()) == []


def test_auto_codec_falls_back_to_libx264_when_nvenc_unusable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(video, "codec_usable", lambda codec, w=256, h=256: codec == "libx264")
    result = encode_mp4(gradient_frames(2), tmp_path / "a.mp4", FPS, W, H)
    assert result.codec == "libx264"
    with pytest.raises(video.VideoEncodeError, match="h264_nvenc"):
        encode_mp4(gradient_frames(2), tmp_path / "b.mp4", FPS, W, H, codec="h264_nvenc")


def test_auto_codec_retries_on_cpu_when_nvenc_fails_on_first_frame(tmp_path: Path, monkeypatch) -> None:
    # NVENC "opens" in the probe but fails when encoding (e.g. no encoder on this GPU model):
    # simulate that by pretending a codec FFmpeg cannot open at all is the NVENC choice.
    monkeypatch.setattr(video, "NVENC_CODEC", "mpeg4_that_fails")
    monkeypatch.setattr(video, "codec_usable", lambda codec, w=256, h=256: True)
    real_encode = video._encode

    def encode(first, remaining, filename, fps, width, height, codec, cb):
        if codec == "mpeg4_that_fails":
            raise video._FirstFrameFailed("boom")
        return real_encode(first, remaining, filename, fps, width, height, codec, cb)

    monkeypatch.setattr(video, "_encode", encode)
    result = encode_mp4(gradient_frames(4), tmp_path / "a.mp4", FPS, W, H)
    assert result.codec == "libx264" and result.frames == 4  # the first frame was not lost
    assert probe_mp4(tmp_path / "a.mp4")["frames"] == 4


def test_codec_usable_probes_for_real() -> None:
    assert video.codec_usable("libx264")
    assert not video.codec_usable("no_such_codec")


# --- uploaded clips -------------------------------------------------------------------------------


def test_decode_scales_and_truncates(clip) -> None:
    frames = decode_video_frames(clip[0], 32, 24, max_frames=4, max_bytes=10**6)
    assert len(frames) == 4
    assert all(f.shape == (24, 32, 3) for f in frames)


def test_decode_from_file_object(clip) -> None:
    frames = decode_video_frames(io.BytesIO(clip[0].read_bytes()), W, H, max_frames=50, max_bytes=10**6)
    assert len(frames) == 10


def test_corrupt_upload_is_bad_video(tmp_path: Path, clip) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 20)
    with pytest.raises(BadVideo) as info:
        decode_video_frames(junk, W, H, 10, 10**6)
    assert info.value.reason == "corrupt"
    # A real clip cut in half: the index (moov, at the front) points at missing data.
    half = tmp_path / "half.mp4"
    half.write_bytes(clip[0].read_bytes()[:1500])
    with pytest.raises(BadVideo) as info:
        decode_video_frames(half, W, H, 10, 10**6)
    assert info.value.reason in {"corrupt", "empty"}


def test_empty_and_missing_uploads(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for source in (empty, io.BytesIO(b""), tmp_path / "missing.mp4"):
        with pytest.raises(BadVideo) as info:
            decode_video_frames(source, W, H, 10, 10**6)
        assert info.value.reason == "empty"


def test_oversize_upload_is_refused_before_decoding(clip) -> None:
    size = clip[0].stat().st_size
    for source in (clip[0], io.BytesIO(clip[0].read_bytes())):
        with pytest.raises(BadVideo) as info:
            decode_video_frames(source, W, H, 10, max_bytes=size - 1)
        assert info.value.reason == "too_large"
    assert len(decode_video_frames(clip[0], W, H, 10, max_bytes=size)) == 10


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        stream.layout = "mono"
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            frame.pts = i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(BadVideo) as info:
        decode_video_frames(path, W, H, 10, 10**6)
    assert info.value.reason == "no_video_stream"


def test_huge_declared_frame_size_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "c.mp4"
    encode_mp4(gradient_frames(2), path, FPS, W, H)
    monkeypatch.setattr(video, "MAX_SOURCE_PIXELS", W * H - 1)
    with pytest.raises(BadVideo) as info:
        decode_video_frames(path, W, H, 10, 10**6)
    assert info.value.reason == "too_large"


def three_bands(width: int = 128, height: int = 64) -> np.ndarray:
    """Left quarter red, middle half green, right quarter blue."""
    frame = np.zeros((height, width, 3), np.uint8)
    q = width // 4
    frame[:, :q, 0] = 255
    frame[:, q:width - q, 1] = 255
    frame[:, width - q:, 2] = 255
    return frame


def test_cover_decode_keeps_the_aspect_ratio_so_fit_to_size_centre_crops(tmp_path: Path) -> None:
    path = tmp_path / "wide.mp4"
    encode_mp4([three_bands()] * 3, path, FPS, 128, 64, codec="libx264")
    frames = [fit_to_size(f, 64, 64) for f in iter_video_frames(path, 64, 64, cover=True)]
    assert len(frames) == 3
    for frame in frames:
        assert frame.shape == (64, 64, 3)
        # The centre 64x64 of a 128x64 frame is the green half: every column is green, none red/blue.
        r, g, b = (frame[..., c].astype(int) for c in range(3))
        assert (g > 150).all() and (r < 100).all() and (b < 100).all()
    # The old behaviour (scaled straight to 64x64) squashes the red and blue bands into the frame.
    squashed = next(iter_video_frames(path, 64, 64))
    assert squashed[:, 2, 0].mean() > 150


def test_cover_size_covers_the_target_and_never_upscales() -> None:
    assert cover_size(128, 64, 64, 64) == (128, 64)
    assert cover_size(1280, 720, 64, 64) == (114, 64)
    assert cover_size(720, 1280, 64, 48) == (64, 114)
    assert cover_size(32, 32, 64, 64) == (32, 32)


def zero_packets_after_the_first(path: Path) -> Path:
    """The same file with every video packet but the first zeroed: the index (moov) is intact, so
    the packets demux and count, but only the first one decodes."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0])
                   if p.size and p.pos is not None]
    data = bytearray(path.read_bytes())
    for pos, size in packets[1:]:
        data[pos:pos + size] = bytes(size)
    bad = path.with_name("later-corrupt.mp4")
    bad.write_bytes(bytes(data))
    return bad


def test_inspect_counts_packets_and_decodes_only_the_first_frame(clip) -> None:
    path, _ = clip
    info = inspect_video(path, 10)
    assert (info.width, info.height, info.codec, info.frames) == (W, H, "h264", 10)
    assert inspect_video(io.BytesIO(path.read_bytes()), 4).frames == 4  # stops counting when it has enough
    with pytest.raises(BadVideo) as short:
        inspect_video(path, 11)
    assert short.value.reason == "too_short"
    # Corruption past the first frame is not seen here (that would need decoding every frame) ...
    bad = zero_packets_after_the_first(path)
    assert inspect_video(bad, 10).frames == 10
    # ... it is seen by the full decode, at render time.
    with pytest.raises(av.FFmpegError):
        list(iter_video_frames(bad, W, H))


def test_inspect_refuses_too_many_source_pixels_x_frames(clip) -> None:
    path, _ = clip
    assert inspect_video(path, 10, max_pixel_frames=W * H * 10).frames == 10
    with pytest.raises(BadVideo) as info:
        inspect_video(path, 10, max_pixel_frames=W * H * 10 - 1)
    assert info.value.reason == "too_large"
    assert video.MAX_SOURCE_PIXEL_FRAMES < 4096 * 4096 * 120  # the reviewer's 1.7 s upload is over it


def test_inspect_refuses_junk(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 20)
    with pytest.raises(BadVideo) as info:
        inspect_video(junk, 1)
    assert info.value.reason == "corrupt"


def x264_settings(path: Path) -> str:
    """The settings line x264 writes into the stream (its SEI user data: '... threads=N ...')."""
    data = path.read_bytes()
    start = data.find(b"x264 - core")
    assert start >= 0, "no x264 settings SEI in the file"
    return data[start:data.find(b"\x00", start)].decode("latin-1")


@pytest.mark.parametrize("size, single", [(128, True), (256, True), (512, False)])
def test_x264_runs_on_one_thread_for_small_frames_only(tmp_path: Path, size: int, single: bool) -> None:
    # Small clips: x264's frame threads cost more CPU than they save beside a CPU renderer; large ones
    # keep x264's own thread count (same CPU, half the wall time).
    path = tmp_path / "t.mp4"
    encode_mp4(gradient_frames(3, size, size), path, FPS, size, size, codec="libx264")
    threads = int(x264_settings(path).split(" threads=")[1].split()[0])
    if single or (os.cpu_count() or 1) > 1:  # on one CPU x264's own choice is one thread too
        assert (threads == 1) == single, x264_settings(path)
    assert video.codec_options("libx264", size, size).get("threads") == ("1" if single else None)
