"""Clip files behind Django's storage API (`storages["default"]`): local media folder or S3.

Names are `clips/<org id>/<clip id>/...`: never served directly (MEDIA_URL is not routed); a video
leaves only through the authenticated `GET /v1/clips/{id}/video`.
"""
from __future__ import annotations

import logging
import os
from typing import IO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

log = logging.getLogger(__name__)


def storage() -> Storage:
    return storages["default"]


def clip_prefix(org_id: int, clip_id: object) -> str:
    return f"clips/{org_id}/{clip_id}"


def save(name: str, content: IO[bytes]) -> str:
    """Store `content` under `name` (the storage may pick a free variant); returns the stored name."""
    return storage().save(name, File(content))


def delete(name: str) -> None:
    """Remove a stored file; a missing file or a failing backend is logged, never raised (best effort:
    the row is the source of truth and a leftover file is cheaper than a failed cancel)."""
    if not name:
        return
    try:
        storage().delete(name)
    except Exception:  # noqa: BLE001 - any backend error
        log.warning("could not delete stored clip file %s", name, exc_info=True)
        return
    _prune_empty_folder(name)


def _prune_empty_folder(name: str) -> None:
    """Remove the clip's folder once its last file is gone. Only a local filesystem has folders to
    leave behind: object stores (S3 ...) have none, so other storages are not touched."""
    store = storage()
    if not isinstance(store, FileSystemStorage) or not name.startswith("clips/"):
        return
    try:
        os.rmdir(os.path.dirname(store.path(name)))
    except OSError:
        pass  # not empty (the clip still has a file) or already gone
