"""The audit harness: measure which tier a model really is (interactive, streaming, fast-batch).

- `audit_live(transport, model, plan)` runs the taxonomy's diagnostics through a Transport
  (`RuntimeTransport` in process, `WebSocketTransport` over protocol v1) and returns classified Evidence;
- `audit_clip(model, ...)` measures the clip tier (time to the playable file);
- `classify(evidence)` applies the written-down rules (classifier.py, docs/audit.md).
Pure Python + numpy (+ torch only when an in-process audit runs an engine); never imports Django.
"""
from __future__ import annotations

from .classifier import classify
from .clip import audit_clip
from .diagnostics import AuditPlan, audit_live
from .evidence import TIERS, ControlObservation, Evidence
from .simulated import SimulatedRuntimeTransport
from .transport import AuditError, AuditFrame, AuditPlanError, ModelInfo, RuntimeTransport, Transport

__all__ = ["AuditError", "AuditFrame", "AuditPlan", "AuditPlanError", "ControlObservation", "Evidence", "ModelInfo",
           "RuntimeTransport", "SimulatedRuntimeTransport", "TIERS", "Transport", "audit_clip", "audit_live",
           "classify"]
