from __future__ import annotations

from django.contrib import admin

from moderation.models import BlockedHash, ModerationEvent, ModerationPolicy


@admin.register(ModerationPolicy)
class ModerationPolicyAdmin(admin.ModelAdmin):
    list_display = ("organization", "updated_at")


@admin.register(BlockedHash)
class BlockedHashAdmin(admin.ModelAdmin):
    list_display = ("phash", "category", "organization", "created_at")
    list_filter = ("category",)


@admin.register(ModerationEvent)
class ModerationEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "organization", "action", "category", "source", "detector", "session_id",
                    "clip_id", "frame", "score")
    list_filter = ("action", "source", "detector", "category")
    search_fields = ("session_id", "clip_id")
    exclude = ("thumbnail",)
    readonly_fields = [f.name for f in ModerationEvent._meta.fields if f.name != "thumbnail"]
