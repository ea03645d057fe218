"""REST views of moderation (PROTOCOL.md): thin, they call `moderation.actions`.

Scopes: reads need `read` or `moderation`; changing the policy or the hash list needs `moderation`.
Everything is the caller's organisation's only: another organisation's hash is a 404, its events
are never listed.
"""
from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import parsers
from rest_framework.response import Response
from rest_framework.views import APIView

from moderation import actions, phash
from moderation.policy import PolicyError
from moderation.serializers import (
    EventSerializer,
    HashCreateSerializer,
    HashSerializer,
    HashUploadSerializer,
    PolicyPatchSerializer,
    PolicySerializer,
)
from nextframe.api.errors import ApiError
from nextframe.api.pagination import ListCursorPagination
from nextframe.tenancy.auth import HasApiKey, read_or_scope

MAX_CATEGORY_CHARS = 64
# A listed image is hashed at 32x32: larger pictures only cost memory (a 7000x7000 PNG of a few KB
# decodes to ~150 MB), so they are refused before decoding.
MAX_IMAGE_PIXELS = 4096 * 4096
ModerationScope = read_or_scope("moderation")


class ModerationBase(APIView):
    permission_classes = [HasApiKey, ModerationScope]


class PolicyView(ModerationBase):
    @extend_schema(responses={200: PolicySerializer}, summary="Your organisation's moderation policy")
    def get(self, request):
        return Response(actions.policy_for(request.auth.organization).as_dict())

    @extend_schema(request=PolicyPatchSerializer, responses={200: PolicySerializer},
                   summary="Change your organisation's moderation policy (never below the platform's floor)")
    def patch(self, request):
        try:
            policy = actions.update_policy(request.auth.organization, request.data)
        except PolicyError as exc:
            raise ApiError(exc.message, code="invalid_request", details={exc.field: [exc.message]}) from None
        return Response(policy.as_dict())


def _category(value) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_CATEGORY_CHARS:
        raise ApiError(f"category must be a string of 1 to {MAX_CATEGORY_CHARS} characters",
                       details={"category": ["invalid"]})
    return value.strip()


def _hash_of_upload(upload) -> int:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if upload.size > settings.MAX_UPLOAD_BYTES:
        raise ApiError("the image is too large", code="payload_too_large", status_code=413)
    try:
        with Image.open(upload) as image:
            image.draft("RGB", (512, 512))  # JPEG: decode at reduced size, the hash needs 32x32
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ApiError("the image has too many pixels", code="bad_image")
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(f"the image cannot be read: {exc}", code="bad_image") from None
    return phash.phash(pixels)


class HashListView(ModerationBase):
    parser_classes = [parsers.JSONParser, parsers.MultiPartParser]

    @extend_schema(parameters=[OpenApiParameter("limit", int), OpenApiParameter("cursor", str)],
                   responses={200: HashSerializer(many=True)}, summary="Your organisation's hash list")
    def get(self, request):
        paginator = ListCursorPagination()
        page = paginator.paginate_queryset(actions.org_hashes(request.auth.organization), request, view=self)
        return paginator.get_paginated_response([actions.describe_hash(h) for h in page])

    @extend_schema(request={"application/json": HashCreateSerializer, "multipart/form-data": HashUploadSerializer},
                   responses={201: HashSerializer, 400: OpenApiResponse(description="bad phash, image or category")},
                   summary="List an image (uploaded, or its pHash) so that frames matching it are replaced")
    def post(self, request):
        data = request.data
        if request.content_type.startswith("multipart/"):
            upload = request.FILES.get("image")
            if upload is None:
                raise ApiError("a multipart request needs the image in an `image` file part",
                               details={"image": ["required"]})
            extra = sorted((set(request.FILES) - {"image"}) | (set(request.POST) - {"category"}))
            if extra:
                raise ApiError(f"unknown field(s): {', '.join(extra)}", details={n: ["unknown field"] for n in extra})
            value = _hash_of_upload(upload)
            category = _category(request.POST.get("category"))
        else:
            if not isinstance(data, dict):
                raise ApiError("expected a JSON object")
            unknown = sorted(set(data) - {"phash", "category"})
            if unknown:
                raise ApiError(f"unknown field(s): {', '.join(unknown)}", details={n: ["unknown field"] for n in unknown})
            raw = data.get("phash")
            try:
                value = phash.from_hex(raw if isinstance(raw, str) else "")
            except ValueError as exc:
                raise ApiError(str(exc), details={"phash": ["invalid"]}) from None
            category = _category(data.get("category"))
        try:
            entry = actions.add_hash(request.auth.organization, value, category)
        except actions.HashListFull as exc:
            raise ApiError(str(exc), code="invalid_request") from None
        return Response(actions.describe_hash(entry), status=201)


class HashDetailView(ModerationBase):
    @extend_schema(responses={204: None, 404: OpenApiResponse(description="no such hash")},
                   summary="Remove a hash from your organisation's list")
    def delete(self, request, hash_id: int):
        if not actions.delete_hash(request.auth.organization, hash_id):
            raise ApiError("no such hash", code="not_found", status_code=404)
        return Response(status=204)


class EventListView(ModerationBase):
    @extend_schema(parameters=[OpenApiParameter("session_id", str), OpenApiParameter("clip_id", str),
                               OpenApiParameter("category", str), OpenApiParameter("limit", int),
                               OpenApiParameter("cursor", str)],
                   responses={200: EventSerializer(many=True)},
                   summary="Every moderation decision of your organisation, newest first")
    def get(self, request):
        q = request.query_params
        qs = actions.events_for(request.auth.organization, q.get("session_id"), q.get("clip_id"), q.get("category"))
        paginator = ListCursorPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response([actions.describe_event(e) for e in page])
