"""`nextframe audit`: measure a model's tier and print the evidence.

    nextframe audit --model ID [--json]                      this deployment's code, in process
    nextframe audit --url ws://HOST/v1/live --key K --model ID [--json]   any protocol v1 endpoint
    nextframe audit --model ID --clip [--json]               the clip tier (time to the playable file)
    nextframe audit --url ws://HOST/v1/live --key K --model ID --clip    a deployment's clip tier over REST

Options: --sessions N (>= 2), --size WxH, --fps F (30; whole for --clip), --controls N,
--probe-param NAME, --expect TIER (exit 3 when the verdict differs), --no-record, --data-dir DIR.
In process, the audit records an AuditRun (source "cli") when a deployment is configured
(--data-dir, NEXTFRAME_DATA_DIR or DJANGO_SETTINGS_MODULE); its sessions (and a --clip render)
then reserve pool capacity like any other, at the lowest priority. Size and sessions default to
the deployment's audit plan there (else 64x64, 3). A run is published in GET /v1/models only when
its plan is the deployment's; any other run is recorded as unpublished, and the CLI says so.
Exit codes: 0 measured, 1 audit failed, 2 bad usage or unknown model, 3 verdict differs from --expect.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
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
    p.add_argument("--sessions", type=int, default=None,
                   help="sessions (>= 2; default: the deployment's NEXTFRAME_AUDIT_SESSIONS, else 3)")
    p.add_argument("--size", default=None,
                   help="WxH of the audit sessions (default: the deployment's NEXTFRAME_AUDIT_SIZE, else 64x64)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--controls", type=int, default=8, help="probe controls sent during the control phase")
    p.add_argument("--probe-param", default=None, help="the parameter to steer (default: chosen from the schema)")
    p.add_argument("--expect", choices=TIERS, default=None, help="exit 3 when the verdict differs")
    p.add_argument("--no-record", action="store_true", help="do not store an AuditRun")
    p.add_argument("--data-dir", default=None, help="the deployment's data dir (records the audit there)")
    return p


class UsageError(ValueError):
    """Bad usage: printed as `error: ...`, exit 2."""


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise UsageError(f"--size must look like 128x128, got {text!r}")
    if int(w) < 1 or int(h) < 1:
        raise UsageError(f"--size must be positive, got {text!r}")
    return int(w), int(h)


def _check_numbers(args: argparse.Namespace) -> None:
    if not math.isfinite(args.fps) or args.fps <= 0:
        raise UsageError(f"--fps must be a positive number, got {args.fps:g}")
    if args.clip and not args.fps.is_integer():
        raise UsageError(f"--clip needs a whole --fps (an MP4's frame timing), got {args.fps:g}")
    if args.sessions is not None and args.sessions < 2:
        raise UsageError("--sessions must be at least 2 (the persistence check restarts one)")
    if args.controls < 1:
        raise UsageError("--controls must be at least 1")


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


def _load_extra_engines() -> None:
    # Engines a deployment would load (NEXTFRAME_EXTRA_ENGINES) are loaded here too.
    import importlib

    for name in [m.strip() for m in os.environ.get("NEXTFRAME_EXTRA_ENGINES", "").split(",") if m.strip()]:
        module = importlib.import_module(name)
        if callable(getattr(module, "register", None)):
            module.register()


def _defaults(args: argparse.Namespace, django_ready: bool) -> tuple[int, int, int]:
    """(width, height, sessions): what was asked, else the deployment's plan, else 64x64 and 3."""
    width = height = 64
    sessions = 3
    if django_ready:
        from nextframe.audits.plan import deployment_plan

        try:
            plan = deployment_plan("clip" if args.clip else "live")
            width, height, sessions = plan["width"], plan["height"], plan["sessions"]
        except ValueError as exc:
            print(f"warning: the deployment's audit plan is unusable ({exc})", file=sys.stderr)
    if args.size is not None:
        width, height = _size(args.size)
    return width, height, (args.sessions if args.sessions is not None else sessions)


def _check_model(args: argparse.Namespace, width: int, height: int, plan: Any) -> None:
    """In process: the model exists, takes this size and rate, and has the probe parameter."""
    from inference.audit.pixels import choose_probe
    from inference.engines import InvalidParams, get_spec

    spec = get_spec(args.model)  # UnknownModel: exit 2
    if args.clip:
        from inference.audit.clip import check_clip_size

        try:
            check_clip_size(args.model, width, height, args.fps)
        except ValueError as exc:
            raise UsageError(f"--clip at {width}x{height}, {args.fps:g} fps: {exc}") from None
        return
    try:
        spec.resolve_size(width, height, args.fps)
    except InvalidParams as exc:
        raise UsageError(str(exc)) from None
    try:
        choose_probe([p.to_dict() for p in spec.params], plan.probe_param)
    except ValueError as exc:
        raise UsageError(f"--probe-param: {exc}") from None


def _record(evidence: dict[str, Any], kind: str) -> dict[str, Any] | None:
    try:
        from nextframe.audits.plan import deployment_plan, is_published
        from nextframe.audits.runs import record

        run = record(evidence, source="cli", kind=kind)
    except Exception as exc:
        print(f"warning: the audit was not recorded: {exc}", file=sys.stderr)
        return None
    published = is_published(run)
    if published:
        print(f"recorded as audit {run.pk}, published: GET /v1/models shows it", file=sys.stderr)
    else:
        try:
            wanted = _describe_plan(deployment_plan(kind))
        except ValueError:
            wanted = "unusable audit settings"
        print(f"recorded as audit {run.pk}, NOT published: it ran {_describe_plan(evidence.get('plan'))}, "
              f"the deployment audits {wanted} (NEXTFRAME_AUDIT_SIZE, NEXTFRAME_AUDIT_SESSIONS); "
              "GET /v1/models keeps showing runs of the deployment's plan", file=sys.stderr)
    return {"audit_id": run.pk, "published": published}


def _describe_plan(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "an unknown plan"
    text = f"{plan.get('width')}x{plan.get('height')} at {plan.get('fps'):g} fps, {plan.get('sessions')} sessions"
    extra = [f"{k}={plan[k]}" for k in ("controls", "probe_param", "frames") if plan.get(k) is not None]
    return text + (f" ({', '.join(extra)})" if extra else "")


async def _live(args: argparse.Namespace, plan: Any, django_ready: bool) -> Any:
    from inference.audit import audit_live
    from inference.audit.transport import Transport

    if args.url:
        from inference.audit.ws_transport import WebSocketTransport

        transport: Transport = WebSocketTransport(args.url, args.key)
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


def _clip(args: argparse.Namespace, width: int, height: int, sessions: int, django_ready: bool) -> Any:
    fps = int(args.fps)
    if args.url:
        from inference.audit.clip_rest import audit_clip_url

        return audit_clip_url(args.url, args.key, args.model, width=width, height=height, fps=fps, sessions=sessions)
    from inference.audit.clip import audit_clip

    if not django_ready:  # a private process: nothing else runs here
        return audit_clip(args.model, width=width, height=height, fps=fps, sessions=sessions)
    from nextframe.audits.transport import clip_reservation

    # On a deployment's node the render takes a clip-priority pool lease, like a clip job.
    with clip_reservation(args.model, width, height, fps) as guard:
        return audit_clip(args.model, width=width, height=height, fps=fps, sessions=sessions, guard=guard)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_numbers(args)
        if args.size is not None:
            _size(args.size)  # a malformed size is refused before anything starts
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    django_ready = not args.url and _deployment_configured(args) and _setup_django(args.data_dir)
    if not django_ready and not args.url:
        _load_extra_engines()

    from inference.audit import AuditError, AuditPlan, AuditPlanError
    from inference.client import LiveClientError
    from inference.engines import EngineError, UnknownModel

    try:
        width, height, sessions = _defaults(args, django_ready)
        try:
            plan = AuditPlan(sessions=sessions, width=width, height=height, fps=args.fps,
                             controls=args.controls, probe_param=args.probe_param)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not args.url:
            _check_model(args, width, height, plan)
        if args.clip:
            ev = _clip(args, width, height, sessions, django_ready)
        else:
            ev = asyncio.run(_live(args, plan, django_ready))
    except UnknownModel as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except (UsageError, AuditPlanError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (AuditError, EngineError, LiveClientError, OSError) as exc:
        print(f"error: audit failed: {exc}", file=sys.stderr)
        return 1
    if not args.url:
        from inference.audit.version import code_version

        ev.code_version = code_version(args.model)
    evidence = ev.as_dict()
    recorded = _record(evidence, "clip" if args.clip else "live") if django_ready and not args.no_record else None
    if args.json:
        print(json.dumps({**evidence, "recorded_as": recorded} if recorded else evidence, default=str))
    else:
        from inference.audit.report import format_table

        print(format_table(ev))
    if args.expect and ev.tier != args.expect:
        return 3
    return 0
