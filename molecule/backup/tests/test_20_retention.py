"""Retention (keep_last, max_age_days) and check mode, by running playbooks/backup.yml again."""

from __future__ import annotations

from conftest import CONTAINER_DIR, SELECTED, bundles, latest

OLD = "20000101T000000Z"


def test_check_mode_changes_nothing(host, run_backup):
    before = bundles(host), latest(host)
    proc, _report = run_backup({"backup_containers": [SELECTED]}, check=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (bundles(host), latest(host)) == before


def test_max_age_removes_old_bundles_only(host, run_backup):
    host.run_expect([0], f"mkdir -m 0700 {CONTAINER_DIR}/{OLD}")
    before = [name for name in bundles(host) if name != OLD]
    proc, report = run_backup({"backup_containers": [SELECTED], "backup_keep_last": 0, "backup_max_age_days": 1})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    new = report["hosts"]["host1"]["containers"][0]["bundle"].rsplit("/", 1)[-1]
    assert bundles(host) == sorted([*before, new])
    assert latest(host) == new


def test_keep_last_two(host, run_backup):
    made = []
    for _run in range(2):
        proc, report = run_backup({"backup_containers": [SELECTED], "backup_keep_last": 2})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        made.append(report["hosts"]["host1"]["containers"][0]["bundle"].rsplit("/", 1)[-1])
    assert bundles(host) == made
    assert latest(host) == made[-1]
