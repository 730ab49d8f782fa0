"""A selected container that does not exist fails alone: the others are backed up, the play fails."""

from __future__ import annotations

from conftest import CONTAINER_DIR, SELECTED, bundles, latest

MISSING = "ferry-molecule-backup-missing"


def test_missing_container_fails_alone(host, run_backup):
    before = bundles(host)
    proc, report = run_backup({"backup_containers": [MISSING, SELECTED]})
    assert proc.returncode != 0, "the play should fail when a container could not be backed up"
    assert MISSING in proc.stdout + proc.stderr
    assert report is not None, "the report should be written even though the play failed"
    assert report["status"] == "failed"
    entries = {entry["container"]: entry for entry in report["hosts"]["host1"]["containers"]}
    assert entries[MISSING]["status"] == "failed"
    assert "does not exist" in entries[MISSING]["error"]
    assert entries[MISSING]["bundle"] == ""
    assert entries[SELECTED]["status"] == "ok"
    new = entries[SELECTED]["bundle"].rsplit("/", 1)[-1]
    assert bundles(host) == sorted([*before, new])
    assert latest(host) == new
    assert not host.file(f"{CONTAINER_DIR.rsplit('/', 1)[0]}/{MISSING}").exists
