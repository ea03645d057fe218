"""Moderation's business logic over the database: policies, hash lists, the audit log.

Views, the live glue (moderation.live) and the clip runner call these. Reads for the frame path
come from `snapshot_for` (a per-organisation cache refreshed where the database may be used: at
session start, on a policy or list change in this process), so no frame ever waits on the database.
Audit events from the frame path and the event loop go through `AuditWriter`, a thread that writes
them in batches; `record_now` writes at once where blocking is fine (session start, clips, REST).
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from moderation import phash
from moderation.models import BlockedHash, ModerationEvent, ModerationPolicy
from moderation.policy import Floor, Policy, apply_changes
from moderation.terms import TermList, platform_terms
from nextframe.tenancy.models import Organization

log = logging.getLogger(__name__)


def floor() -> Floor:
    return Floor(**getattr(settings, "MODERATION_FLOOR", {}))


def platform_default() -> Policy:
    """The policy of an organisation that set nothing (settings.MODERATION_DEFAULT_POLICY over Policy())."""
    return replace(Policy(), **getattr(settings, "MODERATION_DEFAULT_POLICY", {}))


def _org_id(org: Organization | int | str) -> int:
    return int(org.pk if isinstance(org, Organization) else org)


def policy_for(org: Organization | int) -> Policy:
    row = ModerationPolicy.objects.filter(organization_id=_org_id(org)).first()
    base = platform_default()
    if row is None:
        return base
    known = {f.name for f in fields(Policy)}
    values: dict[str, Any] = {k: (tuple(v) if k == "blocked_terms" else v)
                              for k, v in row.settings.items() if k in known}
    return replace(base, **values)


def update_policy(org: Organization, changes: Any) -> Policy:
    """Apply a PATCH (raises policy.PolicyError); returns the new policy."""
    current = policy_for(org)
    new = apply_changes(current, changes, floor())
    row, _ = ModerationPolicy.objects.get_or_create(organization=org)
    stored = dict(row.settings)
    for key in changes:
        value = getattr(new, key)
        stored[key] = list(value) if key == "blocked_terms" else value
    row.settings = stored
    row.save()
    refresh(org.pk)
    return new


# --- hash lists ---------------------------------------------------------------------------------------

class HashListFull(Exception):
    """The organisation's hash list holds MODERATION_MAX_HASHES_PER_ORG entries already."""


def add_hash(org: Organization, value: int, category: str) -> BlockedHash:
    """Add a hash to the organisation's list. Every frame of its sessions is compared with the whole
    list, so the list is bounded: HashListFull past MODERATION_MAX_HASHES_PER_ORG."""
    limit = int(getattr(settings, "MODERATION_MAX_HASHES_PER_ORG", 10_000))
    with transaction.atomic():
        # The organisation's row lock: two concurrent adds cannot both take the last place.
        Organization.objects.select_for_update().filter(pk=org.pk).first()
        if BlockedHash.objects.filter(organization=org).count() >= limit:
            raise HashListFull(f"the hash list holds its maximum of {limit} entries; delete some first")
        entry = BlockedHash.objects.create(organization=org, phash=phash.to_hex(value), category=category)
    refresh(org.pk)
    return entry


def org_hashes(org: Organization):
    return BlockedHash.objects.filter(organization=org)


def delete_hash(org: Organization, hash_id: Any) -> bool:
    deleted, _ = BlockedHash.objects.filter(organization=org, pk=hash_id).delete()
    if deleted:
        refresh(org.pk)
    return bool(deleted)


def hash_list_for(org_id: int) -> phash.HashList:
    """The platform's list plus the organisation's."""
    rows = BlockedHash.objects.filter(organization__isnull=True) | BlockedHash.objects.filter(organization_id=org_id)
    return phash.HashList([(int(r.phash, 16), r.category) for r in rows])


def describe_hash(entry: BlockedHash) -> dict[str, Any]:
    return {"id": entry.pk, "phash": entry.phash, "category": entry.category,
            "created_at": entry.created_at.isoformat().replace("+00:00", "Z")}


# --- snapshots for the frame path -----------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """What one organisation's checks read, loaded together."""

    org_id: int
    policy: Policy
    terms: TermList
    hashes: phash.HashList


_snapshots: dict[int, Snapshot] = {}
_snap_lock = threading.Lock()


def refresh(org_id: int | str) -> Snapshot:
    """Load an organisation's snapshot from the database (blocks: never on the event loop)."""
    org_id = int(org_id)
    policy = policy_for(org_id)
    terms = platform_terms().extended(list(policy.blocked_terms)) if policy.blocked_terms else platform_terms()
    snap = Snapshot(org_id, policy, terms, hash_list_for(org_id))
    with _snap_lock:
        _snapshots[org_id] = snap
    return snap


def cached_snapshot(org_id: int | str) -> Snapshot | None:
    with _snap_lock:
        return _snapshots.get(int(org_id))


def forget_snapshots() -> None:
    with _snap_lock:
        _snapshots.clear()


# --- the audit log --------------------------------------------------------------------------------------

# How long the audit writer retries a batch the database refuses for a transient reason.
WRITE_RETRY_S = 30.0

EVENT_FIELDS = {"session_id", "clip_id", "frame", "source", "detector", "category", "score", "action", "detail",
                "thumbnail"}


def _event(org_id: int | str, event: dict[str, Any]) -> ModerationEvent:
    data = {k: v for k, v in event.items() if k in EVENT_FIELDS and v is not None}
    data["detail"] = str(data.get("detail", ""))[:200]
    return ModerationEvent(organization_id=int(org_id), created_at=event.get("at") or timezone.now(), **data)


def record_now(org_id: int | str, event: dict[str, Any]) -> ModerationEvent:
    """Write one event now (where blocking on the database is fine)."""
    entry = _event(org_id, event)
    entry.save()
    return entry


class AuditWriter:
    """A thread writing events queued from threads that must not block (frame path, event loop)."""

    def __init__(self, max_queue: int = 10_000) -> None:
        self._q: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def record(self, org_id: int | str, event: dict[str, Any]) -> None:
        event = {**event, "at": timezone.now()}
        try:
            self._q.put_nowait((int(org_id), event))
        except queue.Full:
            self.dropped += 1
            log.error("moderation audit queue full: an event was dropped (%s)", event.get("action"))
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="moderation-audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._q.get()]
            while len(batch) < 200:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception:
                log.exception("moderation audit: %d events could not be written", len(batch))
            finally:
                # This thread's connection is closed between batches: it must not hold the database
                # (a test database cannot be dropped while a connection is open).
                connection.close()
                for _ in batch:
                    self._q.task_done()

    def _write(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """One batch, retried while the database is briefly unavailable (SQLite's "database table
        is locked" under a concurrent writer, a PostgreSQL restart): an audit event is not dropped
        for a transient error. Other errors (an organisation deleted meanwhile) fail at once."""
        import time

        delay, deadline = 0.05, time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                ModerationEvent.objects.bulk_create([_event(org, ev) for org, ev in batch])
                return
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("moderation audit: %d events not written yet (%s); retrying in %.2f s",
                            len(batch), exc, delay)
                connection.close()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued event is written (tests, shutdown)."""
        import time

        deadline = time.monotonic() + timeout_s
        while self._q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._q.unfinished_tasks


audit = AuditWriter()


def events_for(org: Organization, session_id: str | None = None, clip_id: str | None = None,
               category: str | None = None):
    qs = ModerationEvent.objects.filter(organization=org)
    if session_id:
        qs = qs.filter(session_id=session_id)
    if clip_id:
        qs = qs.filter(clip_id=clip_id)
    if category:
        qs = qs.filter(category=category)
    return qs


def describe_event(event: ModerationEvent) -> dict[str, Any]:
    return {"id": event.pk, "organization": event.organization_id, "session_id": event.session_id or None,
            "clip_id": event.clip_id or None, "frame": event.frame, "source": event.source,
            "detector": event.detector, "category": event.category, "score": event.score, "action": event.action,
            "detail": event.detail, "has_thumbnail": bool(event.thumbnail),
            "created_at": event.created_at.isoformat().replace("+00:00", "Z")}


def purge_thumbnails(now=None) -> int:
    """Drop thumbnails older than MODERATION_THUMBNAIL_RETENTION_DAYS (the events stay)."""
    days = int(getattr(settings, "MODERATION_THUMBNAIL_RETENTION_DAYS", 30))
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return ModerationEvent.objects.filter(created_at__lt=cutoff, thumbnail__isnull=False).update(thumbnail=None)
