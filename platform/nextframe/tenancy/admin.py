"""Admin pages for operators: organisations and their quotas, memberships, keys (hashes only)."""
from django.contrib import admin

from nextframe.tenancy.models import ApiKey, Membership, Organization


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "max_live_sessions", "gpu_seconds_limit", "created_at")
    search_fields = ("name",)
    inlines = [MembershipInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "organization", "mode", "scopes", "created_at", "last_used_at", "revoked_at")
    list_filter = ("mode",)
    search_fields = ("key_id", "organization__name")
    # The hash is never useful to a person and the key itself is never stored.
    exclude = ("key_hash",)
    readonly_fields = ("key_id", "mode", "created_at", "last_used_at")

    def has_add_permission(self, request) -> bool:
        return False  # keys are created with `nextframe createkey`, which shows the key once
