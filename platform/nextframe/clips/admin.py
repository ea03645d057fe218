"""Operators set per-organisation clip limits and inspect jobs in the Django admin."""
from django.contrib import admin

from nextframe.clips.models import Clip, ClipLimits


@admin.register(ClipLimits)
class ClipLimitsAdmin(admin.ModelAdmin):
    list_display = ("organization", "max_frames", "max_duration_s", "max_width", "max_height", "max_active_jobs")


@admin.register(Clip)
class ClipAdmin(admin.ModelAdmin):
    list_display = ("id", "organization", "model", "status", "frames", "attempts", "created_at", "deleted_at")
    list_filter = ("status", "model")
    readonly_fields = [f.name for f in Clip._meta.fields]
