"""H.264 MP4 files with PyAV: encode a rendered clip, probe it back, decode uploaded input clips.

This is the file side of the fast-batch clip tier (PROTOCOL.md `GET /v1/clips/{id}/video`):
- `encode_mp4` writes H.264 (yuv420p) in MP4 with the `moov` atom first ("fast start"), so a browser
  can start playing before the whole file has arrived. NVENC is used when the GPU can really open it,
  libx264 otherwise. The file appears atomically (temp file + rename): a reader never sees half a clip.
- `probe_mp4` decodes a file back and reports what it really contains (tests, audits).
- `inspect_video` checks an uploaded clip cheaply (demux to count frames, decode only the first one):
  what the web process can afford before it accepts a video-to-video job.
- `iter_video_frames` decodes an uploaded clip lazily; with `cover=True` frames keep the source's
  aspect ratio (the caller centre-crops them, `inference.codec.fit_to_size`).
- `decode_video_frames` turns an uploaded clip into RGB frames at the job size, refusing corrupt,
  empty or oversize input with `BadVideo(reason)`.

Frames are numpy arrays of shape (height, width, 3), dtype uint8, RGB.
"""

from __future__ import annotations

import io
import math
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import IO, Any

import av
import numpy as np

CPU_CODEC = "libx264"
NVENC_CODEC = "h264_nvenc"
# Encoder options per codec: x264 "veryfast" keeps a CPU encode well under the render time;
# crf 23 is x264's default quality. NVENC p4 is its balanced preset.
CODEC_OPTIONS: dict[str, dict[str, str]] = {
    CPU_CODEC: {"preset": "veryfast", "crf": "23"},
    NVENC_CODEC: {"preset": "p4"},
}
#: Up to this many pixels per frame libx264 encodes on one thread. Its frame threads cost more CPU
#: than they save on small frames (measured, veryfast crf 23, 2-core EPYC: 0.78 vs 0.42 ms CPU per
#: frame at 128x128, 2.17 vs 1.64 at 256x256; at 512x512 and above both cost the same CPU and the
#: threads halve the wall time), and a clip's encoder runs beside a renderer that already uses
#: every core of a CPU device: extra encoder threads only preempt it (docs/benchmarks.md).
X264_SINGLE_THREAD_MAX_PIXELS = 256 * 256


def codec_options(codec: str, width: int, height: int) -> dict[str, str]:
    """The encoder options for `codec` at this frame size."""
    options = dict(CODEC_OPTIONS.get(codec, {}))
    if codec == CPU_CODEC and width * height <= X264_SINGLE_THREAD_MAX_PIXELS:
        options.setdefault("threads", "1")
    return options
# Uploaded clips bigger than this many pixels per frame are refused before decoding: a tiny file can
# declare a huge frame size (a decompression bomb).
MAX_SOURCE_PIXELS = 4096 * 4096
# Source pixels x frames a clip may decode (the decode runs in a clip worker, at source size): 600
# frames of 1080p. It bounds the CPU a small, highly compressed upload can cost (4096x4096 x 120
# frames is over it).
MAX_SOURCE_PIXEL_FRAMES = 1920 * 1080 * 600


class BadVideo(Exception):
    """An uploaded video that cannot be used; `reason` is one of
    `too_large`, `empty`, `too_short`, `corrupt`, `no_video_stream`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class VideoEncodeError(Exception):
    """The requested encoder could not be opened or failed while encoding."""


@dataclass(frozen=True)
class EncodeResult:
    frames: int
    duration_s: float
    bytes: int
    codec: str


@cache
def codec_usable(codec: str, width: int = 256, height: int = 256) -> bool:
    """Whether `codec` can really be opened here at this size (cached per process).

    NVENC is compiled into the PyAV wheels, but opening it needs an NVIDIA driver and an encoder on
    the GPU (data-centre parts such as the H100/H200 have none), and it has a minimum frame size, so
    presence in `codecs_available` is not enough: we open a context and see.
    """
    if codec not in av.codecs_available:
        return False
    try:
        ctx = av.CodecContext.create(codec, "w")
        if not isinstance(ctx, av.VideoCodecContext):
            return False  # an audio or subtitle codec: no video encoder at any size
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 30)
        ctx.open()
    except (av.FFmpegError, ValueError):
        return False
    return True


def pick_codec(requested: str | None = None, width: int = 256, height: int = 256) -> str:
    """The encoder to use: `requested` as is, else NVENC when usable at this size, else libx264."""
    if requested is not None:
        return requested
    return NVENC_CODEC if codec_usable(NVENC_CODEC, width, height) else CPU_CODEC


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    # yuv420p subsamples chroma by 2 in both directions: H.264 encoders refuse odd sizes.
    if width % 2 or height % 2:
        raise ValueError(f"H.264 (yuv420p) needs even width and height, got {width}x{height}")


class _FirstFrameFailed(VideoEncodeError):
    """The encoder failed on frame 0: nothing was consumed past it, so another codec can retry."""


def encode_mp4(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike[str],
    fps: int,
    width: int,
    height: int,
    codec: str | None = None,
    first_frame_callback: Callable[[], None] | None = None,
) -> EncodeResult:
    """Encode RGB frames to an H.264 MP4 at `path` (fast start, written atomically).

    `codec=None` picks NVENC when usable, else libx264 (also when NVENC fails on the first frame);
    an explicit codec is used or fails with VideoEncodeError. `first_frame_callback` is called once,
    after the first frame was encoded. Raises ValueError for odd or non-positive sizes, a wrong
    frame shape, fps < 1 or no frames.
    """
    _check_size(width, height)
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    if codec is not None and not codec_usable(codec, width, height):
        raise VideoEncodeError(f"encoder {codec!r} is not usable on this machine at {width}x{height}")
    codec_name = pick_codec(codec, width, height)
    remaining = iter(frames)
    first = next(remaining, None)
    if first is None:
        raise ValueError("no frames to encode")
    target = Path(path)
    # The temp file lives beside the target so that os.replace is a same-filesystem atomic rename.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        try:
            count = _encode(first, remaining, tmp_name, fps, width, height, codec_name,
                            first_frame_callback)
        except _FirstFrameFailed:
            if codec is not None or codec_name == CPU_CODEC:
                raise
            codec_name = CPU_CODEC
            count = _encode(first, remaining, tmp_name, fps, width, height, codec_name,
                            first_frame_callback)
        with open(tmp_name, "rb+") as f:
            os.fsync(f.fileno())  # the rename must not publish a file whose data is still in cache
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return EncodeResult(count, count / fps, target.stat().st_size, codec_name)


#: Frames handed to the encoder thread ahead of it (backpressure beyond: the renderer waits).
ENCODE_AHEAD_FRAMES = 16


def _encode(
    first: np.ndarray,
    remaining: Iterator[np.ndarray],
    filename: str,
    fps: int,
    width: int,
    height: int,
    codec: str,
    first_frame_callback: Callable[[], None] | None,
) -> int:
    """Encode the first frame here, the rest on an encoder thread fed through a bounded queue.

    Why a thread: `remaining` is usually a renderer computing a clip batch by batch, lazily. Encoded on
    the same thread, rendering and x264 take turns; with the encoder on its own thread the next batch
    renders while the previous one is encoded (torch and PyAV/x264 release the GIL), and a batch is
    still computed only when its first frame is asked for (checkpoints and preemption keep their
    batch boundaries: no frame is rendered ahead)."""
    time_base = Fraction(1, fps)

    def check(array: np.ndarray, index: int) -> None:
        if array.shape != (height, width, 3) or array.dtype != np.uint8:
            raise ValueError(f"frame {index} has shape {array.shape} {array.dtype}, expected ({height}, {width}, 3) uint8")

    with av.open(filename, "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(codec, rate=fps)
        if not isinstance(stream, av.VideoStream):
            raise ValueError(f"{codec} is not a video codec")
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.options = dict(codec_options(codec, width, height))

        def encode_one(array: np.ndarray, index: int) -> None:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            # pts counts frames in a 1/fps time base: exact timing with no rounding drift.
            frame.pts = index
            frame.time_base = time_base
            try:
                packets = stream.encode(frame)
            except av.FFmpegError as exc:
                error = _FirstFrameFailed if index == 0 else VideoEncodeError
                raise error(f"{codec} failed on frame {index}: {exc}") from exc
            container.mux(packets)

        check(first, 0)
        encode_one(first, 0)  # here: a failing codec can still be swapped for another (NVENC -> x264)
        if first_frame_callback is not None:
            first_frame_callback()
        count = 1 + _encode_on_thread(remaining, encode_one, check)
        container.mux(stream.encode(None))  # flush delayed frames (B-frames, lookahead)
    return count


def _encode_on_thread(frames: Iterator[np.ndarray], encode_one: Callable[[np.ndarray, int], None],
                      check: Callable[[np.ndarray, int], None]) -> int:
    """Pull `frames` here and encode them (indices from 1) on one thread; returns how many; re-raises its error."""
    q: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=ENCODE_AHEAD_FRAMES)
    failure: list[BaseException] = []
    abort = threading.Event()

    def work() -> None:
        index = 1
        while (array := q.get()) is not None:
            if not failure and not abort.is_set():
                try:
                    encode_one(array, index)
                except BaseException as exc:  # handed to the caller's thread, raised there
                    failure.append(exc)
            index += 1

    t = threading.Thread(target=work, name="mp4-encoder", daemon=True)
    t.start()
    count = 0
    try:
        for array in frames:
            check(array, count + 1)
            if failure:
                break
            q.put(array)
            count += 1
    except BaseException:
        abort.set()  # the renderer failed: what is queued is not worth encoding
        raise
    finally:
        q.put(None)
        t.join()
    if failure:
        raise failure[0]
    return count


def probe_mp4(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Decode a video file and report {frames, width, height, duration_s, fps, codec}."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        else:
            duration_s = (container.duration or 0) / av.time_base
        rate = stream.average_rate or stream.guessed_rate
        return {
            "frames": frames,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "duration_s": duration_s,
            "fps": float(rate) if rate else None,
            "codec": stream.codec_context.name,
        }


def _open_source(source: str | os.PathLike[str] | IO[bytes], max_bytes: int) -> str | IO[bytes]:
    """Check the upload's size and return something av.open accepts."""
    if isinstance(source, (str, os.PathLike)):
        try:
            size = os.path.getsize(source)
        except OSError as exc:
            raise BadVideo("empty", f"cannot read {os.fspath(source)!r}: {exc.strerror}") from None
        if size == 0:
            raise BadVideo("empty", "the file is empty")
        if size > max_bytes:
            raise BadVideo("too_large", f"{size} bytes is more than the {max_bytes}-byte limit")
        return os.fspath(source)
    # A stream of unknown length: read at most one byte past the limit, so an oversize upload is
    # detected without holding all of it.
    data = source.read(max_bytes + 1)
    if not data:
        raise BadVideo("empty", "the upload is empty")
    if len(data) > max_bytes:
        raise BadVideo("too_large", f"more than the {max_bytes}-byte limit")
    return io.BytesIO(data)


def cover_size(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """The smallest size with the source's aspect ratio that covers width x height, never larger
    than the source (an upscale would add no detail): what to decode at before a centre crop."""
    scale = min(1.0, max(width / src_w, height / src_h))
    return max(1, min(src_w, math.ceil(src_w * scale))), max(1, min(src_h, math.ceil(src_h * scale)))


def _video_stream(container: Any) -> Any:
    if not container.streams.video:
        raise BadVideo("no_video_stream", "the file has no video stream")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        raise BadVideo("corrupt", "the video stream declares no frame size")
    if ctx.width * ctx.height > MAX_SOURCE_PIXELS:
        raise BadVideo("too_large", f"frame size {ctx.width}x{ctx.height} is too large")
    return stream


def iter_video_frames(
    source: str | os.PathLike[str] | IO[bytes], width: int, height: int, *, cover: bool = False
) -> Generator[np.ndarray, None, None]:
    """Decode frames lazily as RGB; PyAV errors propagate (av.FFmpegError).

    `cover=False`: each frame is scaled to exactly width x height (the aspect ratio is not kept).
    `cover=True`: each frame keeps the source's aspect ratio at the smallest size covering
    width x height (`cover_size`); the caller crops the excess (`inference.codec.fit_to_size`).
    """
    with av.open(os.fspath(source) if isinstance(source, os.PathLike) else source, "r") as container:
        stream = _video_stream(container)
        ctx = stream.codec_context
        if cover:
            width, height = cover_size(ctx.width, ctx.height, width, height)
        # Let FFmpeg use its frame threads: decoding an upload should not take one core only.
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if (frame.width, frame.height) == (width, height):
                yield frame.to_ndarray(format="rgb24")
            else:
                yield frame.to_ndarray(format="rgb24", width=width, height=height)


@dataclass(frozen=True)
class VideoInfo:
    """What `inspect_video` found: the stream's size and codec, and its frames counted (at most
    the number asked for)."""

    width: int
    height: int
    codec: str
    frames: int


def inspect_video(source: str | os.PathLike[str] | IO[bytes], frames: int,
                  max_pixel_frames: int | None = None) -> VideoInfo:
    """Check an upload cheaply: a video stream with a sane size and a decoder, at least `frames`
    packets (demuxed and counted, not decoded), and a decodable first frame.

    Only the first frame is decoded, so the cost hardly grows with the frame size or count:
    corruption later in the file is found by the clip worker when it renders. Raises BadVideo:
    `no_video_stream`, `too_large` (frame size, or width x height x `frames` over
    `max_pixel_frames`, default MAX_SOURCE_PIXEL_FRAMES), `corrupt`, `empty` (no frame),
    `too_short` (fewer than `frames` frames).
    """
    limit = MAX_SOURCE_PIXEL_FRAMES if max_pixel_frames is None else max_pixel_frames
    try:
        with av.open(os.fspath(source) if isinstance(source, os.PathLike) else source, "r") as container:
            stream = _video_stream(container)
            ctx = stream.codec_context
            width, height, codec = ctx.width, ctx.height, ctx.name
            if width * height * frames > limit:
                raise BadVideo("too_large", f"{frames} frames of {width}x{height} is more than the limit of "
                                            f"{limit} source pixels x frames")
            count, first = 0, False
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                count += 1
                if count == 1:
                    # Decode the first packet alone, then drain: a decoder that holds frames back
                    # (threads, B-frames) would otherwise want the packets after it too.
                    first = bool(ctx.decode(packet)) or bool(ctx.decode(None))
                if count >= frames:
                    break
    except av.FFmpegError as exc:
        raise BadVideo("corrupt", str(exc)) from None
    if not first:
        raise BadVideo("empty", "no decodable video frame")
    if count < frames:
        raise BadVideo("too_short", f"the video has {count} frames; {frames} are needed")
    return VideoInfo(width, height, codec, count)


def decode_video_frames(
    path_or_file: str | os.PathLike[str] | IO[bytes],
    width: int,
    height: int,
    max_frames: int,
    max_bytes: int,
) -> list[np.ndarray]:
    """Decode an uploaded clip into at most `max_frames` RGB frames of width x height.

    Frames past `max_frames` are not decoded (the job asked for that many). Raises BadVideo:
    `too_large` (over `max_bytes`, or an absurd frame size), `empty` (no bytes or no frames),
    `corrupt` (FFmpeg cannot read it), `no_video_stream`.
    """
    if width <= 0 or height <= 0 or max_frames <= 0:
        raise ValueError("width, height and max_frames must be positive")
    source = _open_source(path_or_file, max_bytes)
    frames: list[np.ndarray] = []
    decoder = iter_video_frames(source, width, height)
    try:
        for array in decoder:
            frames.append(array)
            if len(frames) >= max_frames:
                break
    except av.FFmpegError as exc:
        raise BadVideo("corrupt", str(exc)) from None
    finally:
        decoder.close()  # closes the container now, not whenever the generator is collected
    if not frames:
        raise BadVideo("empty", "no decodable video frames")
    return frames
