"""infra/ checked as far as this machine allows (infra/README.md): the YAML parses and wires what
operations rely on (probes on /readyz and /healthz, a preStop and a kill timeout that cover the
drain, GPU limits, exactly one beat, PodDisruptionBudgets that select real pods), the commands name
modules that exist with the same WebSocket limits as `nextframe up`, `nginx -t` passes (Debian's
nginx) and `kubectl kustomize` builds. No Docker daemon here: the images are not built."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nextframe.cli import websocket_size_args

pytestmark = pytest.mark.profile("embedded")

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
WEB_MODULE = "nextframe.web"


def k8s_documents() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), f"kustomization lists a missing file: {name}"
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "Job"}]


def containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def command_of(container: dict) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def test_every_yaml_file_parses():
    files = sorted(INFRA.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_web_commands_everywhere_use_the_servers_module_and_limits():
    """Procfile, Dockerfiles, compose and Kubernetes start nodes the way `nextframe up` does."""
    limits = " ".join(websocket_size_args())
    assert importlib.util.find_spec(WEB_MODULE) and importlib.util.find_spec("nextframe.celery")
    commands = [line.split(":", 1)[1] for line in (INFRA / "Procfile").read_text().splitlines()
                if line and not line.startswith("#") and WEB_MODULE in line]
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        cmd = re.search(r'^CMD (\[.*?\])$', (INFRA / "docker" / dockerfile).read_text().replace("\\\n", ""), re.M | re.S)
        assert cmd, dockerfile
        commands.append(" ".join(yaml.safe_load(cmd.group(1))))
    commands += [" ".join(command_of(c)) for w in workloads(k8s_documents()) for c in containers(w)
                 if WEB_MODULE in command_of(c)]
    assert len(commands) >= 6
    for command in commands:
        assert limits in command and "--proxy-headers" in command and "nextframe.asgi:application" in command, command


def test_dockerfiles_copy_what_exists_and_pin_the_projects_torch():
    pin = re.search(r"torch==([0-9.]+)", (ROOT / "Makefile").read_text()).group(1)
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (INFRA / "docker" / dockerfile).read_text()
        assert f'"torch=={pin}"' in text and "USER nextframe" in text
        for source in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, re.M):
            for item in source.split():
                assert (ROOT / item).exists(), f"{dockerfile} copies a missing {item}"
        assert re.search(r"^FROM \S+:\S+$", text, re.M), "base image pinned by tag"


def test_compose_wires_probes_gpus_the_drain_and_exactly_one_beat():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    beats = [name for name, s in services.items() if "beat" in s.get("command", [])]
    assert beats == ["beat"] and services["beat"].get("deploy", {}).get("replicas", 1) == 1
    for name in ("edge", "gpu-1"):
        service = services[name]
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert int(service["stop_grace_period"].rstrip("s")) >= 20 + 5  # the drain's default grace + margin
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["edge"]["environment"]["NEXTFRAME_CPU_CAPACITY"] == "0"
    for name in ("gpu-1", "worker"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in ("edge", "gpu-1", "worker"):
        assert "media:/data/media" in services[name]["volumes"]  # clip files are shared
    for build in (s["build"] for s in services.values() if "build" in s):
        assert (INFRA / build["context"] / build["dockerfile"]).is_file()
    for mount in services["nginx"]["volumes"]:
        assert (INFRA / mount.split(":")[0]).is_file()
    assert (INFRA / "nextframe.env.example").is_file()


def test_kubernetes_probes_drain_gpus_beat_and_disruption_budgets():
    docs = k8s_documents()
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    grace = float(config["NEXTFRAME_SHUTDOWN_GRACE_S"])
    web = [w for w in workloads(docs) for c in containers(w) if WEB_MODULE in command_of(c)]
    assert {w["metadata"]["name"] for w in web} == {"nextframe-edge", "gpu"}
    for workload in web:
        pod = workload["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + grace + 5
    gpu_limited = {w["metadata"]["name"] for w in workloads(docs) for c in containers(w)
                   if c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == 1}
    assert gpu_limited == {"gpu", "nextframe-worker"}
    beats = [w for w in workloads(docs) for c in containers(w) if command_of(c)[:4] == ["celery", "-A", "nextframe.celery", "beat"]]
    assert len(beats) == 1 and beats[0]["spec"]["replicas"] == 1 and beats[0]["spec"]["strategy"]["type"] == "Recreate"
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)]
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert len(budgets) >= 2
    for selector in [b["spec"]["selector"]["matchLabels"] for b in budgets] + [
            d["spec"]["selector"] for d in docs if d["kind"] == "Service"]:
        assert any(selector.items() <= labels.items() for labels in pod_labels), f"selects no pod: {selector}"


def test_procfile_has_one_command_per_process_and_at_most_one_beat():
    names = [line.split(":", 1)[0] for line in (INFRA / "Procfile").read_text().splitlines()
             if line and not line.startswith("#")]
    assert len(names) == len(set(names)) and {"release", "edge", "web", "worker"} <= set(names)
    beats = [line for line in (INFRA / "Procfile").read_text().splitlines() if " beat" in line and not line.startswith("#")]
    assert len(beats) <= 1


def test_nginx_accepts_the_configuration(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx): `nginx -t` not run")
    # The deployment's host names do not resolve here: the same upstream file on loopback.
    upstreams = re.sub(r"server [a-z0-9-]+:8000", "server 127.0.0.1:8000",
                       (INFRA / "nginx" / "upstreams.conf").read_text()).replace("127.0.0.11", "127.0.0.1")
    (tmp_path / "upstreams.conf").write_text(upstreams)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n  include {tmp_path}/upstreams.conf;\n  include {INFRA}/nginx/nextframe.conf;\n}}\n")
    result = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_kustomize_builds_the_manifests():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize infra/k8s` not run")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert all(d["metadata"].get("namespace") == "nextframe" for d in built if d["kind"] != "Namespace")
    assert len(built) == len(k8s_documents())


def test_the_shipped_nginx_config_routes_live_to_gpu_nodes_and_hides_metrics():
    text = (INFRA / "nginx" / "nextframe.conf").read_text()
    live = re.search(r"location = /v1/live \{(.*?)\n    \}", text, re.S).group(1)
    assert "proxy_pass http://nextframe_gpu;" in live and "$http_upgrade" in live
    assert re.search(r"location = /metrics \{\s*return 404;", text)
    # Every location that sets its own headers repeats the forwarding ones (nginx does not inherit them).
    for block in re.findall(r"location [^{]+\{(.*?)\n    \}", text, re.S):
        if "proxy_pass" in block:
            assert "X-Forwarded-For" in block and "X-Forwarded-Proto" in block, block
