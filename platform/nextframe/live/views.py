"""GET /v1/sessions and GET /v1/sessions/{id}: the caller's organisation's live sessions only."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.generics import ListAPIView, RetrieveAPIView

from nextframe.api.errors import ApiError
from nextframe.api.pagination import ListCursorPagination
from nextframe.live.models import LiveSession
from nextframe.live.serializers import LiveSessionSerializer
from nextframe.tenancy.auth import ApiKeyAuthentication, DashboardSessionAuthentication


class _OwnSessions:
    # A logged-in dashboard user reads their organisation's sessions too (the playground's record link).
    authentication_classes = [ApiKeyAuthentication, DashboardSessionAuthentication]
    serializer_class = LiveSessionSerializer
    required_scope = "read"

    def get_queryset(self):
        return LiveSession.objects.filter(organization=self.request.auth.organization)


class SessionListView(_OwnSessions, ListAPIView):
    pagination_class = ListCursorPagination

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=["active", "ended"]),
                               OpenApiParameter("model", str), OpenApiParameter("limit", int), OpenApiParameter("cursor", str)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        qs = super().get_queryset()
        status = self.request.query_params.get("status")
        if status is not None:
            if status not in LiveSession.Status.values:
                raise ApiError(f"status must be one of {', '.join(LiveSession.Status.values)}")
            qs = qs.filter(status=status)
        model = self.request.query_params.get("model")
        if model:
            if "\x00" in model:  # PostgreSQL refuses NUL in a string literal (a 500 otherwise)
                raise ApiError("model must not contain NUL characters")
            qs = qs.filter(model=model)
        return qs


class SessionDetailView(_OwnSessions, RetrieveAPIView):
    lookup_url_kwarg = "session_id"

    def get_object(self):
        try:
            return self.get_queryset().get(pk=self.kwargs["session_id"])
        except LiveSession.DoesNotExist:
            # Another organisation's session is indistinguishable from one that never existed.
            raise exceptions.NotFound("no such session") from None
