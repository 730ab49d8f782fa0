"""What the testinfra verifiers of every scenario share: the lab hosts, inspect, and running a playbook.

Each scenario's tests/conftest.py puts this folder on sys.path and imports from here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import testinfra

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "lab/.state/inventory.ini"
PLAYBOOK_TIMEOUT = 600  # seconds; a playbook run that takes longer has hung


def lab_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def inspect(host, kind, name):
    """`docker <kind> inspect` of one object on host, or None if it does not exist."""
    out = host.run(f"docker {kind} inspect {name}")
    return json.loads(out.stdout)[0] if out.rc == 0 else None


def playbook_command(name, extra, tmp_path):
    """(argv, env, report path) of playbooks/<name>.yml on the lab with extra vars, its report in tmp_path."""
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
    return argv, env, report


def playbook(name, extra, tmp_path, expect_rc=0):
    """Run playbooks/<name>.yml on the lab with extra vars; return (process, report or None)."""
    argv, env, report = playbook_command(name, extra, tmp_path)
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=PLAYBOOK_TIMEOUT
    )
    if expect_rc is not None:
        assert proc.returncode == expect_rc, proc.stdout[-6000:] + proc.stderr[-3000:]
    data = json.loads(report.read_text()) if report.exists() else None
    return proc, data
