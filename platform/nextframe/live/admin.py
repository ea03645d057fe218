from django.contrib import admin

from nextframe.live.models import LiveSession


@admin.register(LiveSession)
class LiveSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "organization", "model", "status", "end_reason", "frames", "gpu_seconds", "created_at")
    list_filter = ("status", "model", "end_reason")
    readonly_fields = [f.name for f in LiveSession._meta.fields]
