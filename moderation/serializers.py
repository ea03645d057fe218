"""Response and request shapes of moderation's REST API, for the OpenAPI document (the views
validate with moderation.policy and build plain dicts)."""
from __future__ import annotations

from rest_framework import serializers

from moderation.policy import FAIL_MODES, FRAME_CLASSIFIER_MODES


class PolicySerializer(serializers.Serializer):
    blocked_terms = serializers.ListField(child=serializers.CharField())
    frame_classifier = serializers.ChoiceField(choices=FRAME_CLASSIFIER_MODES)
    classifier_every_n_frames = serializers.IntegerField()
    classifier_threshold = serializers.FloatField()
    hash_max_distance = serializers.IntegerField()
    fail_mode = serializers.ChoiceField(choices=FAIL_MODES)
    max_violations = serializers.IntegerField()
    keep_flagged_frames = serializers.BooleanField()


class PolicyPatchSerializer(serializers.Serializer):
    blocked_terms = serializers.ListField(child=serializers.CharField(), required=False)
    frame_classifier = serializers.ChoiceField(choices=FRAME_CLASSIFIER_MODES, required=False)
    classifier_every_n_frames = serializers.IntegerField(required=False)
    classifier_threshold = serializers.FloatField(required=False)
    hash_max_distance = serializers.IntegerField(required=False)
    fail_mode = serializers.ChoiceField(choices=FAIL_MODES, required=False)
    max_violations = serializers.IntegerField(required=False)
    keep_flagged_frames = serializers.BooleanField(required=False)


class HashSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    phash = serializers.CharField(help_text="64-bit pHash, 16 hex digits")
    category = serializers.CharField()
    created_at = serializers.DateTimeField()


class HashCreateSerializer(serializers.Serializer):
    phash = serializers.CharField(help_text="16 hex digits, as imagehash prints a pHash")
    category = serializers.CharField()


class HashUploadSerializer(serializers.Serializer):
    image = serializers.FileField()
    category = serializers.CharField()


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    organization = serializers.IntegerField()
    session_id = serializers.CharField(allow_null=True)
    clip_id = serializers.CharField(allow_null=True)
    frame = serializers.IntegerField(allow_null=True, help_text="output frame_index, or the input frame's seq")
    source = serializers.ChoiceField(choices=["prompt", "input", "output"])
    detector = serializers.ChoiceField(choices=["terms", "classifier", "hash"])
    category = serializers.CharField()
    score = serializers.FloatField(allow_null=True, help_text="classifier score, or hash distance")
    action = serializers.ChoiceField(choices=["rejected", "replaced", "flagged", "cleared", "passed", "ended",
                                              "blocked"])
    detail = serializers.CharField()
    has_thumbnail = serializers.BooleanField()
    created_at = serializers.DateTimeField()
