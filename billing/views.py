"""REST views of billing: GET /v1/usage and GET /v1/billing (the caller's organisation only).

Both stay open to a suspended organisation (it must see what it owes); everything else refuses it
with 402 `account_suspended` (`nextframe.tenancy.auth.HasApiKey`)."""
from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import reports
from nextframe.api.errors import ApiError

_ROW = {
    "day": serializers.CharField(required=False), "model": serializers.CharField(required=False),
    "key": serializers.CharField(required=False, allow_null=True), "gpu_seconds": serializers.CharField(),
    "cost": serializers.CharField(), "segments": serializers.IntegerField()}
_USAGE = inline_serializer("UsageReport", {
    "object": serializers.CharField(), "start": serializers.DateTimeField(), "end": serializers.DateTimeField(),
    "group_by": serializers.CharField(allow_null=True), "gpu_seconds": serializers.CharField(),
    "cost": serializers.CharField(), "currency": serializers.CharField(),
    "data": inline_serializer("UsageReportRow", _ROW, many=True)})
_BILLING = inline_serializer("BillingSummary", {
    "object": serializers.CharField(), "organization": serializers.CharField(), "plan": serializers.CharField(),
    "status": serializers.ChoiceField(["active", "suspended"]), "status_reason": serializers.CharField(),
    "current_period": serializers.DictField(), "gpu_seconds_used": serializers.CharField(),
    "gpu_seconds_limit": serializers.CharField(allow_null=True), "spend": serializers.CharField(),
    "spend_limit": serializers.CharField(allow_null=True), "percent_used": serializers.IntegerField(allow_null=True),
    "currency": serializers.CharField(), "invoice_preview": serializers.DictField(), "stripe": serializers.DictField()})


class UsageView(APIView):
    required_scope = "read"
    allow_suspended = True

    @extend_schema(parameters=[OpenApiParameter("start", OpenApiTypes.STR, description="ISO date or datetime (UTC)"),
                               OpenApiParameter("end", OpenApiTypes.STR, description="ISO date or datetime (UTC), exclusive"),
                               OpenApiParameter("group_by", str, enum=list(reports.GROUPS))],
                   responses={200: _USAGE}, summary="GPU-seconds and cost of the organisation, from the ledger")
    def get(self, request):
        params = request.query_params
        try:
            start = reports.parse_moment(params["start"], "start") if "start" in params else None
            end = reports.parse_moment(params["end"], "end") if "end" in params else None
            return Response(reports.usage(request.auth.organization, start, end, params.get("group_by")))
        except reports.ReportError as exc:
            raise ApiError(str(exc), code="invalid_request") from None


class BillingView(APIView):
    required_scope = "read"
    allow_suspended = True

    @extend_schema(responses={200: _BILLING}, summary="Plan, status, period usage against limits, invoice preview, sync")
    def get(self, request):
        return Response(reports.billing(request.auth.organization))
