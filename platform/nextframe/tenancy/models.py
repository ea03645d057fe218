"""Tenancy: organisations (the tenant), memberships, API keys and browser WebSocket tickets."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class Organization(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Quotas. None = unlimited.
    max_live_sessions = models.PositiveIntegerField(default=4, help_text="Concurrent live sessions")
    gpu_seconds_limit = models.DecimalField(
        max_digits=14, decimal_places=3, null=True, blank=True, help_text="GPU-seconds per calendar month"
    )

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="one_membership_per_org")]


class ApiKey(models.Model):
    SCOPES = ("live", "clips", "read", "moderation")

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    key_id = models.CharField(max_length=16, unique=True)
    mode = models.CharField(max_length=4, default="live")
    key_hash = models.CharField(max_length=64)
    name = models.CharField(max_length=100, blank=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def prefix(self) -> str:
        return f"nf_{self.mode}_{self.key_id}_"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.organization.name})"


class Ticket(models.Model):
    """A single-use credential for browser WebSockets, valid at most TICKET_TTL_S seconds."""

    token_hash = models.CharField(max_length=64, unique=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    # Indexed: every mint deletes the expired tickets (tenancy.actions.mint_ticket).
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)


class SignInLink(models.Model):
    """A one-time dashboard sign-in link (like a notebook server's token): single use, short-lived.

    Only a SHA-256 of the token is stored; the token itself is printed once (nextframe up,
    nextframe createuser) or shown once to the owner/admin who invited the user.
    """

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signin_links")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)
