"""Shared names, lab hosts and a playbook runner for the migrate scenario's tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _shared():
    """molecule/shared/labtests.py, what every scenario's verifier shares."""
    spec = importlib.util.spec_from_file_location("labtests", ROOT / "molecule" / "shared" / "labtests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


labtests = _shared()
inspect, lab_host, playbook = labtests.inspect, labtests.lab_host, labtests.playbook

# Same values as molecule/migrate/vars/scenario.yml.
IMAGE = "ferry-lab/busybox:latest"
SERVICE = "ferry-mig-web"
VOLUME = "ferry-mig-page"
NETWORK = "ferry-mig-net"
ALIAS = "www"
BIND = "/srv/ferry-mig/conf"
PORT = 18080
DIGEST_LABEL = "ferry.docker.config-digest"
CURL = "curl -fsS --connect-timeout 5 --max-time 30"  # every HTTP check gives up on a host that does not answer


@pytest.fixture(scope="session")
def lab():
    """The three lab hosts as testinfra hosts."""
    return {name: lab_host(name) for name in ("host1", "host2", "host3")}


def volume_checksums(host, volume):
    """{relative path: sha256} of every file in a named volume on host."""
    data = inspect(host, "volume", volume)
    assert data is not None, f"volume {volume} is missing on {host.backend.get_hostname()}"
    out = host.check_output(f"cd {data['Mountpoint']} && find . -type f | sort | xargs -r sha256sum")
    return dict(reversed(line.split(None, 1)) for line in out.splitlines())


def start_service(host, name, volume, port, network=NETWORK, extra_args=""):
    """Start one instance of the sample service on host (as molecule/migrate/tasks/service.yml does)."""
    host.run_expect([0, 1], f"docker network create --subnet 10.231.0.0/24 {network}")
    host.run_expect([0], f"mkdir -p {BIND} && echo ok > {BIND}/ready")
    host.run_expect(
        [0],
        f"docker run --pull never -d --name {name} --init --restart unless-stopped -p {port}:80 -e GREETING=hi "
        f"-l ferry.test=migrate --network {network} --network-alias {ALIAS} "
        f"--mount type=volume,source={volume},target=/www --mount type=bind,source={BIND},target=/conf,readonly "
        f"--health-cmd 'test -s /conf/ready && wget -q -O /dev/null http://127.0.0.1/index.html' "
        f"--health-interval 2s --health-retries 3 {extra_args} {IMAGE} "
        f"sh -c 'mkdir -p /www && echo \"<h1>served by {name}</h1>\" > /www/index.html && exec httpd -f -p 80 -h /www'",
    )


def wait_healthy(host, name, seconds=60):
    host.run_expect(
        [0],
        f"timeout {seconds} sh -c 'until docker inspect -f {{{{.State.Health.Status}}}} {name} | grep -qx healthy;"
        " do sleep 1; done'",
    )
