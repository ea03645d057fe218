"""The model catalog served by GET /v1/models: installed engines plus their measured evidence.

Engines come from `inference.engines` (imported lazily: torch stays out of the request path until
the catalog is first asked for). The tier shown is the measured one when an audit exists; the
declared tier is kept beside it so a disagreement is visible.
"""
from __future__ import annotations

def _specs():
    from inference.engines import list_specs

    return tuple(list_specs())


def model_ids() -> list[str]:
    return [spec.id for spec in _specs()]


def evidence_for(model_id: str) -> dict | None:
    """Latest audit evidence for a model on this deployment (None until an audit has run)."""
    try:
        from nextframe.audits.actions import latest_evidence
    except ImportError:
        return None
    return latest_evidence(model_id)


def describe(spec) -> dict:
    data = spec.to_dict()
    declared = data.get("declared_tier")
    evidence = evidence_for(spec.id)
    data["tier"] = evidence["tier"] if evidence else declared
    data["tier_source"] = "measured" if evidence else "declared"
    data["evidence"] = evidence
    data["tier_disagreement"] = bool(evidence and evidence["tier"] != declared)
    return data


def catalog() -> list[dict]:
    return [describe(spec) for spec in _specs()]
