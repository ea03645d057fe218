"""Clip business logic: create (validate, apply limits, store the upload, enqueue), find, cancel,
delete, describe. Views and the CLI call these; nothing here imports torch.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone

from moderation import clips as moderation_clips
from nextframe import usage
from nextframe.clips import files
from nextframe.clips.models import TIER, Clip, ClipEvent, ClipLimits
from nextframe.tenancy.models import Organization

S = Clip.Status
log = logging.getLogger(__name__)


class ClipError(Exception):
    """A refused request: `code` and `status` go into the REST envelope."""

    def __init__(self, message: str, code: str = "invalid_params", status: int = 400,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class ClipRequest:
    model: str
    prompt: str = ""
    width: int | None = None
    height: int | None = None
    fps: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    seed: int = 0
    params: dict[str, Any] | None = None


def limits_for(org: Organization) -> ClipLimits:
    """The organisation's limits (an unsaved row with the defaults when none was set)."""
    try:
        return org.clip_limits
    except ClipLimits.DoesNotExist:
        return ClipLimits(organization=org)


def _count(n: int) -> str:
    """An integer for a message: absurd ones (10**400 frames) are summarised, not printed."""
    text = str(n)
    return text if len(text) <= 12 else f"a {len(text)}-digit number of"


def _resolve(req: ClipRequest, limits: ClipLimits):
    from inference.engines import EngineError, get_spec  # torch-free

    try:
        spec = get_spec(req.model)
    except EngineError as exc:
        raise ClipError(exc.message, "unknown_model") from None
    try:
        width, height, fps = spec.resolve_size(req.width, req.height, req.fps)
        prompt = spec.validate_prompt(req.prompt or "")
        params = spec.resolve_params(req.params)
    except EngineError as exc:
        raise ClipError(exc.message, "invalid_params") from None
    if not float(fps).is_integer():
        raise ClipError(f"fps must be a whole number for a clip (MP4 time base 1/fps), got {fps}")
    fps = int(fps)
    if req.frames is not None and req.duration_s is not None:
        raise ClipError("give either frames or duration_s, not both")
    if req.frames is not None:
        frames = req.frames
    elif req.duration_s is not None:
        duration_s = float(req.duration_s)
        if not math.isfinite(duration_s) or duration_s <= 0:
            raise ClipError("duration_s must be a positive, finite number of seconds")
        exact = duration_s * fps
        # Checked before rounding: 1e308 s is finite, 1e308 x fps is not (round(inf) raises).
        if not math.isfinite(exact) or exact >= 10**12:
            raise ClipError(f"clip exceeds your organisation's limits: {duration_s:g} s "
                            f"(limit {limits.max_duration_s} s)", "clip_too_large", 413)
        frames = max(1, round(exact))
    else:
        raise ClipError("give the clip length: frames or duration_s")
    if frames < 1:
        raise ClipError("frames must be at least 1")
    too_large = []
    if frames > limits.max_frames:
        too_large.append(f"{_count(frames)} frames (limit {limits.max_frames})")
    # Compared in frames, not seconds: frames / fps overflows a float for an absurd integer count.
    if frames > limits.max_duration_s * fps + 1e-9:
        seconds = f"{frames / fps:.3f} s" if frames < 10**12 else "an absurd length"
        too_large.append(f"{seconds} (limit {limits.max_duration_s} s)")
    if width > limits.max_width or height > limits.max_height:
        too_large.append(f"{width}x{height} (limit {limits.max_width}x{limits.max_height})")
    if too_large:
        raise ClipError("clip exceeds your organisation's limits: " + ", ".join(too_large), "clip_too_large", 413)
    return spec, width, height, fps, frames, prompt, params


def _check_upload(upload: IO[bytes], frames: int) -> None:
    """Refuse a corrupt, empty, too-short or too-large input now (400), not minutes later in the
    worker. Cheap on purpose (this runs in the web process, beside live sessions): the packets are
    demuxed and counted, only the first frame is decoded (`inference.video.inspect_video`). A file
    corrupt further on fails its job at render time with `bad_video`."""
    import av

    from inference.video import BadVideo, inspect_video

    upload.seek(0)
    try:
        inspect_video(upload, frames)
    except BadVideo as exc:
        raise ClipError(f"the uploaded video cannot be used: {exc}", "bad_video") from None
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise ClipError(f"the uploaded video is corrupt: {exc}", "bad_video") from None
    finally:
        upload.seek(0)


def estimate(spec, width: int, height: int, fps: int, frames: int, api_key=None) -> tuple[Decimal, Decimal]:
    """A clip's up-front estimate: (GPU-seconds, cost) = reserved share x its duration x
    BILLING_CLIP_ESTIMATE_FACTOR, at the model's current price (docs/billing.md)."""
    from billing.arithmetic import share_seconds

    share = max(spec.cost(width, height, fps).compute_share, float(settings.CLIP_MIN_SHARE))
    gpu = share_seconds(share, frames / fps * float(settings.BILLING_CLIP_ESTIMATE_FACTOR))
    return gpu, usage.cost_of(gpu, usage.price_of(spec.id, api_key))


def _check_quota(org: Organization, gpu_estimate: Decimal, cost_estimate: Decimal, api_key=None) -> None:
    """Refuse a clip, before any work, when its estimate does not fit the organisation's monthly
    GPU-second or spend limit (live sessions and clips count alike), or the account is suspended.
    Test-mode keys are priced 0 and never count against the quota."""
    if usage.account_suspended(org):
        raise ClipError("the organisation's account is suspended (an invoice is unpaid)", "account_suspended", 402)
    if api_key is not None and api_key.mode == "test":
        return
    if not usage.quota_fits(org, gpu_estimate, cost_estimate):
        raise ClipError(f"the clip (estimated {gpu_estimate} GPU-seconds, {cost_estimate} {usage.CURRENCY}) "
                        "does not fit the organisation's remaining monthly quota", "quota_exceeded", 402)


def create_clip(org: Organization, req: ClipRequest, upload: IO[bytes] | None = None, api_key=None) -> Clip:
    """Validate, check limits and quota, store the upload and enqueue; raises ClipError."""
    limits = limits_for(org)
    spec, width, height, fps, frames, prompt, params = _resolve(req, limits)
    if spec.kind == "video-to-video":
        if upload is None:
            raise ClipError(f"model {spec.id!r} is video-to-video: upload the input as the `video` part",
                            "missing_video")
    elif upload is not None:
        raise ClipError(f"model {spec.id!r} is text-to-video: it takes no input video")
    refusal = moderation_clips.check_prompt(org.pk, prompt)
    if refusal is not None:  # a blocked prompt never reaches a model
        raise ClipError(refusal, "moderation")
    _check_quota(org, *estimate(spec, width, height, fps, frames, api_key), api_key=api_key)
    if upload is not None:
        _check_upload(upload, frames)
    with transaction.atomic():
        # Lock the organisation row so two concurrent requests cannot both take the last slot.
        Organization.objects.select_for_update().filter(pk=org.pk).first()
        active = Clip.objects.filter(organization=org, status__in=Clip.ACTIVE).count()
        if active >= limits.max_active_jobs:
            raise ClipError(f"{active} clips are queued or running (limit {limits.max_active_jobs}); "
                            "wait for one to finish", "concurrency_limit", 429, retry_after_s=5)
        clip = Clip.objects.create(
            organization=org, model=spec.id, prompt=prompt, width=width, height=height, fps=fps,
            frames=frames, seed=req.seed, params=params, created_at=timezone.now(), api_key=api_key,
        )
        ClipEvent.objects.create(clip=clip, from_status="", to_status=S.QUEUED, at=clip.created_at)
        if upload is not None:
            clip.input_name = files.save(f"{files.clip_prefix(org.pk, clip.pk)}/input.mp4", upload)
            clip.save(update_fields=["input_name"])
        clip_id = clip.pk
        transaction.on_commit(lambda: _enqueue(clip_id))
    return clip


def _enqueue(clip_id) -> None:
    """Send the render message; a broker that is down loses nothing: the job stays `queued` with no
    `enqueued_at`, and the workers' recovery sweep sends it when the broker is back."""
    from nextframe.clips import tasks

    try:
        tasks.enqueue_render(clip_id)
    except Exception:  # noqa: BLE001 - any broker error
        log.exception("could not enqueue clip %s; the recovery sweep will", clip_id)


def visible_clips(org: Organization | int):
    """Every clip queryset the API uses starts here: this organisation's clips, deleted ones excluded."""
    return Clip.visible(org)


def get_clip(org: Organization, clip_id) -> Clip | None:
    """The organisation's clip, or None (another organisation's clip, or a deleted one, does not exist
    for it)."""
    return visible_clips(org).filter(pk=clip_id).first()


def cancel_clip(clip: Clip) -> bool:
    """Cancel a queued or running clip (the running attempt stops at its next batch); removes its
    files. Returns False when the clip had already finished."""
    with transaction.atomic():
        won = Clip.objects.filter(pk=clip.pk, status__in=Clip.ACTIVE).update(
            status=S.CANCELLED, claim="", finished_at=timezone.now())
        if won:
            ClipEvent.objects.create(clip=clip, from_status=clip.status, to_status=S.CANCELLED,
                                     attempt=clip.attempts, at=timezone.now())
    clip.refresh_from_db()
    if won:
        _remove_files(clip)
    return bool(won)


def delete_clip(clip: Clip) -> None:
    """Delete a finished clip: its files are removed and the API no longer shows it, but the row
    stays (soft delete) because its GPU-seconds are this month's usage, quota and billing."""
    _remove_files(clip)
    Clip.objects.filter(pk=clip.pk, deleted_at__isnull=True).update(deleted_at=timezone.now())
    clip.refresh_from_db()


def _remove_files(clip: Clip) -> None:
    for name in (clip.input_name, clip.video_name):
        files.delete(name)
    Clip.objects.filter(pk=clip.pk).update(input_name="", video_name="")


VIDEO_TOKEN_SALT = "nextframe.clips.video"


def video_token_ttl_s() -> int:
    return int(getattr(settings, "CLIP_VIDEO_URL_TTL_S", 3600))


def video_token(clip: Clip) -> str:
    """A signed, expiring token for one clip's video (for `<video src>` and links handed to browsers,
    which cannot send the API key). Bound to the clip and its organisation; HMAC with SECRET_KEY."""
    return signing.dumps({"c": str(clip.pk), "o": clip.organization_id}, salt=VIDEO_TOKEN_SALT)


def clip_for_video_token(token: str) -> Clip | None:
    """The clip a valid, unexpired token names, or None (bad signature, expired, or clip gone)."""
    try:
        data = signing.loads(token, salt=VIDEO_TOKEN_SALT, max_age=video_token_ttl_s())
    except signing.BadSignature:  # includes SignatureExpired
        return None
    return visible_clips(data.get("o")).filter(pk=data.get("c")).first()


def _seconds(a, b) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 3)


def cost_of(clip: Clip) -> str:
    """What the clip costs: the sum of its customer-paid ledger segments (never recomputed)."""
    return str(Decimal(clip.cost).quantize(Decimal("0.000001")))


def describe(clip: Clip) -> dict[str, Any]:
    """The representation every endpoint returns (PROTOCOL.md: status, progress, timings, usage)."""
    # One interval for run_s, fps_throughput and gpu_seconds: the final attempt's pool lease.
    run_s = round(clip.render_s, 3) if clip.status == S.SUCCEEDED and clip.render_s else None
    return {
        "id": str(clip.id),
        "object": "clip",
        "tier": TIER,
        "status": clip.status,
        "model": clip.model,
        "prompt": clip.prompt,
        "width": clip.width,
        "height": clip.height,
        "fps": clip.fps,
        "frames": clip.frames,
        "duration_s": round(clip.frames / clip.fps, 6),
        "seed": clip.seed,
        "params": clip.params,
        "progress": {"frames_done": clip.frames_done, "frames": clip.frames,
                     "fraction": round(clip.frames_done / clip.frames, 4) if clip.frames else 0.0},
        "attempts": clip.attempts,
        "timings": {
            "created_at": clip.created_at.isoformat() if clip.created_at else None,
            "started_at": clip.started_at.isoformat() if clip.started_at else None,
            "finished_at": clip.finished_at.isoformat() if clip.finished_at else None,
            "queued_s": _seconds(clip.created_at, clip.first_started_at),
            "run_s": run_s,
            # Fast-batch: the first frame is available when the whole playable file is.
            "time_to_first_frame_s": _seconds(clip.created_at, clip.first_frame_at),
            "fps_throughput": round(clip.frames / clip.render_s, 3) if run_s else None,
        },
        "usage": {"gpu_seconds": str(Decimal(clip.gpu_seconds).quantize(Decimal("0.000001"))),
                  "cost": cost_of(clip), "currency": usage.CURRENCY, "share": clip.share},
        "video": _video(clip) if clip.status == S.SUCCEEDED and clip.video_name else None,
        "error": {"code": clip.error_code, "message": clip.error_message} if clip.error_code else None,
    }


def _video(clip: Clip) -> dict[str, Any]:
    from datetime import timedelta

    expires = timezone.now() + timedelta(seconds=video_token_ttl_s())
    return {"url": f"/v1/clips/{clip.id}/video", "content_type": "video/mp4", "bytes": clip.video_bytes,
            "codec": clip.codec, "signed_url": f"/v1/clips/{clip.id}/video?token={video_token(clip)}",
            "signed_url_expires_at": expires.isoformat()}
