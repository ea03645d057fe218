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


# --- Response shapes, for the OpenAPI document (the views build plain dicts) ---------------------

class ParamSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    default = serializers.JSONField(allow_null=True)
    description = serializers.CharField()
    min = serializers.FloatField(required=False)
    max = serializers.FloatField(required=False)
    choices = serializers.ListField(child=serializers.JSONField(), required=False)


class LimitsSerializer(serializers.Serializer):
    min_width = serializers.IntegerField()
    min_height = serializers.IntegerField()
    max_width = serializers.IntegerField()
    max_height = serializers.IntegerField()
    max_fps = serializers.FloatField()
    max_prompt_chars = serializers.IntegerField()
    max_frame_bytes = serializers.IntegerField()


class CostSerializer(serializers.Serializer):
    memory_bytes = serializers.IntegerField()
    compute_share = serializers.FloatField()


class ModelSerializer(serializers.Serializer):
    """One entry of GET /v1/models, and GET /v1/models/{id}."""

    id = serializers.CharField()
    kind = serializers.CharField()
    description = serializers.CharField()
    tier = serializers.CharField(help_text="measured on this deployment when tier_source is 'measured'")
    tier_source = serializers.ChoiceField(choices=["measured", "declared"])
    declared_tier = serializers.CharField()
    tier_disagreement = serializers.BooleanField()
    evidence = serializers.DictField(allow_null=True, help_text="latest published audit summary (docs/audit.md)")
    default_width = serializers.IntegerField()
    default_height = serializers.IntegerField()
    max_width = serializers.IntegerField()
    max_height = serializers.IntegerField()
    default_fps = serializers.FloatField()
    max_fps = serializers.FloatField()
    chunk_frames = serializers.IntegerField(allow_null=True)
    params = ParamSerializer(many=True)
    persistent_state = serializers.CharField()
    price_per_gpu_second = serializers.CharField(help_text="decimal string")
    cost_at_default = CostSerializer()
    limits = LimitsSerializer()


class ModelListSerializer(serializers.Serializer):
    """GET /v1/models: every model at once (not paginated: the catalog is small)."""

    object = serializers.ChoiceField(choices=["list"])
    data = ModelSerializer(many=True)


class AuditSerializer(serializers.Serializer):
    """An audit run (POST /v1/models/{id}/audit, GET /v1/audits/{id})."""

    id = serializers.IntegerField()
    object = serializers.ChoiceField(choices=["audit"])
    model = serializers.CharField()
    kind = serializers.ChoiceField(choices=["live", "clip"])
    status = serializers.ChoiceField(choices=["queued", "running", "succeeded", "failed"])
    source = serializers.ChoiceField(choices=["startup", "on_demand", "cli"])
    tier = serializers.CharField(allow_null=True)
    declared_tier = serializers.CharField(allow_null=True)
    published = serializers.BooleanField(allow_null=True)
    created_at = serializers.DateTimeField()
    measured_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    evidence = serializers.DictField(allow_null=True)
