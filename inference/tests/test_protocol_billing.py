"""The protocol's billing additions: `quota.warning` (v1.1) and `usage.gpu_seconds_decimal` (v1.2)."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from inference import protocol


def test_quota_warning_serialises_as_documented():
    text = protocol.QuotaWarning(used_gpu_seconds=3241.5, limit_gpu_seconds=3600.0, percent=90).to_json()
    assert json.loads(text) == {"type": "quota.warning", "used_gpu_seconds": 3241.5, "limit_gpu_seconds": 3600.0,
                                "percent": 90}
    assert json.loads(protocol.QuotaWarning(1.0, None, 90).to_json())["limit_gpu_seconds"] is None


def test_usage_carries_the_exact_gpu_seconds_only_when_given_and_never_as_a_float():
    plain = protocol.Usage(gpu_seconds=1.5, frames=3, cost="0.0006").to_dict()
    assert "gpu_seconds_decimal" not in plain  # v1 clients see exactly what they saw before
    exact = protocol.Usage(gpu_seconds=1.5, frames=3, cost=Decimal("0.000600"), gpu_seconds_decimal="1.500000")
    assert exact.to_dict()["gpu_seconds_decimal"] == "1.500000" and exact.to_dict()["gpu_seconds"] == 1.5
    with pytest.raises(ValueError):
        protocol.Usage(gpu_seconds=1.5, frames=3, cost="0", gpu_seconds_decimal=1.5)  # a float
