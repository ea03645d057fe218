"""Settings of the out-of-process clip tests (web + worker subprocesses): the normal settings from the
environment, small batches so a clip is several batches long, and (Redis) a key prefix per test run so
that concurrent runs sharing one Redis never consume each other's messages."""
import os

from nextframe.settings.base import *  # noqa: F401,F403
from nextframe.settings.base import REDIS_URL

CLIP_BATCH_FRAMES = 4
CLIP_SWEEP_INTERVAL_S = 2.0
# How long a worker waits before it gives up on a killed pool child's job (Celery's default is 10 s).
CELERY_WORKER_LOST_WAIT = 1.0
if REDIS_URL:
    # Replaces base's mapping (typed by its values there); Celery reads any mapping.
    CELERY_BROKER_TRANSPORT_OPTIONS = {  # type: ignore[assignment]
        "global_keyprefix": os.environ.get("NEXTFRAME_TEST_KEYPREFIX", "")}
