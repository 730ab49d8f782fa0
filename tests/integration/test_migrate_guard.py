# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_migrate_guard with a real guard process and a real Docker engine.

The guard is armed the way a migration arms it, then the "controller" simply stops renewing: the
guard must put the source back by itself, or, when a copy may run on an unreachable target, leave
the source alone and say so. Every container is named ``ferry-it-guard-<random>-*`` and removed,
and every guard process is disarmed or killed, in ``finally``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest
from conftest import _parse_inventory
from ferry_run import run_module
from fixture_image import IMAGE

from ansible_collections.ferry.docker.plugins.module_utils import _journal
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import DIGEST_LABEL

WAIT = 40  # seconds a guard with a 5 s lease may take to act (poll 1 s, ssh connect timeout 10 s)
LAB = Path(__file__).resolve().parents[2] / "lab"


def guard(run_id, journal_dir, **options):
    return run_module("docker_migrate_guard", run_id=run_id, journal_dir=str(journal_dir), **options)


def journal(journal_dir, run_id):
    return json.loads((journal_dir / f"{run_id}.json").read_text())


def wait_until(predicate, seconds=WAIT):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


def gone(pid):
    """The process has exited: no /proc entry, or a zombie its new parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def stopped_source(client, tmp_path):
    """A running busybox container, stopped as a migration would stop it; yields (name, journal dir, run id)."""
    tag = uuid.uuid4().hex[:8]
    name = f"ferry-it-guard-{tag}-web"
    run_id = f"it-guard-{tag}"
    container = client.create_container(IMAGE, command=["sleep", "3600"], name=name)
    client.start(container["Id"])
    client.stop(container["Id"], timeout=1)
    journal_dir = tmp_path / "journal"
    try:
        yield name, journal_dir, run_id
    finally:
        for path in journal_dir.glob("*.json") if journal_dir.exists() else []:
            doc = json.loads(path.read_text())
            # only while that pid is still this run's guard: a guard that exited left its pid free, and this
            # machine's pids (the lab hosts' processes among them) wrap around within minutes
            if _journal.guard_alive(doc):
                try:
                    os.kill(doc["guard"]["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            client.remove_container(container["Id"], force=True)
        except docker.errors.NotFound:
            pass


def running(client, name):
    return client.inspect_container(name)["State"]["Running"]


def test_a_lapsed_lease_puts_the_source_back_without_the_controller(client, stopped_source):
    name, journal_dir, run_id = stopped_source
    armed = guard(run_id, journal_dir, state="armed", timeout=5, containers=[{"name": name, "state_before": "running"}])
    assert not armed.get("failed"), armed.get("msg")
    assert armed["changed"] and armed["guard_alive"]
    pid = armed["journal"]["guard"]["pid"]
    assert not running(client, name)
    assert wait_until(lambda: running(client, name)), "the guard did not start the source again"
    assert wait_until(lambda: journal(journal_dir, run_id)["guard"]["status"] == "fired")
    doc = journal(journal_dir, run_id)
    assert doc["containers"][name]["status"] == "rolled_back"
    # this engine is before Docker 28 and the guard runs as root: it asked for the source's address on its bridge
    bridge = client.inspect_network("bridge")["Options"]["com.docker.network.bridge.name"]
    assert f"asked for its addresses on {bridge}" in doc["containers"][name]["guard"], doc["containers"][name]
    assert wait_until(lambda: gone(pid), 10), "the guard outlived its run"
    late = guard(run_id, journal_dir, state="renewed", phase="transfer")
    assert late.get("failed") and "lost its lease and must not go on" in late["msg"]


def test_renewed_then_disarmed_the_guard_leaves_the_source_alone(client, stopped_source):
    name, journal_dir, run_id = stopped_source
    spec = [{"name": name, "state_before": "running"}]
    assert not guard(run_id, journal_dir, state="armed", timeout=5, containers=spec).get("failed")
    again = guard(run_id, journal_dir, state="armed", timeout=5, containers=spec)
    assert not again["changed"], "arming twice with the same containers changes nothing"
    for phase in ("capture", "transfer", "restore"):
        renewed = guard(run_id, journal_dir, state="renewed", phase=phase)
        assert not renewed.get("failed") and renewed["changed"], renewed.get("msg")
        time.sleep(2)
    assert not running(client, name)
    pid = journal(journal_dir, run_id)["guard"]["pid"]
    disarmed = guard(run_id, journal_dir, state="disarmed")
    assert disarmed["changed"] and not disarmed["guard_alive"]
    assert gone(pid)
    time.sleep(7)  # past the lease: nothing may happen any more
    assert not running(client, name)
    assert [h["phase"] for h in journal(journal_dir, run_id)["containers"][name]["history"][1:]] == [
        "capture",
        "transfer",
        "restore",
    ]


def test_an_unreachable_target_copy_keeps_the_source_stopped(client, stopped_source):
    name, journal_dir, run_id = stopped_source
    target = {"host": "target", "address": "127.0.0.1", "port": closed_port(), "key_comment": run_id}
    spec = [{"name": name, "state_before": "running", "target": "target", "target_name": name}]
    armed = guard(run_id, journal_dir, state="armed", timeout=5, containers=spec, targets=[target])
    assert not armed.get("failed"), armed.get("msg")
    assert not guard(run_id, journal_dir, state="renewed", phase="health").get("failed")
    assert wait_until(lambda: journal(journal_dir, run_id)["guard"]["status"] == "fired")
    entry = journal(journal_dir, run_id)["containers"][name]
    assert entry["status"] == "needs_decision"
    assert "the source stays as it is" in entry["guard"]
    assert not running(client, name), "two copies could be running: the source must stay stopped"


def test_a_second_run_finds_the_lease_taken(client, stopped_source):
    name, journal_dir, run_id = stopped_source
    spec = [{"name": name, "state_before": "running"}]
    assert not guard(run_id, journal_dir, state="armed", timeout=30, containers=spec).get("failed")
    try:
        other = guard(run_id + "-b", journal_dir, state="armed", timeout=30, containers=spec)
        assert other.get("failed") and f"{name} (run {run_id})" in other["msg"]
        assert not (journal_dir / f"{run_id}-b.json").exists()
    finally:
        assert guard(run_id, journal_dir, state="disarmed")["changed"]
    assert not running(client, name)


def test_check_mode_starts_nothing(client, stopped_source):
    name, journal_dir, run_id = stopped_source
    result = run_module(
        "docker_migrate_guard",
        check=True,
        run_id=run_id,
        journal_dir=str(journal_dir),
        state="armed",
        containers=[{"name": name, "state_before": "running"}],
    )
    assert result["changed"] and not result["guard_alive"]
    assert not (journal_dir / f"{run_id}.json").exists()


def sudo1(script, check=True):
    """``script`` as root on the lab's sudo host (logged in as its user, through sudo)."""
    ssh = ["ssh", "-F", str(LAB / ".state" / "ssh_config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    result = subprocess.run(
        [*ssh, "sudo1", f"sudo -n sh -c {shlex.quote(script)}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"on sudo1: {script!r}: {result.stderr[-2000:]}"
    return result


def test_a_target_without_root_login_gets_its_copy_stopped_through_sudo(lab, client, stopped_source, tmp_path):
    """The run key logs in to a target as its login user (here ferry, root login refused). A guard that fires
    while the copy may run there stops and removes it, and the volume the run made, as root through sudo, and
    only then starts the source again."""
    up = subprocess.run(
        [sys.executable, str(LAB / "lab.py"), "up", "--sudo-host"],
        capture_output=True,
        text=True,
        timeout=900,  # lab.py bounds each wait itself; this bounds the whole
        check=False,
    )
    assert up.returncode == 0, f"`lab.py up --sudo-host` failed:\n{up.stderr[-3000:]}"
    address = _parse_inventory(LAB / ".state" / "inventory-sudo.ini", "lab_sudo")["sudo1"]
    name, journal_dir, run_id = stopped_source
    copy, volume = f"{name}-copy", f"{name}-copy-data"
    # the guard removes the run's key pair and its directory: a copy of the lab's key stands in for the run's
    keys = tmp_path / "keys"
    keys.mkdir()
    for file in ("id_ed25519", "known_hosts"):
        shutil.copy(LAB / ".state" / file, keys / file)
    (keys / "id_ed25519").chmod(0o600)
    sudo1(
        f"docker volume create {volume} >/dev/null && docker run -d --name {copy} --label {DIGEST_LABEL}=it"
        f" -v {volume}:/data ferry-lab/busybox:latest sleep 3600 >/dev/null"
    )
    target = {
        "host": "sudo1",
        "address": address,
        "port": 22,
        "user": "ferry",
        "key": str(keys / "id_ed25519"),
        "known_hosts": str(keys / "known_hosts"),
        "key_comment": run_id,  # no line of authorized_keys has it: the key edit removes nothing
    }
    spec = [
        {"name": name, "state_before": "running", "target": "sudo1", "target_name": copy, "target_volumes": [volume]}
    ]
    try:
        armed = guard(run_id, journal_dir, state="armed", timeout=5, containers=spec, targets=[target])
        assert not armed.get("failed"), armed.get("msg")
        assert not guard(run_id, journal_dir, state="renewed", phase="health").get("failed")
        assert wait_until(lambda: journal(journal_dir, run_id)["guard"]["status"] == "fired")
        entry = journal(journal_dir, run_id)["containers"][name]
        assert entry["status"] == "rolled_back", entry
        assert sudo1(f"docker ps -aq --filter name=^{copy}$").stdout.strip() == "", "the copy is still on sudo1"
        assert sudo1(f"docker volume inspect {volume}", check=False).returncode != 0, "its volume is still there"
        assert wait_until(lambda: running(client, name)), "the guard did not start the source again"
        assert not keys.exists(), "the guard left the run's key directory"
    finally:
        sudo1(f"docker rm -f {copy} >/dev/null 2>&1; docker volume rm {volume} >/dev/null 2>&1; true", check=False)
