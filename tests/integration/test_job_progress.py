# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""ferry.docker.job_progress run through Ansible, on an async job whose state the test sets itself.

The results file is written the way Ansible's async wrapper writes it ({"started": 1, ...} while the
job runs, the module's result once it has ended), so each state is checked without any timing.
Then a real async task (a playbook with async/poll 0) is waited for with the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ferry_run import REPO_ROOT, run_module


def test_running_then_finished(tmp_path):
    results = tmp_path / "job.json"
    bundle = tmp_path / "bundle"
    progress_file = tmp_path / "rsync.progress"
    results.write_text(json.dumps({"started": 1, "finished": 0, "ansible_job_id": "j1", "results_file": str(results)}))

    running = run_module("job_progress", results_file=str(results), path=str(bundle), total=4096)
    assert not running.get("failed"), running
    assert running["finished"] is False
    assert running["changed"] is False
    assert running["progress"] == {"bytes": None, "total": 4096, "percent": None, "line": ""}

    bundle.mkdir()
    (bundle / "image.tar.zst").write_bytes(b"z" * 1024)
    progress_file.write_text("     512  12%   1.00MB/s    0:00:01\r    1024  25%   1.00MB/s    0:00:01\r")
    running = run_module(
        "job_progress", results_file=str(results), path=str(bundle), total=4096, progress_file=str(progress_file)
    )
    assert running["finished"] is False
    assert running["progress"]["bytes"] == 1024
    assert running["progress"]["percent"] == 25.0
    assert running["progress"]["line"].startswith("1024  25%")
    assert running["msg"].startswith("running: 1024 bytes of 4096 (25.0%)")

    (bundle / "image.tar.zst").write_bytes(b"z" * 4096)
    results.write_text(json.dumps({"changed": True, "size": 4096, "sha256": "ab" * 32}))
    done = run_module("job_progress", results_file=str(results), path=str(bundle), total=4096)
    assert not done.get("failed"), done
    assert done["finished"] is True
    assert done["changed"] is True
    assert done["size"] == 4096
    assert done["progress"]["percent"] == 100.0
    assert not results.exists(), "the results file is removed once the result is collected"


def test_a_failed_job_fails_with_its_message(tmp_path):
    results = tmp_path / "job.json"
    results.write_text(json.dumps({"failed": True, "msg": "Cannot commit web: no such container", "changed": False}))
    result = run_module("job_progress", results_file=str(results), cleanup=False)
    assert result["failed"]
    assert result["msg"] == "Cannot commit web: no such container"
    assert result["finished"] is True
    assert results.exists()


def test_no_results_file(tmp_path):
    result = run_module("job_progress", results_file=str(tmp_path / "missing.json"))
    assert result["failed"]
    assert "No async job results" in result["msg"]


def test_waits_for_a_real_async_task(tmp_path):
    """An async shell step that writes a file, waited for with job_progress until it has ended."""
    out = tmp_path / "out"
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Write a file in the background
      ansible.builtin.command:
        argv: [sh, -c, 'head -c 65536 /dev/zero > "$1"', sh, "{out}"]
      async: 60
      poll: 0
      register: job

    - name: Wait for it, with its progress
      ferry.docker.job_progress:
        results_file: "{{{{ job.results_file }}}}"
        path: "{out}"
        total: 65536
      register: waited
      until: waited.finished
      retries: 120
      delay: 1

    - name: Show the result
      ansible.builtin.debug:
        var: waited
"""
    )
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    waited = tasks[1]["hosts"]["localhost"]
    assert waited["finished"] is True
    assert waited["rc"] == 0
    assert waited["progress"]["bytes"] == 65536
    assert waited["progress"]["percent"] == 100.0
