"""After converge: PostgreSQL runs on host2 from the migrated volume, and psql reads every row."""

from __future__ import annotations

from conftest import SERVICE, STATE_DIR, VOLUME, checksum, inspect, psql, volume_root


def test_psql_on_the_target_reads_the_same_rows(lab):
    expected = lab["host1"].file(f"{STATE_DIR}/source.checksum").content_string.strip()
    assert expected.startswith("50000 "), expected
    assert checksum(lab["host2"], SERVICE) == expected


def test_the_target_runs_as_postgres_and_accepts_writes(lab):
    target = inspect(lab["host2"], "container", SERVICE)
    assert target["State"]["Running"] and target["RestartCount"] == 0
    assert target["Config"]["User"] == "postgres"
    assert psql(lab["host2"], SERVICE, "SELECT current_user, pg_is_in_recovery();") == "postgres|f"
    assert psql(lab["host2"], SERVICE, "SELECT nextval('items_next');") == "50001"


def test_the_data_directory_keeps_its_owner_and_mode(lab):
    # PostgreSQL refuses a data directory that is not 0700 and owned by its user.
    assert volume_root(lab["host2"], VOLUME) == volume_root(lab["host1"], VOLUME)
    assert volume_root(lab["host2"], VOLUME).startswith("700 ")


def test_the_source_is_stopped_and_kept(lab):
    source = inspect(lab["host1"], "container", SERVICE)
    assert source is not None and not source["State"]["Running"]
