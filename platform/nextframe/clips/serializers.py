"""Request and response shapes of /v1/clips (the response serializers document the OpenAPI schema;
the representation itself is built by `actions.describe`)."""
from __future__ import annotations

from rest_framework import serializers

from nextframe.api.serializers import StrictSerializer


class ClipCreateSerializer(StrictSerializer):
    model = serializers.CharField(max_length=64)
    prompt = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    width = serializers.IntegerField(required=False, min_value=1)
    height = serializers.IntegerField(required=False, min_value=1)
    fps = serializers.IntegerField(required=False, min_value=1)
    frames = serializers.IntegerField(required=False, min_value=1)
    duration_s = serializers.FloatField(required=False, min_value=0.001)
    seed = serializers.IntegerField(required=False, default=0, min_value=0, max_value=2**63 - 1)
    params = serializers.DictField(required=False)


class ClipUploadSerializer(serializers.Serializer):
    """multipart/form-data: the fields of ClipCreate as form fields (params as a JSON string), or all
    of them as one JSON `request` part; the input video as the `video` file part."""

    video = serializers.FileField()
    request = serializers.CharField(required=False, help_text="the JSON body of a plain POST")
    model = serializers.CharField(required=False)


class ProgressSerializer(serializers.Serializer):
    frames_done = serializers.IntegerField()
    frames = serializers.IntegerField()
    fraction = serializers.FloatField()


class TimingsSerializer(serializers.Serializer):
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    queued_s = serializers.FloatField(allow_null=True, help_text="creation to first start")
    run_s = serializers.FloatField(allow_null=True, help_text="start to finish of the attempt that produced the video")
    time_to_first_frame_s = serializers.FloatField(allow_null=True, help_text="creation to the playable file")
    fps_throughput = serializers.FloatField(allow_null=True, help_text="frames / render seconds")


class UsageSerializer(serializers.Serializer):
    gpu_seconds = serializers.CharField(help_text="the sum of the clip's customer-paid ledger segments: reserved share x "
                                        "run seconds of each attempt it pays for (docs/billing.md), decimal string")
    cost = serializers.CharField(help_text="the sum of those segments' amounts, each at the price of its moment")
    currency = serializers.CharField()
    share = serializers.FloatField()


class ClipSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    object = serializers.CharField()
    tier = serializers.ChoiceField(choices=["fast-batch"])
    status = serializers.ChoiceField(choices=["queued", "running", "succeeded", "failed", "blocked", "cancelled"])
    model = serializers.CharField()
    prompt = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    fps = serializers.IntegerField()
    frames = serializers.IntegerField()
    duration_s = serializers.FloatField()
    seed = serializers.IntegerField()
    params = serializers.DictField()
    progress = ProgressSerializer()
    attempts = serializers.IntegerField()
    timings = TimingsSerializer()
    usage = UsageSerializer()
    video = serializers.DictField(allow_null=True)
    error = serializers.DictField(allow_null=True)
