"""The served OpenAPI document against the API itself: schemathesis with all its checks.

Every operation of GET /v1/openapi.json is called in-process (Django's WSGI app) with generated
valid and invalid requests and a real API key; each response must be a documented status, match
its documented schema (errors: the `{"error": {"code", "message"}}` envelope), and never be a 5xx.
Bounded examples per operation keep the whole run well under a minute.

One check is widened, on purpose: `positive_data_acceptance` (a schema-valid request must be
accepted) also allows 400/402/413 here, because part of what makes a request valid cannot be said
in a schema: the model must be installed, the size within that model's limits, the quota not used
up, the upload a decodable video. Those answers must still be documented and in the envelope,
which the other checks enforce. Cursors are opaque tokens the API hands out, so generated valid
requests carry none (a made-up cursor is a 400 by design: tests/test_api_foundation.py).
The real key goes on every request except those whose negative part is the credential itself
(schemathesis drops or garbles `Authorization` there): putting the key back would turn that case
into a valid request and the expected refusal into a "schema-violating request accepted".
"""
from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.config._checks import POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES
from schemathesis.core.parameters import ParameterLocation

EXAMPLES_PER_OPERATION = 25

schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", get_wsgi_application())
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION)
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=[*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "400", "402", "413"])


@pytest.fixture
def no_audit_worker(monkeypatch):
    """POST /v1/models/{id}/audit queues real audits: keep them queued instead of measuring."""
    from nextframe.audits import worker

    monkeypatch.setattr(worker.worker, "submit", lambda run_id, with_clip: None)


@pytest.fixture
def connections_kept_across_requests():
    """The WSGI handler closes the database connection after each request (request_finished), which
    on PostgreSQL would close the test's transaction under it; Django's own test client detaches
    that handler in the same way while it calls the application."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_api_conforms_to_its_document(case, api_key, no_audit_worker, connections_kept_across_requests):
    if case.meta is not None and case.meta.generation.mode.is_positive and case.query:
        case.query.pop("cursor", None)
    headers = case.meta.components.get(ParameterLocation.HEADER) if case.meta is not None else None
    credential_is_the_negative_part = headers is not None and not headers.mode.is_positive
    case.call_and_validate(headers=None if credential_is_the_negative_part else
                           {"Authorization": f"Bearer {api_key}"})
