"""REST views of the audits app: request an audit, read one. Thin: they call `nextframe.audits.queueing`.

Who sees an audit: the organisation that asked for it (on demand), and every organisation for the
audits the platform ran itself (start-up and CLI runs have no organisation: they measure the
deployment, and their evidence is what GET /v1/models publishes to all). Another organisation's
audit is a 404, exactly like one that does not exist; ids are sequential, so this is what keeps
one tenant from reading another's.
"""
from __future__ import annotations

from django.db.models import Q, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from nextframe.api.errors import ApiError
from nextframe.api.serializers import AuditSerializer, EmptyRequestSerializer
from nextframe.audits.models import AuditRun
from nextframe.audits.plan import is_published
from nextframe.audits.queueing import AuditRateLimited, AuditUnavailable, request_audit


def visible_audits(organization) -> QuerySet:
    """The audit runs `organization` may read: its own and the platform's (no organisation)."""
    own = Q(organization=organization) if organization is not None else Q(pk__in=[])
    return AuditRun.objects.filter(own | Q(organization__isnull=True))


def run_dict(run: AuditRun) -> dict:
    return {"id": run.pk, "object": "audit", "model": run.model_id, "kind": run.kind, "status": run.status,
            "source": run.source, "tier": run.tier or None, "declared_tier": run.declared_tier or None,
            "published": is_published(run) if run.status == "succeeded" else None,
            "created_at": run.created_at.isoformat(),
            "measured_at": run.measured_at.isoformat() if run.measured_at else None,
            "error": run.error or None, "evidence": run.evidence or None}


class ModelAuditView(APIView):
    """POST /v1/models/{id}/audit: measure this model's tier now (202; poll GET /v1/audits/{id}).

    429 rate_limited with Retry-After: the organisation's NEXTFRAME_AUDIT_PER_ORG_PER_HOUR new
    audits within the last hour are used up, or the queue is full.
    """

    required_scope = "read"

    @extend_schema(request=EmptyRequestSerializer, responses={202: AuditSerializer})
    def post(self, request, model_id: str):
        from inference.engines import UnknownModel

        EmptyRequestSerializer.check(request)
        try:
            run = request_audit(model_id, organization=getattr(request.auth, "organization", None))
        except UnknownModel:
            raise ApiError(f"unknown model {model_id!r}", code="not_found", status_code=404) from None
        except AuditRateLimited as exc:
            raise ApiError(str(exc), code="rate_limited", status_code=429, retry_after_s=exc.retry_after_s) from None
        except AuditUnavailable as exc:
            raise ApiError(str(exc), code="rate_limited", status_code=429, retry_after_s=30) from None
        return Response(run_dict(run), status=202)


class AuditDetailView(APIView):
    """GET /v1/audits/{id}: one audit run with its full evidence."""

    required_scope = "read"

    @extend_schema(responses={200: AuditSerializer})
    def get(self, request, audit_id: int):
        run = visible_audits(request.auth.organization).filter(pk=audit_id).first()
        if run is None:
            raise ApiError(f"no audit {audit_id}", code="not_found", status_code=404)
        return Response(run_dict(run))
