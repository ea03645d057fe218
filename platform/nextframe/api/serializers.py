"""Serializer helpers shared by the API views."""
from __future__ import annotations

from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know, so a typo in a request never passes silently."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["expected a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class EmptyRequestSerializer(StrictSerializer):
    """For POSTs that take no fields: an empty object or no body at all."""

    @classmethod
    def check(cls, request) -> None:
        data = request.data
        if not isinstance(data, list) and not data:  # no body: DRF gives an empty dict/QueryDict
            data = {}
        cls(data=data).is_valid(raise_exception=True)


class TicketSerializer(serializers.Serializer):
    ticket = serializers.CharField()
    expires_at = serializers.DateTimeField()
