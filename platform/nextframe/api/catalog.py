"""The model catalog served by GET /v1/models: installed engines plus their measured evidence.

Engines come from `inference.engines` (imported lazily: torch stays out of the request path until
the catalog is first asked for). The tier shown is the measured one when an audit exists; the
declared tier is kept beside it so a disagreement is visible.
"""
from __future__ import annotations

from nextframe.audits.evidence import latest_evidence


def _specs():
    from inference.engines import list_specs

    return tuple(list_specs())


def model_ids() -> list[str]:
    return [spec.id for spec in _specs()]


def evidence_for(model_id: str) -> dict | None:
    """Latest audit evidence for a model on this deployment (None until an audit has run)."""
    return latest_evidence(model_id)


def limits_of(spec) -> dict:
    """What a session or clip of this model may ask for (PROTOCOL.md: `limits`)."""
    from inference.codec import MAX_FRAME_BYTES
    from inference.engines.base import MIN_SIDE

    return {
        "min_width": MIN_SIDE, "min_height": MIN_SIDE, "max_width": spec.max_width, "max_height": spec.max_height,
        "max_fps": spec.max_fps, "max_prompt_chars": spec.max_prompt_chars, "max_frame_bytes": MAX_FRAME_BYTES,
    }


def _hide_foreign_audit_ids(evidence: dict, organization) -> None:
    """Blank `audit_id`s the caller may not open (another organisation's on-demand audit).

    The evidence itself is about the model on this deployment and is shown to everyone; which
    organisation asked for the run, and the run's own page, are not.
    """
    from nextframe.audits.views import visible_audits

    places = [evidence] + ([evidence["clip"]] if isinstance(evidence.get("clip"), dict) else [])
    ids = {place.get("audit_id") for place in places} - {None}
    if not ids:
        return
    visible = set(visible_audits(organization).filter(pk__in=ids).values_list("pk", flat=True))
    for place in places:
        if place.get("audit_id") not in visible:
            place["audit_id"] = None


def describe(spec, organization=None) -> dict:
    """The catalog entry of one engine, as `organization` may see it."""
    data = spec.to_dict()
    data["limits"] = limits_of(spec)
    declared = data.get("declared_tier")
    evidence = evidence_for(spec.id)
    if evidence:
        _hide_foreign_audit_ids(evidence, organization)
    data["tier"] = evidence["tier"] if evidence else declared
    data["tier_source"] = "measured" if evidence else "declared"
    data["evidence"] = evidence
    data["tier_disagreement"] = bool(evidence and evidence["tier"] != declared)
    return data


def catalog(organization=None) -> list[dict]:
    return [describe(spec, organization) for spec in _specs()]


def model(model_id: str, organization=None) -> dict | None:
    """One catalog entry (None: no such model installed)."""
    spec = next((s for s in _specs() if s.id == model_id), None)
    return None if spec is None else describe(spec, organization)
