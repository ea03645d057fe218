"""A scaled-out NextFrame on one machine: two GPU nodes (CPU devices), an edge node, a Celery worker
and exactly one beat on a PostgreSQL and a Redis, with nginx in front when it is installed.

    infra/local-cluster/run [--database-url URL] [--redis-url URL] [--data-dir DIR] [--no-nginx]
    (the same as `python -m nextframe.localcluster ...`)

The processes are the ones `infra/Procfile` names, started with the environment `infra/README.md`
describes; nginx runs unprivileged under a prefix of its own with the shipped server block
(`infra/nginx/nextframe.conf`: WebSockets, limits, sticky routing by URL to `/nodes/<node>/v1/live`)
and a generated upstreams file pointing at the local ports. Ctrl-C or SIGTERM stops everything
(web nodes drain: their sessions end with `shutdown`).

`LocalCluster` is the same thing as a context manager on free ports, for the fault and soak tests
(tests/test_faults.py, tests/test_soak.py): it can kill, stop and restart any one process.
Nothing here imports Django: every process, the migrations included, is a child.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
NGINX_SERVER_CONF = REPO / "infra" / "nginx" / "nextframe.conf"
NGINX_BINARY = "/usr/sbin/nginx"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/nextframe_cluster"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT_S = 180.0
# After SIGTERM: the web nodes' drain (NEXTFRAME_SHUTDOWN_GRACE_S, 20 s by default) plus a margin.
STOP_MARGIN_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _websocket_limits() -> list[str]:
    # The same limits as `nextframe up` (nextframe.cli.websocket_size_args), without importing Django.
    from inference.codec import MAX_FRAME_BYTES
    from inference.protocol import INPUT_HEADER_BYTES

    limit = str(MAX_FRAME_BYTES + INPUT_HEADER_BYTES + (1 << 20))
    return ["--websocket-max-message-size", limit, "--websocket-max-frame-size", limit]


@dataclass
class ClusterProcess:
    """One process of the cluster: how to start it, and the running child."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None  # web nodes and nginx
    proc: subprocess.Popen | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open for the child's life; closed in wait()
        self._log.write(f"--- started {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        self._log.flush()
        # Its own process group: a terminal's Ctrl-C reaches the cluster runner alone, which then
        # gives each child exactly one SIGTERM (a web node's drain signal).
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, process_group=0)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """Wait for the child to exit (SIGKILL past `timeout`); its exit status."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=max(0.1, timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""


class LocalCluster:
    """Two GPU nodes, one edge node, a Celery worker, one beat (and nginx) on free loopback ports.

    `env` is added to every process's environment (test settings such as short lease TTLs). The
    database must exist; it is migrated on start. The organisation `default` and one API key are
    created on the first start (`key`; None when the database had an organisation already)."""

    def __init__(self, database_url: str, redis_url: str, data_dir: str | Path, *, gpu_nodes: int = 2,
                 nginx: bool | None = None, env: dict[str, str] | None = None, host: str = "127.0.0.1",
                 worker: bool = True, beat: bool = True) -> None:
        self.database_url, self.redis_url = database_url, redis_url
        self.data_dir = Path(data_dir).resolve()
        self.log_dir = self.data_dir / "logs"
        self.host = host
        self.extra_env = dict(env or {})
        self.use_nginx = nginx if nginx is not None else bool(shutil.which("nginx") or Path(NGINX_BINARY).exists())
        self.gpu_names = [f"gpu-{i}" for i in range(1, gpu_nodes + 1)]
        self.with_worker, self.with_beat = worker, beat
        self.processes: dict[str, ClusterProcess] = {}
        self.key: str | None = None
        self.nginx_port: int | None = None

    # --- addresses ------------------------------------------------------------------------------

    def node_base(self, name: str) -> str:
        """http://host:port of one web node (`gpu-1`, `gpu-2`, `edge`), not through nginx."""
        return f"http://{self.host}:{self.processes[name].port}"

    def node_ws(self, name: str) -> str:
        """The live endpoint of one node, straight to it."""
        return f"ws://{self.host}:{self.processes[name].port}/v1/live"

    @property
    def base(self) -> str:
        """Where a client goes for REST and the dashboard: nginx, else the edge node."""
        return f"http://{self.host}:{self.nginx_port}" if self.nginx_port else self.node_base("edge")

    @property
    def ws(self) -> str:
        """Where a client opens live sessions: nginx's /v1/live (spread over the GPU nodes), else the edge
        node, which places the session and redirects it to a live GPU node (`session.redirect`). Not a
        fixed GPU node: the front door must outlive any one of them (the fault tests kill one)."""
        return f"ws://{self.host}:{self.nginx_port}/v1/live" if self.nginx_port else self.node_ws("edge")

    def routed_ws(self, name: str) -> str:
        """A GPU node's live endpoint through nginx's sticky-by-URL route (direct without nginx)."""
        return f"ws://{self.host}:{self.nginx_port}/nodes/{name}/v1/live" if self.nginx_port else self.node_ws(name)

    # --- environment and commands ----------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NEXTFRAME_", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS"))}
        env.update({
            "DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
            "NEXTFRAME_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1",
            "NEXTFRAME_AUDIT_ON_STARTUP": "0",
            # Behind nginx every client is nginx's address: the proxy limits per real client.
            "NEXTFRAME_HTTP_MAX_CONNECTIONS_PER_CLIENT": "0",
        })
        env.update(self.extra_env)
        return env

    def node_env(self, name: str, port: int) -> dict[str, str]:
        env = self.base_env()
        if name == "edge":
            env["NEXTFRAME_CPU_CAPACITY"] = "0"  # no live sessions on the edge node
            env.setdefault("NEXTFRAME_NODE_ID", "edge")
        else:
            env["NEXTFRAME_NODE_ID"] = name
            # Where a session.redirect to this node sends the client (issue 16 item 1): its sticky
            # route through nginx, or the node itself without nginx.
            public = (f"ws://{self.host}:{self.nginx_port}/nodes/{name}/v1/live" if self.nginx_port
                      else f"ws://{self.host}:{port}/v1/live")
            env["NEXTFRAME_PUBLIC_URL"] = public
        return env

    def _web(self, name: str, port: int) -> ClusterProcess:
        argv = [sys.executable, "-m", "nextframe.web", "-b", self.host, "-p", str(port), "--proxy-headers",
                *_websocket_limits(), "nextframe.asgi:application"]
        return ClusterProcess(name, argv, self.node_env(name, port), self.log_dir / f"{name}.log", port)

    def _worker(self) -> ClusterProcess:
        env = self.base_env()
        # The clip worker is a node of its own in the pool (as in infra/compose.yaml): sharing a web
        # node's id, its device registrations (no URL, not draining) would overwrite that node's.
        env["NEXTFRAME_NODE_ID"] = "worker-1"
        argv = [sys.executable, "-m", "celery", "-A", "nextframe.celery", "worker", "-Q", "clips,maintenance",
                "--concurrency", "1", "--prefetch-multiplier", "1", "--without-mingle", "--without-gossip",
                "--loglevel", "INFO", "--hostname", "worker@worker-1"]
        return ClusterProcess("worker", argv, env, self.log_dir / "worker.log")

    def _beat(self) -> ClusterProcess:
        argv = [sys.executable, "-m", "celery", "-A", "nextframe.celery", "beat", "--loglevel", "INFO",
                "--schedule", str(self.data_dir / "celerybeat-schedule")]
        return ClusterProcess("beat", argv, self.base_env(), self.log_dir / "beat.log")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `nextframe ARGS` against the cluster's database and Redis."""
        return subprocess.run([sys.executable, "-m", "nextframe.cli", *args], env=self.base_env(),
                              capture_output=True, text=True, timeout=timeout)

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Migrate, start every process, wait until each web node answers /healthz."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.key = self._release()
        if self.use_nginx:
            self.nginx_port = free_port(self.host)
        for name in [*self.gpu_names, "edge"]:
            self.processes[name] = self._web(name, free_port(self.host))
        if self.with_worker:
            self.processes["worker"] = self._worker()
        if self.with_beat:
            self.processes["beat"] = self._beat()
        # A safety net: children live in process groups of their own, so a caller that dies without
        # stop() (an interrupted test run) would leave them running.
        atexit.register(self._kill_leftovers)
        try:
            for process in self.processes.values():
                process.start()
            if self.use_nginx:
                self.processes["nginx"] = self._nginx()
                self.processes["nginx"].start()
            self.wait_healthy(*self.gpu_names, "edge", *(["nginx"] if self.use_nginx else []))
        except BaseException:
            self.stop()
            raise
        return self

    def _release(self) -> str | None:
        """The release step (migrations) and, on the first start, the `default` organisation's key."""
        code = ("import django; django.setup()\n"
                "from django.core.management import call_command\n"
                "call_command('migrate', interactive=False, verbosity=0)\n"
                "from nextframe.cli import bootstrap_default_org\n"
                "print('KEY', bootstrap_default_org() or '')\n")
        env = dict(self.base_env(), DJANGO_SETTINGS_MODULE="nextframe.settings")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{out.stdout}\n{out.stderr}")
        key = [line.split(" ", 1)[1].strip() for line in out.stdout.splitlines() if line.startswith("KEY ")]
        return key[-1] if key and key[-1] else None

    def wait_healthy(self, *names: str, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until each named web node (or nginx) answers /healthz with 200."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            name = pending[0]
            process = self.processes[name]
            if not process.alive():
                raise RuntimeError(f"{name} exited with {process.proc and process.proc.returncode}:\n"
                                   f"{process.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer /healthz within {timeout:g} s:\n{process.log_tail()}")
            url = f"http://{self.host}:{process.port}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        pending.pop(0)
                        continue
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.2)

    def kill(self, name: str, signum: int = signal.SIGKILL, group: bool = False) -> None:
        """Send one process (with `group`: its whole process group, a Celery worker's pool children
        too, as when its container dies) a signal, SIGKILL by default, and reap it."""
        process = self.processes[name]
        if group and process.alive():
            os.killpg(process.pid, signum)
        else:
            process.signal(signum)
        process.wait(timeout=STOP_MARGIN_S + 30 if signum != signal.SIGKILL else 10)

    def restart(self, name: str, wait: bool = True) -> None:
        """Start a process again that was killed or stopped (same port, same environment)."""
        process = self.processes[name]
        if process.alive():
            raise RuntimeError(f"{name} is still running")
        process.start()
        if wait and process.port is not None:
            self.wait_healthy(name)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM to every process at once (web nodes drain), then wait; returns the exit statuses."""
        grace = float(self.base_env().get("NEXTFRAME_SHUTDOWN_GRACE_S", "20"))
        for process in self.processes.values():
            if process.name == "nginx":
                process.signal(signal.SIGQUIT)  # nginx's graceful stop
            else:
                process.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + STOP_MARGIN_S
        return {name: process.wait(deadline - time.monotonic()) for name, process in self.processes.items()}

    def _kill_leftovers(self) -> None:
        for process in self.processes.values():
            if process.alive():
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # its group: pool children, nginx workers
                except ProcessLookupError:
                    pass

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- nginx -----------------------------------------------------------------------------------

    def nginx_config(self) -> str:
        """nginx.conf for an unprivileged nginx: its own prefix and temp folders, the shipped server
        block on the chosen port, upstreams and the node map pointing at this cluster's ports."""
        assert self.nginx_port is not None
        prefix = self.data_dir / "nginx"
        gpu = "\n".join(f"    server {self.host}:{self.processes[n].port} max_fails=3 fail_timeout=10s;"
                        for n in self.gpu_names)
        nodes = "\n".join(f"    {n} {self.host}:{self.processes[n].port};" for n in self.gpu_names)
        server = NGINX_SERVER_CONF.read_text().replace("listen 80;", f"listen {self.host}:{self.nginx_port};")
        if f"listen {self.host}:{self.nginx_port};" not in server:
            raise RuntimeError(f"{NGINX_SERVER_CONF} has no `listen 80;` to replace")
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(f"    {kind}_temp_path {prefix}/tmp/{kind};" for kind in
                         ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        return f"""# Generated by nextframe.localcluster: do not edit.
{user}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
{temp}
    upstream nextframe_edge {{
        least_conn;
        server {self.host}:{self.processes['edge'].port} max_fails=3 fail_timeout=10s;
        keepalive 16;
    }}
    upstream nextframe_gpu {{
        least_conn;
{gpu}
    }}
    # /nodes/<node>/v1/live: the node's own address (sticky by URL); an unknown node gets 502.
    map $nf_node $nf_node_address {{
        default {self.host}:9;
{nodes}
    }}
{server}
}}
"""

    def _nginx(self) -> ClusterProcess:
        prefix = self.data_dir / "nginx"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(self.nginx_config())
        binary = shutil.which("nginx") or NGINX_BINARY
        check = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed for {conf}:\n{check.stderr}")
        return ClusterProcess("nginx", [binary, "-p", str(prefix), "-c", str(conf)], dict(os.environ),
                              self.log_dir / "nginx.log", self.nginx_port)

    # --- what the runner prints ------------------------------------------------------------------

    def describe(self) -> str:
        lines = [f"NextFrame local cluster (data dir {self.data_dir}, logs {self.log_dir})"]
        if self.nginx_port:
            lines += [f"  nginx      {self.base}/   live: {self.ws}",
                      *(f"             {n}: {self.routed_ws(n)}" for n in self.gpu_names)]
        for name in [*self.gpu_names, "edge"]:
            lines.append(f"  {name:<10} {self.node_base(name)}   /healthz /readyz /metrics   live: {self.node_ws(name)}")
        for name in ("worker", "beat"):
            if name in self.processes:
                lines.append(f"  {name:<10} pid {self.processes[name].pid}")
        return "\n".join(lines)


def metrics(base: str) -> str:
    """A node's /metrics (loopback, no token)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        return response.read().decode()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample of a Prometheus text exposition (None when absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric != name:
            continue
        if labels and any(f'{k}="{v}"' not in rest for k, v in labels.items()):
            continue
        return float(value)
    return None


@contextmanager
def local_cluster(database_url: str, redis_url: str, data_dir: str | Path | None = None,
                  **kwargs: object) -> Iterator[LocalCluster]:
    """A started LocalCluster (a temporary data dir unless given), stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="nf-cluster-") as tmp:
        cluster = LocalCluster(database_url, redis_url, data_dir or tmp, **kwargs)  # type: ignore[arg-type]
        with cluster:
            yield cluster


# --- the one command ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infra/local-cluster/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
                        help="PostgreSQL (the database must exist); default $DATABASE_URL or %(default)s")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
                        help="Redis; default $REDIS_URL or %(default)s")
    parser.add_argument("--data-dir", default=os.environ.get("NEXTFRAME_CLUSTER_DIR", ".nextframe-cluster"),
                        help="shared data dir (media, logs, nginx prefix); default %(default)s")
    parser.add_argument("--gpu-nodes", type=int, default=2)
    parser.add_argument("--no-nginx", action="store_true", help="no nginx in front even when installed")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for every process (repeatable)")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.set)
    cluster = LocalCluster(args.database_url, args.redis_url, args.data_dir, gpu_nodes=args.gpu_nodes,
                           nginx=False if args.no_nginx else None, env=env)
    stopping = False

    def stop(signum=None, frame=None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        cluster.start()
    except Exception as exc:  # noqa: BLE001 - said on the terminal, with the failing log
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(cluster.describe())
    if cluster.key:
        print(f"Created organisation 'default'. Its API key (shown once, keep it):\n  {cluster.key}")
    else:
        print("The database has its organisations already; a new key: DATABASE_URL=... REDIS_URL=... "
              "nextframe createkey --org default")
    print("Press Ctrl-C to stop.", flush=True)
    exit_code = 0
    while not stopping:
        dead = [p for p in cluster.processes.values() if not p.alive()]
        if dead:
            for process in dead:
                print(f"error: {process.name} exited with {process.proc and process.proc.returncode}; "
                      f"stopping\n{process.log_tail(20)}", file=sys.stderr)
            exit_code = 1
            break
        time.sleep(0.5)
    print("Stopping (web nodes drain: live sessions end with `shutdown`) ...", flush=True)
    codes = cluster.stop()
    print("Stopped: " + json.dumps(codes))
    return exit_code or int(any(code not in (0, None) for name, code in codes.items() if name != "nginx"))


if __name__ == "__main__":
    sys.exit(main())
