"""REST views of the foundation: models, tickets. Views are thin: they call the apps' actions."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from nextframe.api import catalog
from nextframe.api.errors import ApiError
from nextframe.api.serializers import EmptyRequestSerializer, ModelListSerializer, ModelSerializer, TicketSerializer
from nextframe.tenancy import actions
from nextframe.tenancy.auth import ApiKeyAuthentication, DashboardSessionAuthentication, throttled_error


class ModelsView(APIView):
    """GET /v1/models: every installed engine with its (measured) tier, evidence, params, limits, price."""

    authentication_classes = [ApiKeyAuthentication, DashboardSessionAuthentication]  # the playground
    required_scope = None

    @extend_schema(responses={200: ModelListSerializer}, operation_id="models_list", summary="Every model, with its tier as measured here")
    def get(self, request):
        models = catalog.catalog(organization=request.auth.organization)
        return Response({"object": "list", "data": models})


class ModelDetailView(APIView):
    """GET /v1/models/{id}: one model, the same object as in the list (404 unknown_model)."""

    authentication_classes = [ApiKeyAuthentication, DashboardSessionAuthentication]
    required_scope = None

    @extend_schema(responses={200: ModelSerializer}, summary="One model")
    def get(self, request, model_id: str):
        model = catalog.model(model_id, organization=request.auth.organization)
        if model is None:
            raise ApiError(f"unknown model {model_id!r}", code="unknown_model", status_code=404)
        return Response(model)


class TicketsView(APIView):
    """POST /v1/tickets: a single-use WebSocket ticket (API key or logged-in dashboard session)."""

    authentication_classes = [ApiKeyAuthentication, DashboardSessionAuthentication]
    required_scope = "live"

    @extend_schema(request=EmptyRequestSerializer, responses={201: TicketSerializer})
    def post(self, request):
        EmptyRequestSerializer.check(request)
        principal = request.auth
        user = request.user if getattr(request.user, "is_authenticated", False) else None
        try:
            if principal.api_key is None:
                token, ticket = actions.mint_ticket(user=user, organization=principal.organization)
            else:
                token, ticket = actions.mint_ticket(principal)
        except actions.Throttled as exc:
            raise throttled_error(exc) from None
        return Response({"ticket": token, "expires_at": ticket.expires_at.isoformat()}, status=201)
