"""A failure after the source was stopped: the source runs again as before, the target is clean,
the bundle stays on the source, and the report says what failed."""

from __future__ import annotations

import os
import time

import pytest
from conftest import BIND, inspect, playbook, start_service, volume_checksums, wait_healthy

PORTS = {"unhealthy": 18085, "nodocker": 18086}
HOST3_WAIT_SECONDS = 1200  # longer than the scenarios that use every host take; within molecule's step limit


def _wait_until_host3_is_ours():
    """With other scenarios beside this one (tests/run-all.sh), wait until none of them uses host3's engine.

    run-all.sh names a file in FERRY_LAB_HOST3_FREE and creates it once the scenarios that use every host's
    engine have ended; run alone (``molecule test -s migrate``), nothing else uses the lab and nothing waits.
    """
    marker = os.environ.get("FERRY_LAB_HOST3_FREE")
    deadline = time.monotonic() + HOST3_WAIT_SECONDS
    while marker and not os.path.exists(marker):
        if time.monotonic() > deadline:
            pytest.fail(
                f"{marker} did not appear within {HOST3_WAIT_SECONDS} s: a scenario beside this one still uses "
                "host3's Docker engine, which this test takes away (see step_molecule in tests/run-all.sh)"
            )
        time.sleep(2)


def _target_is_clean(host, name, volume):
    assert inspect(host, "container", name) is None
    assert inspect(host, "volume", volume) is None
    assert inspect(host, "image", f"ferry-migrate/{name}:latest") is None
    assert host.check_output(f"ls -d /var/lib/ferry/incoming/*-{name} 2>/dev/null || true") == ""


@pytest.fixture
def service(lab, request):
    """A fresh service on host1 named after the test; removed afterwards from host1 and host3."""
    name = f"ferry-mig-{request.param}"
    volume = f"{name}-page"
    start_service(lab["host1"], name, volume, PORTS[request.param])
    wait_healthy(lab["host1"], name)
    yield name, volume
    for host in (lab["host1"], lab["host3"]):
        host.run(f"docker rm -f {name}; docker volume rm {volume}")


@pytest.mark.parametrize("service", ["unhealthy"], indirect=True)
def test_unhealthy_target_rolls_back(lab, service, tmp_path):
    name, volume = service
    before = inspect(lab["host1"], "container", name)
    data_before = volume_checksums(lab["host1"], volume)
    # The bind source moves to a directory that is empty on host3, so the healthcheck fails there.
    _proc, report = playbook(
        "migrate",
        {
            "migrate_source": "host1",
            "migrate_target": "host3",
            "migrate_containers": [name],
            "migrate_bind_map": {BIND: "/srv/ferry-mig/empty"},
            "migrate_health_timeout": 30,
        },
        tmp_path,
        expect_rc=2,
    )
    (entry,) = report["containers"]
    assert report["status"] == "failed"
    assert (entry["status"], entry["phase"]) == ("failed", "health"), entry
    assert "did not become healthy" in entry["error"]
    assert entry["target_cleanup"] == "done"
    assert entry["source_state_after"] == "running"
    assert entry["downtime_seconds"] > 0
    assert set(entry["phases"]) >= {"preflight", "stop", "capture", "transfer", "restore", "health", "rollback"}

    after = inspect(lab["host1"], "container", name)
    assert after["Id"] == before["Id"] and after["Config"] == before["Config"]
    assert after["State"]["Running"] and after["State"]["StartedAt"] != before["State"]["StartedAt"]
    assert volume_checksums(lab["host1"], volume) == data_before
    assert lab["host1"].file(f"{entry['bundle']}/manifest.json").exists
    _target_is_clean(lab["host3"], name, volume)


@pytest.mark.parametrize("service", ["nodocker"], indirect=True)
def test_target_docker_gone_during_restore_rolls_back(lab, service, tmp_path):
    name, volume = service
    before = inspect(lab["host1"], "container", name)
    host3 = lab["host3"]
    _wait_until_host3_is_ours()
    # Docker stops answering on host3 the moment the bundle starts arriving (after the source was
    # stopped and captured): the socket is moved away until the test puts it back.
    host3.run_expect(
        [0],
        "setsid nohup sh -c 'until ls -d /var/lib/ferry/incoming/*-" + name + " >/dev/null 2>&1; do sleep 0.1; done;"
        " mv /var/run/docker.sock /var/run/docker.sock.ferry-off' >/dev/null 2>&1 &",
    )
    try:
        _proc, report = playbook(
            "migrate",
            {"migrate_source": "host1", "migrate_target": "host3", "migrate_containers": [name]},
            tmp_path,
            expect_rc=2,
        )
    finally:
        host3.run("test -e /var/run/docker.sock.ferry-off && mv /var/run/docker.sock.ferry-off /var/run/docker.sock")
    (entry,) = report["containers"]
    assert (entry["status"], entry["phase"]) == ("failed", "restore"), entry
    assert entry["source_state_after"] == "running"
    after = inspect(lab["host1"], "container", name)
    assert after["Id"] == before["Id"] and after["State"]["Running"]
    assert lab["host1"].file(f"{entry['bundle']}/manifest.json").exists
    # With Docker back, nothing of the run is left on host3 but what the report names.
    assert inspect(host3, "container", name) is None
    assert inspect(host3, "volume", volume) is None
