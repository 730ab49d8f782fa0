"""Shared names, lab hosts, psql and a playbook runner for the postgres scenario's tests."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
INVENTORY = ROOT / "lab/.state/inventory.ini"
# Same values as molecule/postgres/vars/scenario.yml.
IMAGE = "ferry-lab/postgres:latest"
WORKLOAD = "ferry-lab/busybox:latest"
SERVICE = "ferry-pg-db"
VOLUME = "ferry-pg-data"
DATA = "/var/lib/postgresql/15/main"
STATE_DIR = "/var/lib/ferry-pg-test"
PLAYBOOK_TIMEOUT = 600  # seconds; a playbook run that takes longer has hung


def lab_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


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


def inspect(host, kind, name):
    """`docker <kind> inspect` of one object on host, or None if it does not exist."""
    out = host.run(f"docker {kind} inspect {name}")
    return json.loads(out.stdout)[0] if out.rc == 0 else None


def volume_root(host, volume):
    """Mode, owner and group (numeric) of a named volume's root directory on host."""
    data = inspect(host, "volume", volume)
    assert data is not None, f"volume {volume} is missing on {host.backend.get_hostname()}"
    return host.check_output(f"stat -c '%a %u %g' {data['Mountpoint']}")


def playbook(name, extra, tmp_path, expect_rc=0):
    """Run playbooks/<name>.yml on the lab with extra vars; return (process, report or None)."""
    report = tmp_path / f"{name}-report.json"
    extra = {f"{name}_report_path": str(report), **extra}
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_HOST_KEY_CHECKING="true")
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "--inventory",
        str(INVENTORY),
        "--extra-vars",
        json.dumps(extra),
        str(ROOT / f"playbooks/{name}.yml"),
    ]
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=PLAYBOOK_TIMEOUT
    )
    if expect_rc is not None:
        assert proc.returncode == expect_rc, proc.stdout[-6000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text()) if report.exists() else None
    return proc, data
