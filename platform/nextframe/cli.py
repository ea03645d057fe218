"""The `nextframe` command: run the platform, manage tenants and keys, talk to a live endpoint.

    nextframe up [--host 127.0.0.1] [--port 8000] [--data-dir DIR] [--verbose]
    nextframe createorg NAME [--max-live-sessions N] [--gpu-seconds-limit S]
    nextframe createkey --org NAME [--scopes live,clips,read] [--test]
    nextframe createuser EMAIL --org NAME [--role owner|admin|member] [--url http://HOST:PORT]
    nextframe revokekey KEY_OR_ID
    nextframe live --url ws://.../v1/live --key KEY --model ID [--input pattern|FILE] [--output F.mp4] [--save-frames DIR]
    nextframe audit --model ID [--json]          (or --url/--key against any protocol v1 endpoint)
    nextframe manage <django management command> ...

Every command honours --data-dir / NEXTFRAME_DATA_DIR and the scaled-out settings
(DATABASE_URL, REDIS_URL).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO


def _setup_django(data_dir: str | None) -> None:
    if data_dir:
        os.environ["NEXTFRAME_DATA_DIR"] = os.path.abspath(os.path.expanduser(data_dir))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nextframe.settings")
    import django

    django.setup()


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="data directory (default: $NEXTFRAME_DATA_DIR or ./.nextframe)")


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# --- up -------------------------------------------------------------------------------------------

FIRST_OWNER_EMAIL = "owner@localhost"


def bootstrap_default_org() -> str | None:
    """On the first run (no organisation yet) create `default`, its owner user (FIRST_OWNER_EMAIL,
    no password: they sign in with a one-time link) and one API key, which is returned."""
    from nextframe.tenancy import actions, members
    from nextframe.tenancy.models import Organization

    if Organization.objects.exists():
        return None
    org = actions.create_org("default")
    _, key = actions.create_key(org, name="created by nextframe up")
    members.ensure_owner(org, FIRST_OWNER_EMAIL)
    return key


def first_owner_signin_token() -> str:
    """A one-time sign-in token for the owner the first run created."""
    from django.contrib.auth import get_user_model

    from nextframe.tenancy import members

    return members.create_signin_link(get_user_model().objects.get(username=FIRST_OWNER_EMAIL))


def _browsable(host: str, port: int) -> str:
    """The server's address as a browser on this machine reaches it (a wildcard bind is not one)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def signin_url(base: str, token: str) -> str:
    from nextframe.tenancy import members

    return base.rstrip("/") + members.signin_path(token)


# A frame up to this much over the largest accepted JPEG still reaches the application, which
# answers it with a non-fatal bad_frame; anything larger is refused by daphne while it arrives
# (close 1009), so memory never grows with what a client sends.
WEBSOCKET_HEADROOM_BYTES = 1 << 20


def websocket_size_args() -> list[str]:
    from inference.codec import MAX_FRAME_BYTES
    from inference.protocol import INPUT_HEADER_BYTES

    limit = str(MAX_FRAME_BYTES + INPUT_HEADER_BYTES + WEBSOCKET_HEADROOM_BYTES)
    return ["--websocket-max-message-size", limit, "--websocket-max-frame-size", limit]


def _wait_for_port(host: str, port: int, child: subprocess.Popen, timeout_s: float = 60.0) -> bool:
    """True once the web server accepts connections (False if it died or took too long)."""
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (None: it can). Checked before anything starts: once
    another server holds the port, waiting for ours to answer there would be fooled by that one."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted does: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _children_commands(host: str, port: int) -> dict[str, list[str]]:
    from nextframe.celery import QUEUES

    return {
        "web": [
            sys.executable, "-m", "nextframe.web", "-b", host, "-p", str(port),
            *websocket_size_args(),
            "nextframe.asgi:application",
        ],
        "worker": [
            sys.executable, "-m", "celery", "-A", "nextframe.celery", "worker",
            "-Q", ",".join(QUEUES), "--concurrency", "1", "--loglevel", "INFO",
            "--without-mingle", "--without-gossip", "--hostname", f"embedded@{host}-{port}",
            # The beat schedule (billing's Stripe sync) runs inside this one embedded worker.
            "--beat", "--schedule", str(_beat_schedule_file()),
        ],
    }


def _beat_schedule_file() -> Path:
    from django.conf import settings

    return Path(settings.DATA_DIR) / "celerybeat-schedule"


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            return b"".join(f.readlines()[-lines:]).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _open_logs(log_dir: Path, names: list[str]) -> dict[str, IO[bytes]]:
    """One append-mode log per child process, each run marked by a line with its start time."""
    log_dir.mkdir(parents=True, exist_ok=True)
    logs: dict[str, IO[bytes]] = {}
    for name in names:
        log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - stays open for the child; closed on stop
        log.write(f"--- nextframe up, {datetime.now(UTC).isoformat(timespec='seconds')} ---\n".encode())
        log.flush()
        logs[name] = log
    return logs


def _report_exit(name: str, code: int | None, log_dir: Path | None) -> None:
    print(f"error: the {name} process exited with code {code}; stopping", file=sys.stderr)
    if log_dir is not None:  # quiet mode: the reason is in its log, not on the terminal
        tail = log_tail(log_dir / f"{name}.log")
        if tail:
            print(f"--- last lines of {log_dir / f'{name}.log'} ---\n{tail.rstrip()}", file=sys.stderr)


# After SIGTERM, how long beyond the web server's drain (SHUTDOWN_GRACE_S) `up` waits for its
# children before it kills them.
STOP_MARGIN_S = 10.0


def cmd_up(args: argparse.Namespace) -> int:
    """Migrate, start the web server and the embedded worker, say where they are; Ctrl-C stops them.

    Quiet by default: the terminal shows the URLs, the key (first run) and how to stop, and the
    children's output (daphne, the Celery banner and warnings, request logs) goes to
    DATA_DIR/logs/web.log and worker.log. --verbose lets the children print to the terminal.
    """
    problem = port_in_use(args.host, args.port)
    if problem:
        return _fail(f"cannot listen on {args.host}:{args.port}: {problem} (another `nextframe up`? choose "
                     "another with --port)")
    _setup_django(args.data_dir)
    from django.conf import settings
    from django.core.management import call_command

    from nextframe.celery import ensure_broker_dirs

    call_command("migrate", interactive=False, verbosity=0)
    ensure_broker_dirs()
    key = bootstrap_default_org()
    signin_token = first_owner_signin_token() if key else None
    children: dict[str, subprocess.Popen] = {}
    env = dict(os.environ, NEXTFRAME_DATA_DIR=str(settings.DATA_DIR), PYTHONUNBUFFERED="1")
    commands = _children_commands(args.host, args.port)
    log_dir = None if args.verbose else Path(settings.DATA_DIR) / "logs"
    logs = _open_logs(log_dir, list(commands)) if log_dir is not None else {}
    stopping = False

    def stop(signum=None, frame=None):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, command in commands.items():
        log = logs.get(name)
        # Their own process group: Ctrl-C in the terminal reaches `up` alone, which then gives each
        # child exactly one SIGTERM (the drain's signal), not the terminal's SIGINT and then ours.
        children[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT if log else None,
                                          stdin=subprocess.DEVNULL, process_group=0)
    exit_code = 0
    # Announce the URLs (and the key) only once the server really answers on them.
    if _wait_for_port(args.host, args.port, children["web"]):
        base = f"http://{args.host}:{args.port}"
        print(f"NextFrame is up (data dir {settings.DATA_DIR}, database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, "
              f"broker {settings.CELERY_BROKER_URL.split(':', 1)[0]})")
        print(f"  REST API   {base}/v1/models   (OpenAPI: {base}/v1/openapi.json)")
        print(f"  Live       ws://{args.host}:{args.port}/v1/live")
        print(f"  Dashboard  {base}/dashboard/   Health: {base}/healthz  {base}/readyz")
        if key and signin_token:
            # The link lasts SIGNIN_LINK_TTL_S; a new one: nextframe createuser owner@localhost --org default.
            print(f"Sign in to the dashboard as {FIRST_OWNER_EMAIL}, owner of 'default' (one-time link, valid "
                  f"{settings.SIGNIN_LINK_TTL_S // 60} min): {signin_url(_browsable(args.host, args.port), signin_token)}")
            print("Created organisation 'default'. Its API key (shown once, keep it):")
            print(f"  {key}")
        if log_dir is not None:
            print(f"Logs: {log_dir}/web.log, worker.log (--verbose shows them here). Press Ctrl-C to stop.")
        else:
            print("Press Ctrl-C to stop.")
        sys.stdout.flush()
    elif not stopping:
        web = children["web"]
        if web.poll() is None:
            print(f"error: the web server did not answer on {args.host}:{args.port} within 60 s; stopping", file=sys.stderr)
        else:
            _report_exit("web", web.returncode, log_dir)
        if key:  # created in the database already: it must not be lost with a server that failed
            print(f"Created organisation 'default'. Its API key (shown once, keep it):\n  {key}\n"
                  f"A sign-in link for its owner: nextframe createuser {FIRST_OWNER_EMAIL} --org default", file=sys.stderr)
        exit_code, stopping = 1, True
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                _report_exit(name, child.returncode, log_dir)
                exit_code, stopping = 1, True
                break
        time.sleep(0.3)
    if any(child.poll() is None for child in children.values()):
        print(f"Stopping: live sessions end with reason `shutdown` (at most {settings.SHUTDOWN_GRACE_S:g} s) ...")
        sys.stdout.flush()
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    # The web server drains for up to SHUTDOWN_GRACE_S; the worker finishes the clip batch it runs.
    deadline = time.monotonic() + settings.SHUTDOWN_GRACE_S + STOP_MARGIN_S
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"warning: the {name} process did not stop in time; killed", file=sys.stderr)
            child.kill()
            child.wait()
            exit_code = 1
        else:
            if child.returncode != 0 and exit_code == 0:
                print(f"warning: the {name} process exited with code {child.returncode} while stopping", file=sys.stderr)
                exit_code = 1
    for log in logs.values():
        log.close()
    print("NextFrame stopped.")
    return exit_code


# --- tenants and keys -----------------------------------------------------------------------------

def cmd_createorg(args: argparse.Namespace) -> int:
    _setup_django(args.data_dir)
    from django.utils.text import slugify

    from nextframe.tenancy import actions

    if slugify(args.name) != args.name or not args.name:
        return _fail(f"organisation name {args.name!r} must be a slug: lowercase letters, digits, '-' or '_'")
    if args.max_live_sessions < 0:
        return _fail("--max-live-sessions must be >= 0")
    limit = None
    if args.gpu_seconds_limit is not None:
        try:
            limit = Decimal(args.gpu_seconds_limit)
        except InvalidOperation:
            return _fail(f"--gpu-seconds-limit {args.gpu_seconds_limit!r} is not a number")
        if not limit.is_finite() or limit < 0:
            return _fail("--gpu-seconds-limit must be >= 0")
    try:
        org = actions.create_org(args.name, max_live_sessions=args.max_live_sessions, gpu_seconds_limit=limit)
    except actions.TenancyError as exc:
        return _fail(str(exc))
    print(f"Created organisation {org.name} (max live sessions {org.max_live_sessions}, "
          f"monthly GPU-seconds {org.gpu_seconds_limit if org.gpu_seconds_limit is not None else 'unlimited'})")
    return 0


def _organisation(name: str):
    """The organisation called `name`, or None (after _setup_django)."""
    from nextframe.tenancy.models import Organization

    return Organization.objects.filter(name=name).first()


def cmd_createkey(args: argparse.Namespace) -> int:
    _setup_django(args.data_dir)
    from nextframe.tenancy import actions

    org = _organisation(args.org)
    if org is None:
        return _fail(f"no organisation named {args.org!r} (create it with: nextframe createorg {args.org})")
    try:
        row, key = actions.create_key(org, scopes=args.scopes, test=args.test, name=args.name or "")
    except actions.TenancyError as exc:
        return _fail(str(exc))
    print(f"Created {row.mode} key {row.prefix}… for {org.name} with scopes {','.join(row.scopes)}. Shown once:")
    print(key)
    return 0


def cmd_createuser(args: argparse.Namespace) -> int:
    """Add a dashboard user to an organisation (or find an existing member) and print a one-time
    sign-in link for them."""
    _setup_django(args.data_dir)
    from django.conf import settings

    from nextframe.tenancy import actions, members
    from nextframe.tenancy.models import Membership

    org = _organisation(args.org)
    if org is None:
        return _fail(f"no organisation named {args.org!r} (create it with: nextframe createorg {args.org})")
    email = args.email.strip().lower()
    membership = Membership.objects.filter(organization=org, user__username=email).select_related("user").first()
    if membership is not None:
        user = membership.user
        print(f"{email} is already {membership.role} of {org.name}; a new sign-in link:")
    else:
        try:
            user, _ = members.add_member(org, email, role=args.role, actor_role="owner")
        except actions.TenancyError as exc:
            return _fail(str(exc))
        print(f"Added {email} to {org.name} as {args.role}. One-time sign-in link "
              f"(valid {settings.SIGNIN_LINK_TTL_S // 60} min):")
    print(signin_url(args.url, members.create_signin_link(user)))
    return 0


def cmd_revokekey(args: argparse.Namespace) -> int:
    _setup_django(args.data_dir)
    from nextframe.tenancy import actions

    try:
        row = actions.revoke_key(actions.find_key(args.key))
    except actions.NotFound as exc:
        return _fail(str(exc))
    print(f"Revoked {row.prefix}… of {row.organization.name}")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    """An organisation's usage and invoice preview for a month (this month by default), from the ledger."""
    _setup_django(args.data_dir)
    from billing import reports

    org = _organisation(args.org)
    if org is None:
        return _fail(f"no organisation named {args.org!r} (create it with: nextframe createorg {args.org})")
    try:
        period = reports.month(args.month) if args.month else None
    except reports.ReportError as exc:
        return _fail(str(exc), 2)
    report = reports.billing(org, period)
    limit = report["gpu_seconds_limit"] or "unlimited"
    print(f"{org.name}  {report['current_period']['start'][:7]}  status {report['status']}  plan {report['plan']}")
    print(f"GPU-seconds {report['gpu_seconds_used']} of {limit}; spend {report['spend']} {report['currency']}"
          f" (limit {report['spend_limit'] or 'none'})")
    for line in report["invoice_preview"]["lines"]:
        print(f"  {line['model']:<24} {line['gpu_seconds']:>16} GPU-s x {line['unit_price']:<12} = {line['amount']}")
    print(f"  {'total':<24} {report['invoice_preview']['total']:>50}")
    sync = report["stripe"]
    print(f"Stripe sync {sync['sync']}: {sync['pending_meter_events']} meter event(s) pending, "
          f"last sync {sync['last_sync_at'] or 'never'}")
    return 0


def cmd_manage(args: argparse.Namespace, rest: list[str]) -> int:
    _setup_django(args.data_dir)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["nextframe manage", *rest])
    return 0


# --- entry point ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nextframe", description="NextFrame: live AI video platform")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="migrate, start the web server and an embedded Celery worker")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--verbose", action="store_true",
                    help="show the web server's and the worker's logs here (default: DATA_DIR/logs/*.log)")
    _add_data_dir(up)

    org = sub.add_parser("createorg", help="create an organisation")
    org.add_argument("name")
    org.add_argument("--max-live-sessions", type=int, default=4)
    org.add_argument("--gpu-seconds-limit", default=None)
    _add_data_dir(org)

    key = sub.add_parser("createkey", help="create an API key (printed alone on the last line)")
    key.add_argument("--org", required=True)
    key.add_argument("--scopes", default="live,clips,read")
    key.add_argument("--test", action="store_true", help="a test-mode key (nf_test_...)")
    key.add_argument("--name", default="")
    _add_data_dir(key)

    user = sub.add_parser("createuser", help="add a dashboard user to an organisation; prints a one-time sign-in link")
    user.add_argument("email")
    user.add_argument("--org", required=True)
    user.add_argument("--role", choices=["owner", "admin", "member"], default="member")
    user.add_argument("--url", default=os.environ.get("NEXTFRAME_DASHBOARD_URL", "http://127.0.0.1:8000"),
                      help="the server's address in the printed link (default: $NEXTFRAME_DASHBOARD_URL or "
                           "http://127.0.0.1:8000)")
    _add_data_dir(user)

    revoke = sub.add_parser("revokekey", help="revoke a key by its full string, prefix or id")
    revoke.add_argument("key")
    _add_data_dir(revoke)

    usage_cmd = sub.add_parser("usage", help="an organisation's usage and invoice preview for a month")
    usage_cmd.add_argument("--org", required=True)
    usage_cmd.add_argument("--month", default=None, help="YYYY-MM (default: this month)")
    _add_data_dir(usage_cmd)

    manage = sub.add_parser("manage", help="run a Django management command", add_help=False)
    _add_data_dir(manage)

    sub.add_parser("live", help="run a live session against a protocol v1 endpoint", add_help=False)
    sub.add_parser("audit", help="measure a model's tier (interactive / streaming / fast-batch)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "live":
        from inference.live_cli import main as live_main

        return live_main(argv[1:])
    if argv and argv[0] == "audit":
        from nextframe.audits.cli import main as audit_main

        return audit_main(argv[1:])
    parser = build_parser()
    if argv and argv[0] == "manage":
        args, rest = parser.parse_known_args(argv)
        return cmd_manage(args, rest)
    args = parser.parse_args(argv)
    handlers = {"up": cmd_up, "createorg": cmd_createorg, "createkey": cmd_createkey, "createuser": cmd_createuser, "revokekey": cmd_revokekey,
                "usage": cmd_usage}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
