"""Moderation's records: each organisation's policy, the hash lists, and the audit log."""
from __future__ import annotations

from django.db import models

from nextframe.tenancy.models import Organization


class ModerationPolicy(models.Model):
    """An organisation's settings (moderation.policy.Policy); no row means the platform defaults."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="moderation_policy")
    settings = models.JSONField(default=dict, help_text="the fields of moderation.policy.Policy that were set")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"moderation policy of {self.organization}"


class BlockedHash(models.Model):
    """A perceptual hash on a list: the platform's (no organisation) or one organisation's."""

    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.CASCADE,
                                     related_name="blocked_hashes", help_text="empty: the platform list")
    phash = models.CharField(max_length=16, help_text="64-bit pHash, 16 hex digits (imagehash's format)")
    category = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "created_at"])]

    def __str__(self) -> str:
        return f"{self.phash} ({self.category})"


class ModerationEvent(models.Model):
    """One moderation decision (the audit log). Pixels only when the organisation opted in."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="moderation_events")
    session_id = models.CharField(max_length=40, blank=True, default="", db_index=True)
    clip_id = models.CharField(max_length=40, blank=True, default="", db_index=True)
    frame = models.BigIntegerField(null=True, blank=True, help_text="output frame index, or input frame seq")
    source = models.CharField(max_length=16, help_text="prompt | input | output")
    detector = models.CharField(max_length=16, help_text="terms | classifier | hash")
    category = models.CharField(max_length=64, db_index=True)
    score = models.FloatField(null=True, blank=True, help_text="classifier score, or hash distance")
    action = models.CharField(max_length=16, help_text="rejected | replaced | flagged | cleared | passed | ended | blocked")
    detail = models.CharField(max_length=200, blank=True, default="")
    thumbnail = models.BinaryField(null=True, blank=True, help_text="small JPEG, only with keep_flagged_frames")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "created_at"])]

    def __str__(self) -> str:
        return f"{self.action} {self.category} ({self.source}/{self.detector})"
