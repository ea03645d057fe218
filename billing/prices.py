"""Prices per model, in the database with their history (`billing.models.Price`).

The current price of a model is its newest row whose `effective_from` has come; a change is a new
row (the admin only adds rows), so segments written before it keep theirs. A model without a row
gets one seeded from its engine's declared price (`EngineSpec.price_per_gpu_second`) the first time
it is asked for; an unknown model (an engine since removed) costs 0 and is never seeded.
"""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing.models import Price

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def declared_price(model: str) -> Decimal | None:
    """The engine's declared price, or None for a model no engine provides."""
    from inference.engines import EngineError, get_spec

    try:
        return Decimal(get_spec(model).price_per_gpu_second)
    except EngineError:
        return None


def price_of(model: str, at: datetime | None = None) -> Decimal:
    """The price per GPU-second of `model` at `at` (now by default)."""
    at = at or timezone.now()
    row = Price.objects.filter(model=model, effective_from__lte=at).order_by("-effective_from", "-pk").first()
    if row is not None:
        return row.unit_price
    if Price.objects.filter(model=model).exists():  # only future prices: none applied yet
        return Decimal(0)
    declared = declared_price(model)
    if declared is None:
        return Decimal(0)
    with transaction.atomic():
        if not Price.objects.filter(model=model).exists():
            Price.objects.create(model=model, unit_price=declared, effective_from=EPOCH,
                                 note="seeded from the engine's declared price")
    return declared


def set_price(model: str, unit_price: Decimal | str, effective_from: datetime | None = None, note: str = "") -> Price:
    """A price change: a new row from `effective_from` (now by default); earlier segments keep theirs."""
    price_of(model)  # the declared price is history too: seed it first
    return Price.objects.create(model=model, unit_price=Decimal(unit_price),
                                effective_from=effective_from or timezone.now(), note=note)
