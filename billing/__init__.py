"""Billing: the metering ledger, pricing, quotas, Stripe sync and webhooks (ARCHITECTURE.md).

Not built yet: this package is its home, so that nothing of billing lands in `nextframe/`.
A Django app (`apps.BillingConfig`, in INSTALLED_APPS) with its REST routes and webhooks in `urls`
(included by `nextframe.urls` under /v1/billing/), beside pure modules (pricing, the ledger's
arithmetic) that never import Django. It plugs in behind the platform's one usage writer and one
quota reader: live sessions and clip jobs report usage there, and admission asks it for quota.
"""
