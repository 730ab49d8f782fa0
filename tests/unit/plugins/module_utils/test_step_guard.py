# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Arming the guard in-process (as docker_migrate_source and the module do): the journal and known_hosts."""

from __future__ import annotations

import json
import stat
import types

from ansible_collections.ferry.docker.plugins.module_utils import _journal, _step_guard, _steps


class Parent:
    check_mode = False
    module = types.SimpleNamespace(warn=lambda text: None, _diff=False)
    base_url = "unix:///var/run/docker.sock"
    client = None


def test_arming_writes_the_targets_known_hosts_for_the_run_key(tmp_path, monkeypatch):
    spawned = []
    monkeypatch.setattr(_journal, "spawn", lambda *args: spawned.append(args))
    monkeypatch.setattr(_step_guard._journal, "guard_alive", lambda doc: bool(spawned))
    key_dir = tmp_path / "keys" / "run1"
    line = "192.0.2.12 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n"
    target = dict(host="host2", address="192.0.2.12", user="root", key=f"{key_dir}/id_ed25519")
    args = dict(
        run_id="20261201T000000Z-1",
        state="armed",
        journal_dir=str(tmp_path / "journal"),
        containers=[{"name": "web", "state_before": "running", "target": "host2"}],
        targets=[dict(target, known_hosts=f"{key_dir}/known_hosts")],
        targets_known_hosts=line,
    )
    result = _steps.caller(Parent(), source=True)("ferry.docker.docker_migrate_guard", args)
    assert not result.get("failed"), result
    assert spawned and result["journal"]["guard"]["status"] == "armed"
    written = key_dir / "known_hosts"
    assert written.read_text() == line
    assert stat.S_IMODE(written.stat().st_mode) == 0o600 and stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    journal = json.loads((tmp_path / "journal" / "20261201T000000Z-1.json").read_text())
    assert journal["targets"][0]["known_hosts"] == str(written)


def _armed(tmp_path, monkeypatch):
    spawned = []
    monkeypatch.setattr(_journal, "spawn", lambda *args: spawned.append(args))
    monkeypatch.setattr(_step_guard._journal, "guard_alive", lambda doc: bool(spawned) and doc is not None)
    monkeypatch.setattr(_step_guard._journal, "wake_guard", lambda doc: spawned.clear())
    journal_dir = str(tmp_path / "journal")
    args = dict(run_id="20261203T000000Z-1", journal_dir=journal_dir)
    call = _steps.caller(Parent(), source=True)
    armed = call(
        "ferry.docker.docker_migrate_guard",
        dict(args, state="armed", containers=[{"name": "web", "state_before": "running", "target": "host2"}]),
    )
    assert not armed.get("failed"), armed
    return call, args


def test_disarming_writes_the_hosts_report_once_the_guard_is_gone(tmp_path, monkeypatch):
    call, args = _armed(tmp_path, monkeypatch)
    path = tmp_path / "reports" / "deep" / "migrate.json"
    report = {"status": "ok", "run": args["run_id"], "containers": [{"container": "web", "status": "migrated"}]}
    result = call(
        "ferry.docker.docker_migrate_guard", dict(args, state="disarmed", report={"path": str(path), "content": report})
    )
    assert not result.get("failed"), result
    assert result["journal"]["guard"]["status"] == "disarmed" and result["report"] == str(path)
    assert json.loads(path.read_text()) == report
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_report_that_cannot_be_written_fails_the_disarm_naming_it_and_the_guard_stays_disarmed(tmp_path, monkeypatch):
    call, args = _armed(tmp_path, monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = blocker / "migrate.json"
    result = call(
        "ferry.docker.docker_migrate_guard", dict(args, state="disarmed", report={"path": str(path), "content": {}})
    )
    assert result.get("failed") and str(path) in result["msg"] and "is disarmed" in result["msg"], result
    journal = json.loads((tmp_path / "journal" / f"{args['run_id']}.json").read_text())
    assert journal["guard"]["status"] == "disarmed"


def test_the_guard_script_is_written_with_its_copy_of_neighbour(tmp_path):
    journal = _journal.Journal(str(tmp_path), "20261201T000000Z-1")
    script = _step_guard.guard_script(journal)
    assert script == str(tmp_path / "20261201T000000Z-1.guard.py")
    announce = _journal.load_announce(_journal.neighbour_path(str(tmp_path), "20261201T000000Z-1"))
    assert announce is not None and announce.__module__ == "ferry_guard_neighbour"
