"""The moderation Django app: per-organisation policies, hash lists and the audit log. The pure
core beside it never imports Django."""
from __future__ import annotations

from django.apps import AppConfig


class ModerationConfig(AppConfig):
    name = "moderation"
    label = "moderation"
    verbose_name = "NextFrame moderation"
