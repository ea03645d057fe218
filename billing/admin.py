"""Admin: prices are added, never edited (a change is a new row: history kept); accounts are
editable (plan, status, spend limit); the ledger is read-only."""
from __future__ import annotations

from django.contrib import admin

from billing.models import Account, OutboxEvent, Price, Segment


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = ("model", "unit_price", "currency", "effective_from", "note")
    list_filter = ("model",)

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None  # the list view; an existing price is history

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("organization", "plan", "status", "spend_limit", "stripe_customer_id")
    list_filter = ("status",)


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Segment)
class SegmentAdmin(ReadOnly):
    list_display = ("key", "organization", "model", "gpu_seconds", "unit_price", "amount", "payer", "test_mode", "ended_at")
    list_filter = ("source", "payer", "test_mode")


@admin.register(OutboxEvent)
class OutboxAdmin(ReadOnly):
    list_display = ("identifier", "status", "attempts", "next_attempt_at", "sent_at", "last_error")
    list_filter = ("status",)
