"""Shared names, lab hosts, psql and a playbook runner for the postgres scenario's tests."""

from __future__ import annotations

import importlib.util
import shlex
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
playbook_command, ROOT_DIR = labtests.playbook_command, labtests.ROOT

SCENARIO = Path(__file__).resolve().parents[1]
# Same values as molecule/postgres/vars/scenario.yml.
IMAGE = "ferry-lab/postgres:latest"
WORKLOAD = "ferry-lab/busybox:latest"
SERVICE = "ferry-pg-db"
VOLUME = "ferry-pg-data"
DATA = "/var/lib/postgresql/15/main"
STATE_DIR = "/var/lib/ferry-pg-test"


@pytest.fixture(scope="session")
def lab():
    """The two lab hosts as testinfra hosts."""
    return {name: lab_host(name) for name in ("host1", "host2")}


def sql_file(name):
    return (SCENARIO / "files" / name).read_text()


def psql(host, container, sql):
    """Run SQL with psql inside the container's own server (as user postgres); return its output."""
    command = f"printf '%s' {shlex.quote(sql)} | docker exec -i {container} psql -X -A -t -q -v ON_ERROR_STOP=1"
    return host.check_output(command).strip()


def checksum(host, container):
    """Row count and md5 of every row of the scenario's table, read with psql."""
    return psql(host, container, sql_file("checksum.sql"))


def start_postgres(host, name, volume, extra_args=""):
    """Start ferry-lab/postgres with its data directory on `volume`, wait for it, fill the table."""
    host.run_expect(
        [0],
        f"docker run -d --name {name} --restart unless-stopped --mount type=volume,source={volume},target={DATA} "
        f"{extra_args} {IMAGE}",
    )
    host.run_expect([0], f"timeout 60 sh -c 'until docker exec {name} pg_isready -q; do sleep 1; done'")
    psql(host, name, sql_file("fill.sql"))


def volume_root(host, volume):
    """Mode, owner and group (numeric) of a named volume's root directory on host."""
    data = inspect(host, "volume", volume)
    assert data is not None, f"volume {volume} is missing on {host.backend.get_hostname()}"
    return host.check_output(f"stat -c '%a %u %g' {data['Mountpoint']}")
