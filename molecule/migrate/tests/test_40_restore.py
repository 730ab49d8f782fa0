"""backup.yml on host1, then restore.yml of its latest bundle onto host3 (a third host)."""

from __future__ import annotations

from conftest import CURL, inspect, playbook, start_service, volume_checksums, wait_healthy

NAME = "ferry-mig-bk"
VOLUME = "ferry-mig-bk-page"
BACKUP_DIR = "/var/backups/ferry-mig"


def test_restore_latest_backup_onto_a_third_host(lab, tmp_path):
    start_service(lab["host1"], NAME, VOLUME, 18089)
    try:
        wait_healthy(lab["host1"], NAME)
        playbook(
            "backup", {"ferry_backup_hosts": "host1", "backup_containers": [NAME], "backup_dir": BACKUP_DIR}, tmp_path
        )
        restore = {
            "restore_target": "host3",
            "restore_container": NAME,
            "restore_bundle_host": "host1",
            "restore_backup_dir": BACKUP_DIR,
            "restore_port_map": {"80/tcp": 18090},
            "restore_health_tcp_port": 18090,
        }
        _proc, report = playbook("restore", restore, tmp_path)
        assert report["status"] == "ok" and report["sent_bytes"] > 0, report
        target = inspect(lab["host3"], "container", NAME)
        assert target["State"]["Health"]["Status"] == "healthy"
        assert volume_checksums(lab["host3"], VOLUME) == volume_checksums(lab["host1"], VOLUME)
        assert lab["host3"].check_output(f"{CURL} http://127.0.0.1:18090/index.html") == f"<h1>served by {NAME}</h1>"
        # The source is untouched by a restore elsewhere, and the received copy is gone.
        assert inspect(lab["host1"], "container", NAME)["State"]["Running"]
        assert lab["host3"].check_output("ls -A /var/lib/ferry/incoming | grep -v '^.keys$' || true") == ""

        again, report = playbook("restore", restore, tmp_path)
        assert report["status"] == "unchanged"
        assert "changed=0" in again.stdout.split("PLAY RECAP")[-1], again.stdout[-3000:]
    finally:
        lab["host1"].run(f"docker rm -f {NAME}; docker volume rm {VOLUME}; rm -rf {BACKUP_DIR}")
        lab["host3"].run(f"docker rm -f {NAME}; docker volume rm {VOLUME}")
