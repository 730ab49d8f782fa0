"""Losing the controller while PostgreSQL's copy is already running on the target (issue 11's fault matrix,
with a real database and its own client).

A second PostgreSQL on host1 is migrated to host2. Once its copy runs on host2 (the health phase, the case
where two copies could serve), the controller's ansible-playbook is killed (SIGKILL, its main process only).
Nothing of the run is left but the guard on host1. Then, within the guard timeout + 30 s:

- psql answers on host1 with every row as before, and no copy runs on host2;
- no run key is left in host2's authorized_keys;
- a re-run of the same command converges: psql on host2 reads the same rows, the source is stopped, and
  the report says ``migrated``.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import ROOT_DIR, VOLUME, checksum, inspect, playbook, playbook_command, start_postgres

NAME = "ferry-pg-lost"
DATA_VOLUME = f"{VOLUME}-lost"
JOURNAL_DIR = f"/var/lib/ferry/journal-{NAME}"
GUARD_TIMEOUT = 20  # as in tests/integration/test_migrate_faults.py, which says why
KEY_COMMENT = "ferry.docker migrate"
REACH_SECONDS = 600  # for the run to reach the health phase


@pytest.fixture
def database(lab):
    """The database on host1, filled and answering; removed from both hosts afterwards."""
    start_postgres(lab["host1"], NAME, DATA_VOLUME)
    yield NAME
    for host in (lab["host1"], lab["host2"]):
        host.run(
            f"docker rm -f {NAME}; docker volume rm {DATA_VOLUME}; docker image rm ferry-migrate/{NAME}:latest; "
            f"rm -rf {JOURNAL_DIR} /var/lib/ferry/migrate/*/{NAME} /var/lib/ferry/incoming/*-{NAME}"
        )


def answers(host, name):
    """The checksum psql reads from ``name`` on ``host``, or None when it does not answer there."""
    if host.run(f"timeout 5 docker exec {name} pg_isready -q").rc != 0:
        return None
    try:
        return checksum(host, name)
    except AssertionError:  # testinfra's check_output: the server went away meanwhile
        return None


def running(host, name):
    data = inspect(host, "container", name)
    return bool(data and data["State"]["Running"])


def test_a_lost_controller_in_the_health_phase_leaves_postgres_serving_on_the_source(lab, database, tmp_path):
    host1, host2 = lab["host1"], lab["host2"]
    rows = answers(host1, database)
    assert rows and rows.startswith("50000 "), rows
    extra = {
        "migrate_source": "host1",
        "migrate_target": "host2",
        "migrate_containers": [database],
        "migrate_guard_timeout": GUARD_TIMEOUT,
        "migrate_journal_dir": JOURNAL_DIR,
        "migrate_health_stable_seconds": 6,
    }
    argv, env, _report = playbook_command("migrate", extra, tmp_path)
    run = subprocess.Popen(argv, cwd=ROOT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + REACH_SECONDS
        while not running(host2, database):
            assert run.poll() is None, f"the run ended before the health phase:\n{run.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, "the run did not reach the health phase"
            time.sleep(0.2)
        run.kill()  # SIGKILL to ansible-playbook's main process
        lost_at = time.monotonic()
        run.wait(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    where = {}
    while time.monotonic() - lost_at < GUARD_TIMEOUT + 30:
        where = {"host1": answers(host1, database), "host2": answers(host2, database)}
        if where["host1"] is not None and where["host2"] is None and not running(host2, database):
            break
        time.sleep(1)
    print(f"\nhealth SIGKILL, postgres: psql answered on {where} {time.monotonic() - lost_at:.1f} s after the loss")
    assert where == {"host1": rows, "host2": None}, where
    assert not running(host2, database)
    run_id = host1.check_output(f"cd {JOURNAL_DIR} && ls *.json")[: -len(".json")]
    lines = "?"
    while time.monotonic() - lost_at < GUARD_TIMEOUT + 30 and lines != "0":
        lines = host2.check_output(f"grep -c -F '{KEY_COMMENT} {run_id} ' ~/.ssh/authorized_keys || true")
        time.sleep(1)
    assert lines == "0", f"run {run_id} left {lines} key line(s) in host2's authorized_keys"

    # The same command again converges.
    _proc, report = playbook("migrate", extra, tmp_path)
    (entry,) = report["containers"]
    assert entry["status"] == "migrated", entry
    assert answers(host2, database) == rows
    assert not running(host1, database)
