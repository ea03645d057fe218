"""Request guards that must run before Django or DRF read the body."""
from __future__ import annotations

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
