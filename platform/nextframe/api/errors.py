"""The REST error envelope of PROTOCOL.md: `{"error": {"code": ..., "message": ...}}` for every error.

Domain code raises ApiError (or a subclass with its own status/code); DRF's own exceptions are
mapped here; Django-level 404/500 under /v1/ go through `json_handler404` / `json_handler500`.
"""
from __future__ import annotations

import logging
import math

from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An error with an explicit envelope code; `retry_after_s` adds a Retry-After header."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_request"

    def __init__(self, message: str, code: str | None = None, status_code: int | None = None,
                 retry_after_s: float | None = None, details: dict | None = None):
        super().__init__(message)
        self.error_code = code or self.default_code
        if status_code is not None:
            self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.details = details


_DRF_CODES = {
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.AuthenticationFailed: "unauthenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_json",
    exceptions.Throttled: "rate_limited",
    exceptions.ValidationError: "invalid_request",
}


def envelope(code: str, message: str, details: dict | None = None, retry_after_s: int | None = None) -> dict:
    body: dict = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    if retry_after_s is not None:
        body["error"]["retry_after_s"] = retry_after_s  # the same whole seconds as the Retry-After header
    return body


def _whole_seconds(retry_after_s: float) -> int:
    return max(1, math.ceil(retry_after_s))


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return "; ".join(_flatten(v) for v in detail)
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, ApiError):
        retry = _whole_seconds(exc.retry_after_s) if exc.retry_after_s is not None else None
        response = Response(envelope(exc.error_code, str(exc.detail), exc.details, retry), status=exc.status_code)
        if retry is not None:
            response["Retry-After"] = str(retry)
        return response
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled error in API view", exc_info=exc)
        return Response(envelope("server_error", "internal server error"), status=500)
    code = next((c for klass, c in _DRF_CODES.items() if isinstance(exc, klass)), "error")
    details = exc.detail if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict) else None
    response.data = envelope(code, _flatten(exc.detail), details)
    return response


def json_error(code: str, message: str, status_code: int, retry_after_s: float | None = None) -> JsonResponse:
    retry = _whole_seconds(retry_after_s) if retry_after_s is not None else None
    response = JsonResponse(envelope(code, message, retry_after_s=retry), status=status_code)
    if retry is not None:
        response["Retry-After"] = str(retry)
    return response


def json_handler404(request, exception=None):
    if request.path.startswith("/v1/"):
        return json_error("not_found", f"no such endpoint: {request.path}", 404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_handler500(request):
    if request.path.startswith("/v1/"):
        return json_error("server_error", "internal server error", 500)
    from django.views.defaults import server_error

    return server_error(request)
