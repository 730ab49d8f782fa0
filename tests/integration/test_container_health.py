# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_container_health against a real Docker engine.

A service that stays up passes; a crash loop under a restart policy, a process that exits, an
unhealthy healthcheck and a missing container fail, and the failure carries the container's last
log lines but never its environment. Needs a reachable engine: the tests fail without one, never
skip. Every container is named ``ferry-it-hc-<random>-*`` and removed in ``finally``.
"""

from __future__ import annotations

import uuid

import docker
import pytest
from ferry_run import run_module
from fixture_image import IMAGE

SECRET = "s3cret-value-never-shown"


def health(container, **options):
    """Run docker_container_health on the local engine for `container`; return its result."""
    return run_module("docker_container_health", **{"name": container, **options})


@pytest.fixture
def start(client):
    """start(suffix, command, **host_config) creates and starts a container; all are removed afterwards."""
    prefix = f"ferry-it-hc-{uuid.uuid4().hex[:8]}"
    created = []

    def _start(suffix, command, healthcheck=None, **host_config):
        name = f"{prefix}-{suffix}"
        container = client.create_container(
            IMAGE,
            command=["sh", "-c", command],
            name=name,
            environment={"DB_PASSWORD": SECRET},
            healthcheck=healthcheck,
            host_config=client.create_host_config(**host_config),
        )
        created.append(container["Id"])
        client.start(container["Id"])
        return name

    try:
        yield _start
    finally:
        for container in created:
            try:
                client.remove_container(container, force=True)
            except docker.errors.NotFound:
                pass


def test_service_that_stays_up_passes_after_the_window(start):
    name = start("up", "echo ready; exec sleep 300")
    result = health(name, timeout=30, stable_seconds=2, interval=0.5)
    assert not result.get("failed"), result.get("msg")
    assert result["status"] == "running" and not result["changed"]
    assert result["waited"] >= 2 and result["log_tail"] == []
    assert result["state"]["restart_count"] == 0 and result["state"]["health"] == "none"


def test_crash_loop_with_restart_policy_fails_with_its_log(start):
    name = start(
        "loop",
        'echo "starting with password $DB_PASSWORD"; echo "FATAL: data directory has wrong ownership" >&2; exit 3',
        restart_policy={"Name": "unless-stopped"},
    )
    result = health(name, timeout=30, stable_seconds=10, interval=0.5)
    assert result.get("failed")
    assert result["status"] == "restarting", result
    assert result["msg"].startswith(f"{name} did not become healthy: ")
    assert "FATAL: data directory has wrong ownership" in result["log_tail"]
    assert "FATAL: data directory has wrong ownership" in result["msg"]
    assert len(result["log_tail"]) <= 20
    assert SECRET not in str(result)
    assert "starting with password ********" in result["log_tail"]


def test_exited_process_fails_at_once(start):
    name = start("exit", "echo bye; exit 7")
    result = health(name, timeout=30, stable_seconds=10, interval=0.5)
    assert result.get("failed")
    assert result["status"] == "exited" and result["state"]["exit_code"] == 7
    assert result["log_tail"] == ["bye"]
    assert result["waited"] < 10  # decided before the stable window would have ended


def test_healthcheck_decides_when_there_is_one(start):
    check = {"test": ["CMD-SHELL", "test -e /ok"], "interval": 500_000_000, "retries": 1}
    good = start("healthy", "touch /ok; exec sleep 300", healthcheck=check)
    bad = start("unhealthy", "echo no ok file; exec sleep 300", healthcheck=check)
    passed = health(good, timeout=30, stable_seconds=10, interval=0.5)
    assert not passed.get("failed"), passed.get("msg")
    assert passed["status"] == "healthy"
    failed = health(bad, timeout=30, stable_seconds=10, interval=0.5)
    assert failed.get("failed") and failed["status"] == "unhealthy"
    assert failed["log_tail"] == ["no ok file"]


def test_missing_container_and_bad_options():
    missing = health(f"ferry-it-hc-{uuid.uuid4().hex[:8]}-none", timeout=5, stable_seconds=1)
    assert missing.get("failed") and missing["status"] == "missing"
    assert missing["log_tail"] == []
    short = health("any", timeout=5, stable_seconds=10)
    assert short.get("failed") and "must be at least stable_seconds" in short["msg"]


def test_several_containers_are_watched_together_each_with_its_verdict(start):
    up = start("many-up", "exec sleep 300")
    healthy = start(
        "many-healthy",
        "touch /ok; exec sleep 300",
        healthcheck={"test": ["CMD-SHELL", "test -e /ok"], "interval": 500_000_000, "retries": 1},
    )
    down = start("many-down", 'echo "broke with $DB_PASSWORD"; exit 4')
    result = run_module(
        "docker_container_health", names=[up, healthy, down], timeout=30, stable_seconds=2, interval=0.5
    )
    assert result.get("failed") and result["msg"].startswith(f"{down}: ")
    containers = result["containers"]
    assert containers[up] == {"status": "running", "up": True, "reason": "", "log_tail": []}
    assert containers[healthy]["status"] == "healthy" and containers[healthy]["up"]
    assert containers[down]["status"] == "exited" and not containers[down]["up"]
    assert containers[down]["log_tail"] == ["broke with ********"] and SECRET not in str(result)
    both = run_module("docker_container_health", names=[up, healthy], timeout=30, stable_seconds=2, interval=0.5)
    assert not both.get("failed"), both.get("msg")
    assert {entry["up"] for entry in both["containers"].values()} == {True}
