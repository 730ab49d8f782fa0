"""A damaged bundle fails its drill with a clear reason, at the deep check or at the restore, and
the drill still leaves nothing behind."""

from __future__ import annotations

import pytest
from conftest import BACKUP_DIR, PREFIX, REDIS, REDIS_VOLUME, drill_leftovers, playbook

DAMAGED = "20000101T000000Z"


@pytest.fixture(scope="module")
def damaged(lab):
    """A copy of the latest Redis bundle on host1 with one byte of its volume archive flipped."""
    host1 = lab["host1"]
    source = f"{BACKUP_DIR}/{REDIS}/latest/"
    target = f"{BACKUP_DIR}/{REDIS}/{DAMAGED}"
    host1.run_expect([0], f"rm -rf {target} && cp -a {source} {target}")
    archive = host1.check_output(f"ls {target}/volume-{REDIS_VOLUME}.tar*")
    # Same size, one byte different: only a sha256 can tell.
    host1.run_expect(
        [0], f"printf 'X' | dd of={archive} bs=1 seek=700 count=1 conv=notrunc status=none && test -s {archive}"
    )
    yield target
    host1.run(f"rm -rf {target}")


def _drill(tmp_path, **extra):
    proc, report = playbook(
        "verify",
        {
            "verify_target": "host2",
            "verify_bundle_host": "host1",
            "verify_containers": REDIS,
            "verify_bundle": DAMAGED,
            "verify_backup_dir": BACKUP_DIR,
            "verify_scratch_prefix": PREFIX,
            **extra,
        },
        tmp_path,
        expect_rc=None,
    )
    assert proc.returncode != 0, "a drill of a damaged bundle must fail the play"
    assert report is not None, proc.stdout[-3000:]
    assert (report["status"], report["passed"], report["failed"]) == ("fail", 0, 1)
    (drill,) = report["drills"]
    assert drill["status"] == "fail"
    return proc, drill


def test_the_deep_check_finds_the_damage_before_anything_is_restored(damaged, lab, tmp_path):
    proc, drill = _drill(tmp_path, verify_deep=True)
    assert drill["failed_step"] == "check"
    assert drill["reason"].startswith("the bundle failed its check")
    assert f"volume artifact {REDIS_VOLUME}" in drill["reason"]
    assert "has sha256" in drill["reason"] and "expected" in drill["reason"]
    assert [a["problem"] != "" for a in drill["check"]["artifacts"]] == [False, True]
    assert "restore" not in drill["timings"]
    assert "Restore drill failed on host2 for ferry-mv-redis" in proc.stdout
    for host in lab.values():
        assert drill_leftovers(host) == []


def test_without_the_deep_check_the_restore_refuses_it_and_the_drill_cleans_up(damaged, lab, tmp_path):
    _proc, drill = _drill(tmp_path)
    # The quick check only sees sizes; the volume restore checks the sha256 before it writes a byte.
    assert drill["failed_step"] == "restore"
    assert drill["reason"].startswith("the bundle did not restore (task: Fill the scratch volumes from the bundle)")
    assert "has sha256" in drill["reason"]
    # By then the drill had made its network, image tag and volumes: all removed again.
    assert drill["scratch"]["network"] and drill["scratch"]["volumes"]
    assert drill["leftovers"] == []
    for host in lab.values():
        assert drill_leftovers(host) == []
