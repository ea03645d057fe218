"""The outbox drain is a Celery beat task on the maintenance queue, run by `nextframe up`'s worker."""
from __future__ import annotations

import pytest

from nextframe.testing import current_profile


@pytest.mark.profile("embedded")
def test_the_beat_schedule_drains_the_outbox_on_the_maintenance_queue(settings):
    from nextframe import cli
    from nextframe.celery import QUEUE_MAINTENANCE, app

    entry = settings.CELERY_BEAT_SCHEDULE["billing-sync-meter-events"]
    assert entry["task"] == "billing.sync_meter_events" and entry["options"]["queue"] == QUEUE_MAINTENANCE
    assert app.conf.task_routes["billing.sync_meter_events"]["queue"] == QUEUE_MAINTENANCE
    app.loader.import_default_modules()
    assert "billing.sync_meter_events" in app.tasks
    worker = cli._children_commands("127.0.0.1", 8000)["worker"]
    assert "--beat" in worker and worker[worker.index("--schedule") + 1].endswith("celerybeat-schedule")
    assert current_profile() == "embedded"


@pytest.mark.django_db
def test_the_task_sends_what_is_pending(org, fake_stripe, settings):
    from billing.tasks import sync_meter_events
    from nextframe import usage
    from nextframe.live.models import LiveSession

    settings.BILLING_SEGMENT_S = 0.0
    record = LiveSession.objects.create(organization=org, model="dreamfield", tier="interactive", width=64,
                                        height=64, fps=30, share=0.5)
    usage.record_live(record.pk, {"gpu_seconds": 2.0}, "0.0004", end_reason="client")
    assert sync_meter_events.apply().get()["sent"] == 1 and len(fake_stripe.accepted) == 1
