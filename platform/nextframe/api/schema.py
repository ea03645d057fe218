"""The OpenAPI document (drf-spectacular): auth schemes, and the error responses of every operation.

`AutoSchema` adds to each operation the error statuses it can really answer, all with the
`{"error": {"code", "message"}}` envelope (`Error`): 401/403/429 where a key is needed (429: too
many failed authentications from the address), 404 where the path names an object, 411/413/415
where a body is read, 400 and 406 everywhere (an unknown query parameter is refused by
api.middleware.UnknownQueryParamsMiddleware; 406 from DRF content negotiation). Every GET that
returns many objects is typed as the cursor-paginated list envelope, and `limit` carries its bounds.
405 (a method the path does not have) is the reusable response `MethodNotAllowed`: it belongs to no
operation, since it answers the methods that are not there.
"""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema

from nextframe.api.pagination import ListCursorPagination

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable machine-readable code (docs/protocol.md)"},
                "message": {"type": "string"},
                "details": {"type": "object", "description": "per-field validation errors"},
                "retry_after_s": {"type": "integer", "minimum": 1, "description": "as the Retry-After header"},
            },
        }
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "seconds to wait"}}

# Status -> what it means on any operation that can answer it.
ERROR_DESCRIPTIONS = {
    "400": "invalid request (malformed_json, invalid_request, invalid_params, ...)",
    "401": "missing, malformed, unknown or revoked API key (unauthenticated)",
    "402": "quota_exceeded",
    "403": "the key lacks the scope (forbidden), or a dashboard request without its CSRF token",
    "404": "no such object in your organisation (not_found)",
    "406": "the Accept header allows no JSON (not_acceptable)",
    "409": "not_ready",
    "411": "chunked body without Content-Length (length_required)",
    "413": "body over the limit (payload_too_large)",
    "415": "body not JSON (unsupported_media_type)",
    "429": "rate_limited (too many failed authentications from this address, or the endpoint's own limit)",
    "503": "temporarily unavailable; retry after Retry-After",
}


def _error_response(status: str, description: str | None = None) -> dict:
    response = {"description": description or ERROR_DESCRIPTIONS.get(status, "error"),
                "content": {"application/json": {"schema": _ERROR_REF}}}
    if status in {"429", "503"}:
        response["headers"] = dict(_RETRY_AFTER)
    return response


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's AutoSchema with NextFrame's error envelope, list envelope and bounds."""

    def _get_paginator(self):
        # Every list this API returns is cursor-paginated, also from views that paginate by hand.
        return super()._get_paginator() or (ListCursorPagination() if self.method == "GET" else None)

    def _get_parameters(self) -> list[dict]:
        parameters = super()._get_parameters()
        for parameter in parameters:
            if parameter["in"] == "query" and parameter["name"] == "limit":
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": ListCursorPagination.max_page_size,
                                       "default": ListCursorPagination.page_size}
                parameter["description"] = "page size"
            elif parameter["in"] == "query" and parameter["name"] == "cursor":
                parameter["schema"] = {"type": "string"}
                parameter["description"] = "next_cursor of the previous page, as given"
        return parameters

    def _needs_key(self) -> bool:
        return bool(self.view.get_authenticators()) or bool(self.view.get_permissions())

    def _get_response_bodies(self, direction="response") -> dict:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        statuses = {"400", "406"}  # 400: also unknown query parameters, on every operation
        if self._needs_key():
            statuses |= {"401", "403", "429"}
        if "{" in self.path:
            statuses.add("404")
        if self.method in {"POST", "PUT", "PATCH"}:
            statuses |= {"411", "413", "415"}
        for status in statuses:
            responses.setdefault(status, _error_response(status))
        # Errors a view declared with a description only get the envelope as their body.
        for status, response in responses.items():
            if status >= "400" and "content" not in response:
                responses[status] = _error_response(status, response.get("description"))
        return dict(sorted(responses.items()))


def postprocess(result: dict, generator, request, public) -> dict:
    """Register the shared Error schema and the MethodNotAllowed response (SPECTACULAR hook)."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    components.setdefault("responses", {})["MethodNotAllowed"] = {
        "description": "the path has no such method (method_not_allowed); the Allow header lists those it has",
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    return result


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "nextframe.tenancy.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "nf_live_<id>_<secret><checksum>"}


class DashboardSessionScheme(OpenApiAuthenticationExtension):
    target_class = "nextframe.tenancy.auth.DashboardSessionAuthentication"
    name = "DashboardSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
