"""The copy of each new bundle to the central host (host2), pulled by rsync over SSH."""

from __future__ import annotations

import testinfra
from conftest import CONTAINER_DIR, ROOT, SELECTED

CENTRAL_DIR = "/var/backups/ferry-molecule-backup-central"
CENTRAL_KEY = "/root/.ssh/ferry-molecule-backup_ed25519"
CENTRAL_CONTAINER_DIR = f"{CENTRAL_DIR}/host1/{SELECTED}"


def _central():
    return testinfra.get_host("ansible://host2", ansible_inventory=str(ROOT / "lab/.state/inventory.ini"))


def test_new_bundles_are_copied_and_pruned_on_the_central_host(host, run_backup):
    central = _central()
    extra = {
        "backup_containers": [SELECTED],
        "backup_central_host": "host2",
        "backup_central_dir": CENTRAL_DIR,
        "backup_central_private_key": CENTRAL_KEY,
        "backup_keep_last": 1,
    }
    made = []
    for _run in range(2):
        proc, report = run_backup(extra)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        made.append(report["hosts"]["host1"]["containers"][0]["bundle"].rsplit("/", 1)[-1])
    copy = f"{CENTRAL_CONTAINER_DIR}/{made[-1]}"
    for name in ("manifest.json", *host.file(f"{CONTAINER_DIR}/{made[-1]}").listdir()):
        local = host.check_output(f"sha256sum {CONTAINER_DIR}/{made[-1]}/{name}").split()[0]
        assert central.check_output(f"sha256sum {copy}/{name}").split()[0] == local, name
    assert central.file(f"{CENTRAL_CONTAINER_DIR}/latest").linked_to == copy
    assert not central.file(f"{CENTRAL_CONTAINER_DIR}/{made[0]}").exists, "keep_last=1 applies on the central host"


def test_failed_copy_fails_the_container_but_keeps_the_local_bundle(host, run_backup):
    proc, report = run_backup(
        {
            "backup_containers": [SELECTED],
            "backup_central_host": "host2",
            "backup_central_dir": CENTRAL_DIR,
            "backup_central_private_key": "/nonexistent/ferry-molecule-backup-key",
            "backup_keep_last": 0,
        }
    )
    assert proc.returncode != 0
    (entry,) = report["hosts"]["host1"]["containers"]
    assert entry["status"] == "failed"
    assert "central host" in entry["error"]
    assert entry["bundle"], "the complete local bundle is kept and reported"
    assert host.file(f"{entry['bundle']}/manifest.json").is_file
    assert host.file(f"{CONTAINER_DIR}/latest").linked_to == entry["bundle"]
