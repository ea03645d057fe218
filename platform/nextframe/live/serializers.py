from rest_framework import serializers

from nextframe.live.models import LiveSession


class LiveSessionSerializer(serializers.ModelSerializer):
    usage = serializers.SerializerMethodField()

    class Meta:
        model = LiveSession
        fields = ["id", "model", "tier", "width", "height", "fps", "status", "device", "share", "created_at",
                  "ended_at", "end_reason", "metrics", "usage"]

    def get_usage(self, obj) -> dict:
        # `gpu_seconds` stays a number (v1); `gpu_seconds_decimal` is the exact decimal string the ledger sums to.
        return {"gpu_seconds": float(obj.gpu_seconds), "frames": obj.frames, "cost": str(obj.cost), "currency": "usd",
                "gpu_seconds_decimal": str(obj.gpu_seconds)}
