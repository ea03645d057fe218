"""`nextframe audit`: measure a model's tier and print the evidence.

    nextframe audit --model ID [--json]                      this deployment's code, in process
    nextframe audit --url ws://HOST/v1/live --key K --model ID [--json]   any protocol v1 endpoint
    nextframe audit --model ID --clip [--json]               the clip tier (time to the playable file)
    nextframe audit --url ws://HOST/v1/live --key K --model ID --clip    a deployment's clip tier over REST

Options: --sessions N (>= 2), --size WxH (64x64), --fps F (30), --controls N, --probe-param NAME,
--expect TIER (exit 3 when the verdict differs), --no-record, --data-dir DIR.
In process, the audit records an AuditRun (source "cli") when a deployment is configured
(--data-dir, NEXTFRAME_DATA_DIR or DJANGO_SETTINGS_MODULE); its sessions then reserve pool capacity
like any other, at the lowest priority. Exit codes: 0 measured, 1 audit failed, 2 bad usage or
unknown model, 3 verdict differs from --expect.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

TIERS = ("interactive", "streaming", "fast-batch")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nextframe audit", description="measure which tier a model really is")
    p.add_argument("--model", required=True, help="model id")
    p.add_argument("--url", default=None, help="ws(s)://host/v1/live of a protocol v1 endpoint (default: in process)")
    p.add_argument("--key", default=os.environ.get("NEXTFRAME_API_KEY"), help="API key for --url ($NEXTFRAME_API_KEY)")
    p.add_argument("--json", action="store_true", help="print one JSON object (its `tier` is the verdict)")
    p.add_argument("--clip", action="store_true", help="audit the clip tier instead of the live path")
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--size", default="64x64", help="WxH of the audit sessions")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--controls", type=int, default=8, help="probe controls sent during the control phase")
    p.add_argument("--probe-param", default=None, help="the parameter to steer (default: chosen from the schema)")
    p.add_argument("--expect", choices=TIERS, default=None, help="exit 3 when the verdict differs")
    p.add_argument("--no-record", action="store_true", help="do not store an AuditRun")
    p.add_argument("--data-dir", default=None, help="the deployment's data dir (records the audit there)")
    return p


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ValueError(f"--size must look like 128x128, got {text!r}")
    return int(w), int(h)


def _deployment_configured(args: argparse.Namespace) -> bool:
    return bool(args.data_dir or os.environ.get("NEXTFRAME_DATA_DIR") or os.environ.get("DJANGO_SETTINGS_MODULE"))


def _setup_django(data_dir: str | None) -> bool:
    if data_dir:
        os.environ["NEXTFRAME_DATA_DIR"] = os.path.abspath(os.path.expanduser(data_dir))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings")
    try:
        import django

        django.setup()
        return True
    except Exception as exc:  # the audit itself does not need Django
        print(f"warning: deployment settings unusable ({exc}); the audit will not be recorded", file=sys.stderr)
        return False


def _record(evidence: dict[str, Any], kind: str) -> None:
    try:
        from nextframe.audits.actions import record

        run = record(evidence, source="cli", kind=kind)
        print(f"recorded as audit {run.pk}", file=sys.stderr)
    except Exception as exc:
        print(f"warning: the audit was not recorded: {exc}", file=sys.stderr)


async def _live(args: argparse.Namespace, plan: Any, django_ready: bool) -> Any:
    from inference.audit import audit_live

    if args.url:
        from inference.audit.ws_transport import WebSocketTransport

        transport = WebSocketTransport(args.url, args.key)
    elif django_ready:
        from nextframe.audits.transport import DeploymentTransport

        transport = DeploymentTransport()
    else:
        from inference.audit import RuntimeTransport

        transport = RuntimeTransport()
    try:
        return await audit_live(transport, args.model, plan)
    finally:
        await transport.aclose()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        width, height = _size(args.size)
        from inference.audit import AuditPlan

        plan = AuditPlan(sessions=args.sessions, width=width, height=height, fps=args.fps,
                         controls=args.controls, probe_param=args.probe_param)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    django_ready = not args.url and _deployment_configured(args) and _setup_django(args.data_dir)
    if not django_ready and not args.url:
        # Engines a deployment would load (NEXTFRAME_EXTRA_ENGINES) are loaded here too.
        for name in [m.strip() for m in os.environ.get("NEXTFRAME_EXTRA_ENGINES", "").split(",") if m.strip()]:
            import importlib

            module = importlib.import_module(name)
            if callable(getattr(module, "register", None)):
                module.register()

    from inference.audit import AuditError
    from inference.client import LiveClientError
    from inference.engines import EngineError, UnknownModel

    try:
        if args.clip and args.url:
            from inference.audit.clip_rest import audit_clip_url

            ev = audit_clip_url(args.url, args.key, args.model, width=width, height=height, fps=int(args.fps),
                                sessions=args.sessions)
        elif args.clip:
            from inference.audit.clip import audit_clip

            ev = audit_clip(args.model, width=width, height=height, fps=int(args.fps), sessions=args.sessions)
        else:
            ev = asyncio.run(_live(args, plan, django_ready))
    except UnknownModel as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (AuditError, EngineError, LiveClientError, OSError) as exc:
        print(f"error: audit failed: {exc}", file=sys.stderr)
        return 1
    if not args.url:
        from inference.audit.version import code_version

        ev.code_version = code_version(args.model)
    evidence = ev.as_dict()
    if django_ready and not args.no_record:
        _record(evidence, "clip" if args.clip else "live")
    if args.json:
        print(json.dumps(evidence, default=str))
    else:
        from inference.audit.report import format_table

        print(format_table(ev))
    if args.expect and ev.tier != args.expect:
        return 3
    return 0
