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


def limits_of(spec) -> dict:
    """What a session or clip of this model may ask for (PROTOCOL.md: `limits`)."""
    from inference.codec import MAX_FRAME_BYTES
    from inference.engines.base import MIN_SIDE

    return {
        "min_width": MIN_SIDE, "min_height": MIN_SIDE, "max_width": spec.max_width, "max_height": spec.max_height,
        "max_fps": spec.max_fps, "max_prompt_chars": spec.max_prompt_chars, "max_frame_bytes": MAX_FRAME_BYTES,
    }


def describe(spec) -> dict:
    data = spec.to_dict()
    data["limits"] = limits_of(spec)
    declared = data.get("declared_tier")
    evidence = evidence_for(spec.id)
    data["tier"] = evidence["tier"] if evidence else declared
    data["tier_source"] = "measured" if evidence else "declared"
    data["evidence"] = evidence
    data["tier_disagreement"] = bool(evidence and evidence["tier"] != declared)
    return data


def catalog() -> list[dict]:
    return [describe(spec) for spec in _specs()]
