"""The audits app: measured tier labels on this deployment (docs/audit.md).

Reading:
- `plan`: the deployment's audit plan from the settings; only runs measured with it are published.
- `evidence`: what GET /v1/models shows (`latest_evidence`), staleness, `needs_audit`.
Acting:
- `runs`: measure a model (`run_audit`, `run_clip_audit`) and store what it found (`record`).
- `queueing`: `request_audit`, one pending audit per model, the per-organisation hourly limit.
Background:
- `worker`: the one low-priority thread that runs queued audits, waiting for quiet devices.
- `server`: start-up audits, in the web server process only.
Plumbing: `transport` (the deployment's runtimes and pool for an audit), `views`/`urls` (REST),
`cli` (`nextframe audit`), `apps` (extra engines at start-up), `models` (AuditRun).
"""
