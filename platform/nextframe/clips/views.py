"""REST views of the clip tier (PROTOCOL.md): thin, they call `nextframe.clips.actions`.

Scopes: creating and cancelling need `clips`; reading needs `read` or `clips`. Another
organisation's clip is a 404 on every endpoint, exactly like a clip that does not exist. The video
is also served for a signed, expiring `?token=` (`video.signed_url`), for browsers that cannot send
the API key.
"""
from __future__ import annotations

import json

from django.conf import settings
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, parsers, permissions
from rest_framework.response import Response
from rest_framework.views import APIView

from nextframe.api.errors import ApiError
from nextframe.api.pagination import ListCursorPagination
from nextframe.clips import actions, files
from nextframe.clips.models import Clip
from nextframe.clips.serializers import ClipCreateSerializer, ClipSerializer, ClipUploadSerializer
from nextframe.tenancy.auth import ApiKeyAuthentication, DashboardSessionAuthentication, HasApiKey, read_or_scope

ClipScope = read_or_scope("clips")


def _raise(exc: actions.ClipError):
    raise ApiError(exc.message, code=exc.code, status_code=exc.status, retry_after_s=exc.retry_after_s)


def _own_clip(request, clip_id) -> Clip:
    clip = actions.get_clip(request.auth.organization, clip_id)
    if clip is None:
        raise ApiError("no such clip", code="not_found", status_code=404)
    return clip


class ClipBase(APIView):
    # API keys, and the logged-in dashboard (its session may read and create clips; CSRF enforced).
    authentication_classes = [ApiKeyAuthentication, DashboardSessionAuthentication]
    permission_classes = [HasApiKey, ClipScope]
    required_scope = None  # ClipScope decides per method


class KeyOrSignedToken(permissions.BasePermission):
    """`?token=` (a signed, expiring link from the clip's `video.signed_url`) or an API key/session."""

    def has_permission(self, request, view) -> bool:
        if "token" in request.query_params:
            return True  # the view checks the token itself and answers 403 when it is not valid
        return HasApiKey().has_permission(request, view) and ClipScope().has_permission(request, view)


def _request_fields(request) -> tuple[dict, object | None]:
    """The JSON body, or (multipart) the `request` JSON part / the form fields, and the upload."""
    if not request.content_type.startswith("multipart/"):
        return request.data, None
    upload = request.FILES.get("video")
    if upload is None:
        raise ApiError("a multipart request needs the input video in a `video` file part", code="missing_video")
    if upload.size > settings.MAX_UPLOAD_BYTES:
        raise ApiError(f"the video is larger than {settings.MAX_UPLOAD_BYTES} bytes", code="payload_too_large",
                       status_code=413)
    extra = sorted(set(request.FILES) - {"video", "request"})
    if extra:
        raise ApiError(f"unknown file part(s): {', '.join(extra)}", code="invalid_request")
    raw = request.POST.get("request")
    if raw is None and "request" in request.FILES:
        raw = request.FILES["request"].read().decode("utf-8", "replace")
    if raw is not None:
        if set(request.POST) - {"request"}:
            raise ApiError("send the fields either in the `request` part or as form fields, not both")
        try:
            return json.loads(raw), upload
        except ValueError:
            raise ApiError("the `request` part is not valid JSON", code="malformed_json") from None
    fields: dict = {k: request.POST.get(k) for k in request.POST}
    if "params" in fields:
        try:
            fields["params"] = json.loads(fields["params"])
        except ValueError:
            raise ApiError("the `params` field must be a JSON object", code="malformed_json") from None
    return fields, upload


class ClipListView(ClipBase):
    parser_classes = [parsers.JSONParser, parsers.MultiPartParser]

    @extend_schema(responses={200: ClipSerializer(many=True)}, summary="Clips of your organisation, newest first")
    def get(self, request):
        paginator = ListCursorPagination()
        page = paginator.paginate_queryset(
            actions.visible_clips(request.auth.organization), request, view=self)
        return paginator.get_paginated_response([actions.describe(c) for c in page])

    @extend_schema(
        request={"application/json": ClipCreateSerializer, "multipart/form-data": ClipUploadSerializer},
        responses={202: ClipSerializer, 400: OpenApiResponse(description="invalid request, unknown model, bad video"),
                   402: OpenApiResponse(description="the organisation's monthly GPU-second quota is used up"),
                   413: OpenApiResponse(description="over the organisation's clip limits or the upload limit"),
                   429: OpenApiResponse(description="too many queued/running clips")},
        summary="Request a fast-batch clip (rendered as a whole, then delivered)",
    )
    def post(self, request):
        data, upload = _request_fields(request)
        serializer = ClipCreateSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        req = actions.ClipRequest(**serializer.validated_data)
        try:
            clip = actions.create_clip(request.auth.organization, req, upload, api_key=request.auth.api_key)
        except actions.ClipError as exc:
            _raise(exc)
        return Response(actions.describe(clip), status=202)


class ClipDetailView(ClipBase):
    @extend_schema(responses={200: ClipSerializer}, summary="One clip: status, progress, timings, usage")
    def get(self, request, clip_id):
        return Response(actions.describe(_own_clip(request, clip_id)))

    @extend_schema(responses={200: ClipSerializer, 204: None},
                   summary="Cancel a queued or running clip (200), or delete a finished one (204)")
    def delete(self, request, clip_id):
        clip = _own_clip(request, clip_id)
        if actions.cancel_clip(clip):
            return Response(actions.describe(clip))
        actions.delete_clip(clip)
        return Response(status=204)


class ClipVideoView(ClipBase):
    permission_classes = [KeyOrSignedToken]

    @extend_schema(
        parameters=[OpenApiParameter("token", str, required=False,
                                     description="signed, expiring token from video.signed_url (instead of a key)")],
        responses={(200, "video/mp4"): OpenApiTypes.BINARY, 403: OpenApiResponse(description="invalid or expired token"),
                   409: OpenApiResponse(description="not rendered yet")},
        summary="Download the H.264 MP4 (API key, dashboard session, or a signed expiring link)")
    def get(self, request, clip_id):
        token = request.query_params.get("token")
        if token is not None:
            clip = actions.clip_for_video_token(token)
            if clip is None or clip.pk != clip_id:
                raise ApiError("the link is invalid or has expired", code="forbidden", status_code=403)
        else:
            clip = _own_clip(request, clip_id)
        if clip.status != Clip.Status.SUCCEEDED or not clip.video_name:
            raise ApiError(f"the clip is {clip.status}; its video exists once it has succeeded",
                           code="not_ready", status_code=409)
        try:
            handle = files.storage().open(clip.video_name, "rb")
        except FileNotFoundError:
            raise exceptions.NotFound("the video file is gone") from None
        response = FileResponse(handle, content_type="video/mp4", filename=f"clip-{clip.id}.mp4")
        response["Content-Disposition"] = f'inline; filename="clip-{clip.id}.mp4"'
        response["Cache-Control"] = "private, no-store"
        return response
