"""Request guards that must run before Django or DRF read the body."""
from __future__ import annotations

import re
import threading
from functools import lru_cache

from django.conf import settings

from nextframe.api.errors import json_error


class BodySizeLimitMiddleware:
    """Refuse oversize bodies under /v1/ with 413 before anything reads them.

    Multipart uploads (clip inputs) get MAX_UPLOAD_BYTES, everything else MAX_JSON_BODY_BYTES.
    A chunked body (no Content-Length) is refused with 411. The server itself (nextframe.web) also
    refuses any body beyond the largest upload while it arrives, before it is buffered.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/v1/"):
            if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and not request.META.get("CONTENT_LENGTH"):
                # Django reads no body without a length: a chunked request would look empty and
                # be acted on as if it had sent nothing. Ask for a length instead.
                return json_error("length_required", "send the body with a Content-Length (chunked bodies are not accepted)", 411)
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return json_error("bad_request", "Content-Length is not a number", 400)
            multipart = request.META.get("CONTENT_TYPE", "").startswith("multipart/")
            limit = settings.MAX_UPLOAD_BYTES if multipart else settings.MAX_JSON_BODY_BYTES
            if length > limit:
                return json_error("payload_too_large", f"request body of {length} bytes exceeds the limit of {limit}", 413)
        return self.get_response(request)


_SCHEMA_LOCK = threading.Lock()


def documented_query_params() -> dict[tuple[str, str], frozenset[str]]:
    """(OpenAPI path, method) -> the query parameters the document gives that operation.

    Built once per process from the same generator that serves GET /v1/openapi.json, so what is
    accepted and what is documented cannot drift apart. Under a lock: drf-spectacular's extension
    registry is not thread-safe, and two first requests at once (a page fetching two reports) made
    one of them fail with a 500.
    """
    with _SCHEMA_LOCK:
        return _documented_query_params()


@lru_cache(maxsize=1)
def _documented_query_params() -> dict[tuple[str, str], frozenset[str]]:
    from drf_spectacular.generators import SchemaGenerator

    document = SchemaGenerator().get_schema(request=None, public=True)
    return {
        (path, method): frozenset(p["name"] for p in op.get("parameters", []) if p.get("in") == "query")
        for path, operations in document["paths"].items()
        for method, op in operations.items()
    }


_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


class UnknownQueryParamsMiddleware:
    """Refuse query parameters an endpoint does not document (400 invalid_request).

    The same rule as unknown body fields: `?stauts=ended` must not silently list every session.
    Requests that match no documented operation (a wrong method, the document itself) are left to
    the view.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.path.startswith("/v1/") or not request.GET or request.resolver_match is None:
            return None
        if any("\x00" in name or any("\x00" in value for value in values) for name, values in request.GET.lists()):
            # PostgreSQL refuses NUL in a string (a 500 from any filter that reaches it): one clear 400
            # for every endpoint and parameter, on both profiles.
            return json_error("invalid_request", "query parameters must not contain NUL characters", 400)
        path = "/" + _CONVERTER.sub(r"{\1}", request.resolver_match.route)
        allowed = documented_query_params().get((path, request.method.lower()))
        if allowed is None:
            return None
        unknown = sorted(set(request.GET) - allowed)
        if unknown:
            names = ", ".join(repr(name) for name in unknown)
            known = ", ".join(sorted(allowed)) or "none"
            return json_error("invalid_request", f"unknown query parameter(s) {names} (this endpoint takes: {known})", 400)
        return None
