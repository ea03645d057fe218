"""infra/local-cluster without starting it: the one command answers --help, and the nginx
configuration it generates passes `nginx -t` with the sticky-by-URL route to each GPU node's own
port (the shipped server block, infra/nginx/nextframe.conf, on the cluster's port). The cluster
itself runs in tests/test_faults.py (scaled pass)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nextframe.localcluster import ClusterProcess, LocalCluster

pytestmark = pytest.mark.profile("embedded")

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "infra" / "local-cluster" / "run"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def test_the_one_command_answers_help():
    out = subprocess.run([str(RUN), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--database-url", "--redis-url", "--data-dir", "--no-nginx"):
        assert option in out.stdout


def cluster_on_ports(tmp_path: Path) -> LocalCluster:
    cluster = LocalCluster("postgres://u@127.0.0.1:1/x", "redis://127.0.0.1:1/0", tmp_path, nginx=True)
    cluster.nginx_port = 18080
    for name, port in (("gpu-1", 18001), ("gpu-2", 18002), ("edge", 18003)):
        cluster.processes[name] = ClusterProcess(name, [], {}, tmp_path / f"{name}.log", port)
    return cluster


def test_each_gpu_node_gets_its_own_redirect_url_and_pool_id(tmp_path):
    cluster = cluster_on_ports(tmp_path)
    for name, port in (("gpu-1", 18001), ("gpu-2", 18002)):
        env = cluster.node_env(name, port)
        assert env["NEXTFRAME_NODE_ID"] == name
        assert env["NEXTFRAME_PUBLIC_URL"] == f"ws://127.0.0.1:18080/nodes/{name}/v1/live"
    assert cluster.node_env("edge", 18003)["NEXTFRAME_CPU_CAPACITY"] == "0"


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
def test_the_generated_nginx_config_passes_nginx_t_and_routes_each_node_to_its_port(tmp_path):
    cluster = cluster_on_ports(tmp_path)
    conf = cluster.nginx_config()
    assert "listen 127.0.0.1:18080;" in conf and "listen 80;" not in conf
    assert re.search(r"upstream nextframe_gpu \{[^}]*127\.0\.0\.1:18001[^}]*127\.0\.0\.1:18002", conf)
    assert re.search(r"upstream nextframe_edge \{[^}]*127\.0\.0\.1:18003", conf)
    assert "gpu-1 127.0.0.1:18001;" in conf and "gpu-2 127.0.0.1:18002;" in conf
    process = cluster._nginx()  # writes the file and runs `nginx -t` on it (raises when it fails)
    assert process.argv[0].endswith("nginx") and (tmp_path / "nginx" / "nginx.conf").read_text() == conf
