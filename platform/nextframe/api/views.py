"""REST views of the foundation: models, tickets. Views are thin: they call the apps' actions."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from nextframe.api import catalog
from nextframe.api.serializers import EmptyRequestSerializer, TicketSerializer
from nextframe.tenancy import actions
from nextframe.tenancy.auth import ApiKeyAuthentication, DashboardSessionAuthentication


class ModelsView(APIView):
    """GET /v1/models: every installed engine with its (measured) tier, evidence, params, limits, price."""

    required_scope = None

    @extend_schema(responses={200: dict})
    def get(self, request):
        models = catalog.catalog()
        return Response({"object": "list", "data": models})


class TicketsView(APIView):
    """POST /v1/tickets: a single-use WebSocket ticket (API key or logged-in dashboard session)."""

    authentication_classes = [ApiKeyAuthentication, DashboardSessionAuthentication]
    required_scope = "live"

    @extend_schema(request=EmptyRequestSerializer, responses={201: TicketSerializer})
    def post(self, request):
        EmptyRequestSerializer.check(request)
        principal = request.auth
        user = request.user if getattr(request.user, "is_authenticated", False) else None
        if principal.api_key is None:
            token, ticket = actions.mint_ticket(user=user, organization=principal.organization)
        else:
            token, ticket = actions.mint_ticket(principal)
        return Response({"ticket": token, "expires_at": ticket.expires_at.isoformat()}, status=201)
