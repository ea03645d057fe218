"""Moderation's Celery tasks: the thumbnail retention purge, run daily by beat on the maintenance queue."""
from __future__ import annotations

from celery import shared_task


@shared_task(name="moderation.purge_thumbnails", ignore_result=True)
def purge_thumbnails() -> int:
    """Drop opted-in thumbnails older than MODERATION_THUMBNAIL_RETENTION_DAYS (the events stay)."""
    from moderation import actions

    return actions.purge_thumbnails()
