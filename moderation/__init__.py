"""Prompt and frame moderation (ARCHITECTURE.md, "Capacity, billing, moderation — the contracts").

Not built yet: this package is its home, so that nothing of moderation lands in `nextframe/`.
It is laid out like `inference/` beside `platform/nextframe/`:
- a pure core (policies, classifiers, the inline frame check) in modules here that never import
  Django, so the device runtime's moderation hook (`DeviceRuntime(moderation_hook=...,
  moderation_budget_ms=...)`, docs/frame-loop.md) can call it on the post thread, within budget;
- a small Django app beside it (`apps.ModerationConfig`, in INSTALLED_APPS) for what needs the
  database: per-organisation policies and the audit log, with its REST routes in `urls`
  (included by `nextframe.urls` under /v1/moderation/).

How it plugs in: the live session service's seams (a prompt check at session.start and on each
control, a frame-moderation hook with the session's context and an `on_moderation` callback), and
the clip tier's `blocked` status. What the client sees is fixed by docs/protocol.md: the
`moderation` message, `control.rejected` code `moderation`, `session.ended` reason `moderation`.
"""
