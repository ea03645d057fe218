"""Cursor pagination for every list endpoint: `?limit=` (1..100, default 20) and `?cursor=`.

Responses read `{"object": "list", "data": [...], "has_more": bool, "next_cursor": str | null}`.
Cursors are opaque and stable under inserts (newest first), unlike page numbers.
"""
from __future__ import annotations

from rest_framework.pagination import CursorPagination
from rest_framework.response import Response


class ListCursorPagination(CursorPagination):
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100
    ordering = ("-created_at", "-pk")
    cursor_query_param = "cursor"

    def get_page_size(self, request):
        from nextframe.api.errors import ApiError

        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(f"limit must be an integer between 1 and {self.max_page_size}") from None
        if not 1 <= value <= self.max_page_size:
            raise ApiError(f"limit must be an integer between 1 and {self.max_page_size}")
        return value

    def decode_cursor(self, request):
        """A malformed cursor is a bad request (400), not a missing page (DRF says 404)."""
        from rest_framework.exceptions import NotFound

        from nextframe.api.errors import ApiError

        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ApiError("cursor is not one this API returned (use next_cursor as given)") from None

    def get_paginated_response(self, data):
        next_link = self.get_next_link()
        next_cursor = None
        if next_link:
            from urllib.parse import parse_qs, urlparse

            next_cursor = parse_qs(urlparse(next_link).query).get(self.cursor_query_param, [None])[0]
        return Response({"object": "list", "data": data, "has_more": next_cursor is not None, "next_cursor": next_cursor})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["object", "data", "has_more", "next_cursor"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": schema,
                "has_more": {"type": "boolean"},
                "next_cursor": {"type": "string", "nullable": True},
            },
        }
