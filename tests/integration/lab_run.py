"""The lab from a test: a shell script on a lab host over SSH, and playbooks/migrate.yml with its report.

Every ssh has a connect timeout and an overall limit; the playbook has an overall limit too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE = REPO_ROOT / "lab" / ".state"
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"]
PLAYBOOK_SECONDS = 600


def ssh(host, script, check=True, timeout=300):
    result = subprocess.run(
        ["ssh", "-F", str(STATE / "ssh_config"), *SSH_OPTIONS, host, script],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"ssh {host} {script!r}: {result.stderr[-2000:]}"
    return result


def migrate(tmp_path, containers, check=False, **extra):
    """Run playbooks/migrate.yml from host1 to host2; ``(run, {container: report entry})``."""
    report = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    variables = {
        "migrate_source": "host1",
        "migrate_target": "host2",
        "migrate_containers": containers,
        "migrate_report_path": str(report),
        "migrate_health_stable_seconds": 3,
        "migrate_health_timeout": 60,
        **extra,
    }
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(STATE / "inventory.ini"),
        str(REPO_ROOT / "playbooks" / "migrate.yml"),
        "-e",
        json.dumps(variables),
        *(["--check"] if check else []),
    ]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"))
    run = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=PLAYBOOK_SECONDS, check=False
    )
    assert report.exists(), f"no report (rc {run.returncode}):\n{run.stdout[-6000:]}"
    return run, {entry["container"]: entry for entry in json.loads(report.read_text())["containers"]}
