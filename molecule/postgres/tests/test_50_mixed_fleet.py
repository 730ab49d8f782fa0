"""PostgreSQL between Docker 20.10 and Docker 26 (issue 16, mixed fleets), with its own client.

create.yml gives host3 Debian 13 (Docker 26.1, API 1.45) while host1 stays Debian 12 (Docker 20.10, API 1.41);
the test checks the engines first, so that it never quietly becomes a same-version migration. A fresh
PostgreSQL 15 on host1, filled with psql, moves host1 -> host3 with playbooks/migrate.yml: psql in host3's
server reads the same rows (count and checksum) and accepts a write. Then, as an operator would, the stopped
source and its volume are removed from host1 and the database moves back host3 -> host1: psql reads the rows
with that write, and accepts another one.
"""

from __future__ import annotations

import pytest
from conftest import VOLUME, checksum, inspect, lab_host, playbook, psql, start_postgres

NAME = "ferry-pg-mixed"
DATA_VOLUME = f"{VOLUME}-mixed"
ENGINES = {"host1": ("20.10.", (1, 41)), "host3": ("26.", (1, 44))}  # version prefix, lowest API version
# One more row, written in the target's server; a fixed timestamp, so that the checksum is deterministic.
WRITE = (
    "INSERT INTO items SELECT nextval('items_next'), 'written on ' || {where!r}, '\\x00', '{{}}', "
    "timestamptz '2026-06-01 00:00:00+00' RETURNING id;"
)


@pytest.fixture(scope="module")
def mixed(lab):
    """host1 (Docker 20.10) and host3 (Docker 26) as testinfra hosts; fails if the engines are not those."""
    hosts = {"host1": lab["host1"], "host3": lab_host("host3")}
    for name, (version, api) in ENGINES.items():
        found = hosts[name].check_output("docker version --format '{{.Server.Version}} {{.Server.APIVersion}}'")
        server, _sep, api_version = found.partition(" ")
        assert server.startswith(version), f"{name} runs Docker {found}, expected {version}x"
        assert tuple(int(part) for part in api_version.split(".")) >= api, f"{name} runs Docker {found}"
    return hosts


@pytest.fixture
def database(mixed):
    """The database on host1, filled and answering; removed with its bundles from both hosts afterwards."""
    start_postgres(mixed["host1"], NAME, DATA_VOLUME)
    yield NAME
    for host in mixed.values():
        host.run(
            f"docker rm -f {NAME}; docker volume rm {DATA_VOLUME}; docker image rm ferry-migrate/{NAME}:latest; "
            f"rm -rf /var/lib/ferry/migrate/*/{NAME} /var/lib/ferry/migrate/*/*/{NAME} "
            f"/var/lib/ferry/incoming/*-{NAME}"
        )


def migrate(source, target, name, tmp_path):
    extra = {
        "migrate_source": source,
        "migrate_target": target,
        "migrate_containers": [name],
        "migrate_health_stable_seconds": 5,
        "migrate_health_timeout": 60,
    }
    _proc, report = playbook("migrate", extra, tmp_path)
    (entry,) = report["containers"]
    assert entry["status"] == "migrated", entry
    return entry


def serves(host, name, rows, where):
    """psql in host's server reads `rows`, runs as postgres, and accepts a write; the checksum after it."""
    target = inspect(host, "container", name)
    assert target["State"]["Running"] and target["RestartCount"] == 0
    assert checksum(host, name) == rows
    assert psql(host, name, "SELECT current_user, pg_is_in_recovery();") == "postgres|f"
    count = int(rows.split()[0])
    assert psql(host, name, WRITE.format(where=where)) == str(count + 1)
    after = checksum(host, name)
    assert after.startswith(f"{count + 1} ") and after != rows
    return after


def stopped(host, name):
    data = inspect(host, "container", name)
    return data is not None and not data["State"]["Running"]


def test_postgres_moves_from_docker_20_to_docker_26_and_back(mixed, database, tmp_path):
    host1, host3 = mixed["host1"], mixed["host3"]
    rows = checksum(host1, database)
    assert rows.startswith("50000 "), rows

    migrate("host1", "host3", database, tmp_path)
    rows = serves(host3, database, rows, "docker 26")
    assert stopped(host1, database)

    # What an operator does before moving it back: remove the stopped source and its old volume from host1.
    host1.run_expect([0], f"docker rm {database} && docker volume rm {DATA_VOLUME}")
    migrate("host3", "host1", database, tmp_path)
    serves(host1, database, rows, "docker 20.10")
    assert stopped(host3, database)
