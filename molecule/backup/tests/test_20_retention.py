"""Retention (keep_last, GFS keep rules, max_age_days) and check mode, by running playbooks/backup.yml again."""

from __future__ import annotations

from conftest import CONTAINER_DIR, SELECTED, bundles, latest

OLD = "20000101T000000Z"
# A faked timeline far in the past: one bundle at the end of 1999, five daily ones in January 2000,
# one in February and one in March.
FAKED = [
    "19991231T030000Z",
    "20000101T030000Z",
    "20000102T030000Z",
    "20000103T030000Z",
    "20000104T030000Z",
    "20000105T030000Z",
    "20000215T030000Z",
    "20000320T030000Z",
]


def fake_bundles(host, names):
    for name in names:
        host.run_expect([0], f"mkdir -p -m 0700 {CONTAINER_DIR}/{name}")


def test_check_mode_changes_nothing(host, run_backup):
    before = bundles(host), latest(host)
    proc, _report = run_backup({"backup_containers": [SELECTED]}, check=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (bundles(host), latest(host)) == before


def test_max_age_removes_old_bundles_only(host, run_backup):
    fake_bundles(host, [OLD])
    before = [name for name in bundles(host) if name != OLD]
    proc, report = run_backup({"backup_containers": [SELECTED], "backup_keep_last": 0, "backup_max_age_days": 1})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    new = report["hosts"]["host1"]["containers"][0]["bundle"].rsplit("/", 1)[-1]
    assert bundles(host) == sorted([*before, new])
    assert latest(host) == new
    assert report["hosts"]["host1"]["containers"][0]["pruned"] == [OLD]


def test_keep_last_two(host, run_backup):
    made = []
    for _run in range(2):
        proc, report = run_backup({"backup_containers": [SELECTED], "backup_keep_last": 2})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        made.append(report["hosts"]["host1"]["containers"][0]["bundle"].rsplit("/", 1)[-1])
    assert bundles(host) == made
    assert latest(host) == made[-1]


GFS = {"backup_keep_last": 0, "backup_keep_daily": 2, "backup_keep_monthly": 3, "backup_keep_yearly": 3}


def test_gfs_check_mode_shows_what_would_be_pruned(host, run_backup):
    fake_bundles(host, FAKED)
    before = bundles(host), latest(host)
    proc, _report = run_backup({"backup_containers": [SELECTED], **GFS}, check=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Would prune" in proc.stdout, proc.stdout[-3000:]
    for name in ("20000101T030000Z", "20000105T030000Z"):
        assert name in proc.stdout.split("Would prune", 1)[1].split("keeping", 1)[0]
    assert (bundles(host), latest(host)) == before


def test_gfs_over_faked_timestamps(host, run_backup):
    fake_bundles(host, FAKED)
    today = [name for name in bundles(host) if name not in FAKED]
    proc, report = run_backup({"backup_containers": [SELECTED], **GFS})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = report["hosts"]["host1"]["containers"][0]
    new = result["bundle"].rsplit("/", 1)[-1]
    # daily 2: the new one and 20 March; monthly 3: new, March, February; yearly 3: new, 2000 (March), 1999.
    kept = ["19991231T030000Z", "20000215T030000Z", "20000320T030000Z", new]
    assert bundles(host) == kept
    assert latest(host) == new
    assert sorted(result["pruned"]) == sorted(set(FAKED + today) - set(kept))
    host.run_expect([0], f"rm -rf {CONTAINER_DIR}/19991231T030000Z {CONTAINER_DIR}/2000????T030000Z")
