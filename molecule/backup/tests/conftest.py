"""Shared names and a runner for playbooks/backup.yml, used by the backup scenario's tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# Same values as molecule/backup/vars.yml.
SELECTED = "ferry-molecule-backup-web"
UNSELECTED = "ferry-molecule-backup-idle"
VOLUME = "ferry-molecule-backup-data"
BACKUP_DIR = "/var/backups/ferry-molecule-backup"
MODE = "export"
CONTAINER_DIR = f"{BACKUP_DIR}/{SELECTED}"
TIMESTAMP = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")


def bundles(host, container_dir=CONTAINER_DIR):
    """Sorted names of the timestamped bundles in container_dir on host."""
    if not host.file(container_dir).is_directory:
        return []
    return sorted(name for name in host.file(container_dir).listdir() if TIMESTAMP.match(name))


def latest(host, container_dir=CONTAINER_DIR):
    """Name of the bundle `latest` points to."""
    link = host.file(f"{container_dir}/latest")
    assert link.is_symlink, f"{container_dir}/latest is not a symlink"
    return link.linked_to.rsplit("/", 1)[-1]


@pytest.fixture
def run_backup(tmp_path):
    """Run playbooks/backup.yml on host1 with extra vars; return (process, report or None)."""

    def run(extra, check=False):
        report = tmp_path / "backup-report.json"
        if report.exists():
            report.unlink()
        extra_vars = {
            "ferry_backup_hosts": "host1",
            "backup_dir": BACKUP_DIR,
            "backup_mode": MODE,
            "backup_report_path": str(report),
            **extra,
        }
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_HOST_KEY_CHECKING="true")
        argv = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "--inventory",
            str(ROOT / "lab/.state/inventory.ini"),
            "--extra-vars",
            json.dumps(extra_vars),
            str(ROOT / "playbooks/backup.yml"),
        ]
        if check:
            argv.append("--check")
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        data = json.loads(report.read_text()) if report.exists() else None
        return proc, data

    return run
