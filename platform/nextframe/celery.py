"""The one Celery app of the project. Queues are named here and nowhere else.

Embedded default: kombu's filesystem transport under the data dir (a real broker shared by the web
process and the worker process, not eager mode). Scaled out: Redis (REDIS_URL).
"""
from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings")

QUEUE_CLIPS = "clips"
QUEUE_MAINTENANCE = "maintenance"
QUEUES = (QUEUE_CLIPS, QUEUE_MAINTENANCE)

app = Celery("nextframe")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=[Queue(name) for name in QUEUES],
    task_default_queue=QUEUE_MAINTENANCE,
    # Every task's queue, named here (callers also pass it explicitly on each send).
    task_routes={"clips.render": {"queue": QUEUE_CLIPS}, "clips.recover": {"queue": QUEUE_MAINTENANCE},
                 "billing.sync_meter_events": {"queue": QUEUE_MAINTENANCE},
                 "moderation.purge_thumbnails": {"queue": QUEUE_MAINTENANCE}},
    # How long a worker waits on a dead pool child before requeueing its job (default 10 s).
    worker_lost_wait=2.0,
    task_create_missing_queues=False,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
)
app.autodiscover_tasks()


def ensure_broker_dirs() -> None:
    """The filesystem transport needs its folders to exist before either side connects."""
    from django.conf import settings

    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
