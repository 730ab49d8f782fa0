# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""No environment value of a container in the output of backup, restore or migrate, at -vvv (issue 13 A).

A container on host1 gets a unique secret in its environment. playbooks/backup.yml backs it up
(export mode), playbooks/restore.yml restores that bundle on host2 (an import whose ENV changes
carry the secret), and playbooks/migrate.yml then moves the restored container back to host1
(commit mode, cutover remove; once the original is removed there), each with ``-vvv``. The
restored container runs an image whose config holds the secret too, so the migration also shows
that image inspect data stays out of the output.

All their output (stdout and stderr) and the JSON reports they write must hold the secret 0 times,
also base64-encoded (at any of the three byte alignments, as inside a slurped file). The restored
and the migrated containers must still carry the secret in their environment (``docker inspect``
on the lab host), so the test cannot pass by losing it. Every resource is named
``ferry-it-sec-<random>-*`` and removed from both hosts at the end.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INVENTORY = REPO_ROOT / "lab" / ".state" / "inventory.ini"
WORKLOAD_IMAGE = "ferry-lab/busybox:latest"  # built into every lab host by lab/lab.py
SECRET_NAME = "FERRY_IT_SECRET"
PLAYBOOK_TIMEOUT = 600  # seconds; a run that takes longer has hung


def secret_forms(secret):
    """The secret as text and as the inner part of its base64 at each byte alignment."""
    forms = [secret]
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + secret.encode()).decode()
        forms.append(encoded[4:-4])  # drop the characters that mix in neighbouring bytes
    return forms


def occurrences(text, secret):
    return sum(text.count(form) for form in secret_forms(secret))


def run_playbook(name, extra, report):
    """playbooks/<name>.yml on the lab at -vvv; return (return code, stdout + stderr, report text)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-vvv",
        "--inventory",
        str(INVENTORY),
        "--extra-vars",
        json.dumps({f"{name}_report_path": str(report), **extra}),
        str(REPO_ROOT / "playbooks" / f"{name}.yml"),
    ]
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=PLAYBOOK_TIMEOUT
    )
    return proc.returncode, proc.stdout + proc.stderr, report.read_text() if report.exists() else ""


def ok(results, host):
    result = results[host]
    assert not result.get("unreachable") and not result.get("failed"), result.get("msg", result)
    return result


def env_on(ansible_adhoc, host, name):
    """The environment of container ``name`` on ``host``, as the engine reports it."""
    info = ok(ansible_adhoc(host, "community.docker.docker_container_info", {"name": name}), host)
    assert info["exists"], f"no container {name} on {host}"
    return info["container"]["Config"]["Env"]


@pytest.fixture
def planted(lab, ansible_adhoc):
    """A running container on host1 with a unique secret in its env and a named volume; removed at the end."""
    run_id = uuid.uuid4().hex[:8]
    prefix = f"ferry-it-sec-{run_id}"
    secret = f"ferry-canary-{uuid.uuid4().hex}"
    name = f"{prefix}-app"
    dirs = {key: f"/var/tmp/{prefix}/{key}" for key in ("backup", "incoming", "migrate")}
    container = {
        "name": name,
        "image": WORKLOAD_IMAGE,
        "pull": "never",
        "command": ["sleep", "3600"],
        "env": {SECRET_NAME: secret, "APP_MODE": "test"},
        "volumes": [f"{prefix}-data:/data"],
        "state": "started",
    }
    try:
        ok(ansible_adhoc("host1", "community.docker.docker_container", container), "host1")
        yield {"prefix": prefix, "name": name, "secret": secret, "dirs": dirs}
    finally:
        cleanup = (
            f"docker ps -aq --filter name={prefix} | xargs -r docker rm -f -v >/dev/null; "
            f"docker volume ls -q --filter name={prefix} | xargs -r docker volume rm -f >/dev/null; "
            f"docker images | grep -F '{prefix}' | awk '{{print $1 \":\" $2}}' "
            f"| xargs -r docker rmi -f >/dev/null; rm -rf /var/tmp/{prefix}; true"
        )
        results = ansible_adhoc("host1:host2", "ansible.builtin.shell", cleanup)
        for host in ("host1", "host2"):
            ok(results, host)


def test_no_secret_in_vvv_output_of_backup_restore_migrate(planted, ansible_adhoc, tmp_path):
    name, secret, dirs = planted["name"], planted["secret"], planted["dirs"]
    assert f"{SECRET_NAME}={secret}" in env_on(ansible_adhoc, "host1", name)
    outputs = {}

    rc, out, report = run_playbook(
        "backup",
        # export mode: the restore then imports the filesystem with the env as ENV changes (docker_import)
        {
            "ferry_backup_hosts": "host1",
            "backup_containers": [name],
            "backup_dir": dirs["backup"],
            "backup_mode": "export",
        },
        tmp_path / "backup-report.json",
    )
    outputs["backup"] = (out, report)
    assert rc == 0, out[-6000:]
    assert report, "backup.yml wrote no report"
    # Redacted, not dropped: the output still names the variable.
    assert SECRET_NAME in out

    restore_vars = {
        "restore_target": "host2",
        "restore_bundle_host": "host1",
        "restore_container": name,
        "restore_backup_dir": dirs["backup"],
        "restore_work_dir": dirs["incoming"],
        "restore_health_stable_seconds": 2,
        "restore_health_timeout": 60,
    }
    # The preflight's result is hidden (its input holds the env values), but a failure of the module
    # itself still says why: here a negative disk margin, refused before anything is changed.
    rc, out, report = run_playbook(
        "restore", {**restore_vars, "restore_disk_margin_bytes": -(10**15)}, tmp_path / "refused-report.json"
    )
    outputs["refused restore"] = (out, report)
    assert rc != 0, out[-6000:]
    assert "required_bytes is -" in out, out[-6000:]

    rc, out, report = run_playbook("restore", restore_vars, tmp_path / "restore-report.json")
    outputs["restore"] = (out, report)
    assert rc == 0, out[-6000:]
    assert f"ENV {SECRET_NAME}=********" in out  # docker_import's changes, redacted
    assert report, "restore.yml wrote no report"
    assert f"{SECRET_NAME}={secret}" in env_on(ansible_adhoc, "host2", name)

    # Make room on host1 for the migration back (name and volume of the original).
    cleared = ansible_adhoc(
        "host1", "ansible.builtin.shell", f"docker rm -f -v {name} && docker volume rm {planted['prefix']}-data"
    )
    ok(cleared, "host1")

    rc, out, report = run_playbook(
        "migrate",
        {
            "migrate_source": "host2",
            "migrate_target": "host1",
            "migrate_containers": [name],
            "migrate_cutover": "remove",
            "migrate_work_dir": dirs["migrate"],
            "migrate_target_dir": dirs["incoming"],
            "migrate_health_stable_seconds": 2,
            "migrate_health_timeout": 60,
        },
        tmp_path / "migrate-report.json",
    )
    outputs["migrate"] = (out, report)
    assert rc == 0, out[-6000:]
    assert report, "migrate.yml wrote no report"
    assert f"{SECRET_NAME}={secret}" in env_on(ansible_adhoc, "host1", name)

    found = {
        f"{playbook} {what}": occurrences(text, secret)
        for playbook, (out, report) in outputs.items()
        for what, text in (("output", out), ("report", report))
    }
    leaks = {where: count for where, count in found.items() if count}
    lines = [
        f"{playbook}: {line.strip()[:300]}"
        for playbook, (out, _report) in outputs.items()
        for line in out.splitlines()
        if occurrences(line, secret)
    ]
    assert not leaks, f"the secret was printed: {leaks}\n" + "\n".join(lines[:20])
