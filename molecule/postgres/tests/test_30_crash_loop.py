"""A container that crash-loops under a restart policy on the target fails the health check.

It runs on host1, where its config file exists; on host2 its bind mount points at an empty
directory, so it exits at once and Docker restarts it again and again. The migration must fail
and roll back (the source runs again), a restore must fail too, and both reports carry the
container's last log lines. Neither run leaves the image it loaded on host2.
"""

from __future__ import annotations

import json

import pytest
from conftest import WORKLOAD, inspect, playbook

NAME = "ferry-pg-crash"
CONF = "/srv/ferry-pg/conf"
EMPTY = "/srv/ferry-pg/empty"
BACKUP_DIR = "/var/backups/ferry-pg"
LAST_WORDS = "crash-test: /conf/ready is missing, giving up"


@pytest.fixture
def crashing(lab):
    """The container on host1, up and stable there; removed from both hosts afterwards."""
    host1 = lab["host1"]
    host1.run_expect([0], f"mkdir -p {CONF} && echo ok > {CONF}/ready")
    host1.run_expect(
        [0],
        f"docker run -d --name {NAME} --init --restart unless-stopped -e DB_PASSWORD=never-in-a-report "
        f"--mount type=bind,source={CONF},target=/conf,readonly {WORKLOAD} "
        f'sh -c \'echo crash-test: starting; test -s /conf/ready || {{ echo "{LAST_WORDS}" >&2; exit 3; }}; '
        "exec sleep 3600'",
    )
    yield NAME
    for host in (lab["host1"], lab["host2"]):
        host.run(f"docker rm -f {NAME}; docker images -q --filter 'reference=ferry-*/{NAME}' | xargs -r docker rmi -f")
    lab["host1"].run(f"rm -rf {BACKUP_DIR}/{NAME}")


def _bundle_image_id(host, bundle):
    """The image the bundle holds, or the one its capture loaded straight into the target's engine."""
    manifest = json.loads(host.file(f"{bundle}/manifest.json").content_string)
    (image,) = [entry for entry in manifest["artifacts"] + manifest.get("streamed", []) if entry["kind"] == "image"]
    return image["image_id"]


def _assert_log_reported(text_or_lines):
    assert LAST_WORDS in text_or_lines
    assert "never-in-a-report" not in str(text_or_lines)


def test_crash_loop_fails_the_migration_and_rolls_back(lab, crashing, tmp_path):
    before = inspect(lab["host1"], "container", crashing)
    _proc, report = playbook(
        "migrate",
        {
            "migrate_source": "host1",
            "migrate_target": "host2",
            "migrate_containers": [crashing],
            "migrate_bind_map": {CONF: EMPTY},
        },
        tmp_path,
        expect_rc=2,
    )
    (entry,) = report["containers"]
    assert (entry["status"], entry["phase"]) == ("failed", "health"), entry
    assert "did not become healthy" in entry["error"] and "restart" in entry["error"]
    _assert_log_reported(entry["log_tail"])
    _assert_log_reported(entry["error"])
    assert entry["target_cleanup"] == "done"
    assert entry["source_state_after"] == "running"
    assert entry["image_transfer"] == "stream", entry  # loaded into host2's engine, removed again below

    after = inspect(lab["host1"], "container", crashing)
    assert after["Id"] == before["Id"] and after["State"]["Running"]
    host2 = lab["host2"]
    assert inspect(host2, "container", crashing) is None
    assert inspect(host2, "image", f"ferry-migrate/{crashing}:latest") is None
    assert inspect(host2, "image", _bundle_image_id(lab["host1"], entry["bundle"])) is None


def test_crash_loop_fails_a_restore_and_removes_the_loaded_image(lab, crashing, tmp_path):
    playbook(
        "backup", {"ferry_backup_hosts": "host1", "backup_containers": [crashing], "backup_dir": BACKUP_DIR}, tmp_path
    )
    bundle = f"{BACKUP_DIR}/{crashing}/latest"
    _proc, report = playbook(
        "restore",
        {
            "restore_target": "host2",
            "restore_container": crashing,
            "restore_bundle_host": "host1",
            "restore_backup_dir": BACKUP_DIR,
            "restore_bind_map": {CONF: EMPTY},
        },
        tmp_path,
        expect_rc=2,
    )
    assert report["status"] == "failed", report
    assert "did not become healthy" in report["error"]
    _assert_log_reported(report["log_tail"])
    host2 = lab["host2"]
    assert inspect(host2, "container", crashing) is None
    assert host2.check_output(f"docker images -q --filter 'reference=ferry-restore/{crashing}'") == ""
    assert inspect(host2, "image", _bundle_image_id(lab["host1"], bundle)) is None
    # The source was only read.
    assert inspect(lab["host1"], "container", crashing)["State"]["Running"]
