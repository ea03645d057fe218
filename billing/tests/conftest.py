from __future__ import annotations

import pytest

WEBHOOK_SECRET = "whsec_test_nextframe"


@pytest.fixture
def fake_stripe(settings):
    """The project's fake Stripe on loopback, with the official client pointed at it."""
    from billing.fake_stripe import running

    with running() as fake:
        settings.STRIPE_SECRET_KEY = "sk_test_nextframe"
        settings.STRIPE_API_BASE = fake.url
        settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
        yield fake
