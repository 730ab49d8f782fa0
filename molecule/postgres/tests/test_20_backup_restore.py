"""backup.yml of a second PostgreSQL on host1, then restore.yml of its latest bundle onto host2."""

from __future__ import annotations

from conftest import checksum, inspect, playbook, psql, start_postgres, volume_root

NAME = "ferry-pg-bk"
VOLUME = "ferry-pg-bk-data"
BACKUP_DIR = "/var/backups/ferry-pg"


def _remove(host):
    host.run(
        f"docker rm -f {NAME}; docker volume rm {VOLUME}; "
        f"docker images -q --filter 'reference=ferry-*/{NAME}' | xargs -r docker rmi -f"
    )


def test_restore_of_a_backup_reads_the_same_rows(lab, tmp_path):
    # With a healthcheck this time: the restore waits for healthy instead of the stable window.
    start_postgres(lab["host1"], NAME, VOLUME, "--health-cmd 'pg_isready -q' --health-interval 1s")
    try:
        expected = checksum(lab["host1"], NAME)
        assert expected.startswith("50000 "), expected
        playbook(
            "backup", {"ferry_backup_hosts": "host1", "backup_containers": [NAME], "backup_dir": BACKUP_DIR}, tmp_path
        )
        restore = {
            "restore_target": "host2",
            "restore_container": NAME,
            "restore_bundle_host": "host1",
            "restore_backup_dir": BACKUP_DIR,
        }
        _proc, report = playbook("restore", restore, tmp_path)
        assert report["status"] == "ok" and report["log_tail"] == [], report
        target = inspect(lab["host2"], "container", NAME)
        assert target["State"]["Health"]["Status"] == "healthy"
        assert checksum(lab["host2"], NAME) == expected
        assert volume_root(lab["host2"], VOLUME) == volume_root(lab["host1"], VOLUME)
        assert psql(lab["host2"], NAME, "SELECT pg_is_in_recovery();") == "f"
        # The backup paused the source; it runs on as before.
        assert inspect(lab["host1"], "container", NAME)["State"]["Running"]
    finally:
        _remove(lab["host1"])
        _remove(lab["host2"])
        lab["host1"].run(f"rm -rf {BACKUP_DIR}/{NAME}")
