"""Backup hooks on Debian's PostgreSQL (ferry-lab/postgres): a label's pg_dump lands in the bundle,
configured hooks run in order, a post hook runs even when the backup fails, on_error=continue goes on.

The evidence is the data: the dump inside the bundle's volume archive, and rows the post hooks
inserted, read back with psql.
"""

from __future__ import annotations

import json

import pytest
from conftest import BACKUP_DIR, TIMESTAMP

PG = "ferry-molecule-backup-pg"
PG_DATA = "ferry-molecule-backup-pgdata"
PG_DUMP = "ferry-molecule-backup-pgdump"
DUMP_DIR = "/var/lib/postgresql/dump"
EVIDENCE = "hook-evidence-0f3a"
PG_DIR = f"{BACKUP_DIR}/{PG}"
# The container's own hooks, in its labels: a dump before, a row in hooklog after.
PRE_LABEL = f"pg_dump --no-owner --file={DUMP_DIR}/postgres.sql postgres"
POST_LABEL = "psql -X -q -v ON_ERROR_STOP=1 -c \"INSERT INTO hooklog VALUES ('post-label')\""
CHECKPOINT = {"command": ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "CHECKPOINT"], "timeout": 60}
POST_CONFIG = {"command": "psql -X -q -v ON_ERROR_STOP=1 -c \"INSERT INTO hooklog VALUES ('post-config')\""}


def psql(host, sql):
    return host.check_output(f"docker exec {PG} psql -X -A -t -v ON_ERROR_STOP=1 -c {json.dumps(sql)}")


def hooklog(host):
    return psql(host, "SELECT entry FROM hooklog ORDER BY entry").split()


def pg_bundles(host):
    if not host.file(PG_DIR).is_directory:
        return []
    return sorted(name for name in host.file(PG_DIR).listdir() if TIMESTAMP.match(name))


@pytest.fixture(scope="module")
def postgres(host):
    """PostgreSQL with its data and a dump directory on volumes, the hooks in its labels; removed afterwards."""
    remove = f"docker rm -f {PG}; docker volume rm {PG_DATA} {PG_DUMP}; rm -rf {PG_DIR}"
    host.run(remove)
    try:
        host.run_expect(
            [0],
            f"docker run -d --name {PG} --label ferry.test=backup"
            f" --label ferry.docker.pre-backup={json.dumps(PRE_LABEL)}"
            f" --label ferry.docker.post-backup={json.dumps(POST_LABEL)}"
            f" --mount type=volume,source={PG_DATA},target=/var/lib/postgresql/15/main"
            f" --mount type=volume,source={PG_DUMP},target={DUMP_DIR}"
            " ferry-lab/postgres:latest",
        )
        host.run_expect([0], f"docker exec -u root {PG} chown postgres:postgres {DUMP_DIR}")
        # Wait for the server (bounded by the number of tries, not by a time in an assertion).
        for _try in range(120):
            if host.run(f"docker exec {PG} pg_isready --quiet").rc == 0:
                break
            host.run("sleep 1")
        else:
            pytest.fail(f"PostgreSQL in {PG} did not accept connections: {host.run(f'docker logs {PG}').stderr}")
        psql(host, f"CREATE TABLE evidence (note text); INSERT INTO evidence VALUES ('{EVIDENCE}')")
        psql(host, "CREATE TABLE hooklog (entry text)")
        yield host
    finally:
        host.run(remove)


def test_hooks_run_around_the_capture_and_the_dump_is_in_the_bundle(postgres, run_backup):
    host = postgres
    proc, report = run_backup(
        {
            "backup_containers": [PG],
            "backup_compression": "none",
            "backup_keep_last": 0,
            "backup_hooks": {PG: {"pre": [CHECKPOINT], "post": [POST_CONFIG]}},
        }
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (entry,) = report["hosts"]["host1"]["containers"]
    assert entry["status"] == "ok"
    assert [(h["phase"], h["source"], h["status"], h["exit_code"]) for h in entry["hooks"]] == [
        ("pre", "label:ferry.docker.pre-backup", "ok", 0),
        ("pre", "command", "ok", 0),
        ("post", "label:ferry.docker.post-backup", "ok", 0),
        ("post", "command", "ok", 0),
    ]
    # The label's pg_dump ran before the capture: its dump is in the bundle's archive of the dump volume.
    manifest = json.loads(host.file(f"{entry['bundle']}/manifest.json").content_string)
    (archive,) = [a for a in manifest["artifacts"] if a["kind"] == "volume" and a["volume"] == PG_DUMP]
    path = f"{entry['bundle']}/{archive['file']}"
    (member,) = [m for m in host.check_output(f"tar -tf {path}").split() if m.endswith("postgres.sql")]
    dump = host.check_output(f"tar -xOf {path} {member}")
    assert EVIDENCE in dump
    assert "COPY public.hooklog" in dump
    # The post hooks ran after the capture: their rows are in the database, not in the dump.
    assert "post-label" not in dump
    assert hooklog(host) == ["post-config", "post-label"]


def test_a_failing_pre_hook_fails_the_backup_and_the_post_hooks_still_run(postgres, run_backup):
    host = postgres
    before_bundles, before_log = pg_bundles(host), hooklog(host)
    proc, report = run_backup(
        {
            "backup_containers": [PG],
            "backup_compression": "none",
            "backup_keep_last": 0,
            "backup_hooks": {PG: {"pre": [{"command": "echo cannot flush >&2; exit 7"}], "post": [POST_CONFIG]}},
        }
    )
    assert proc.returncode != 0, "a failing pre hook with on_error=fail should fail the play"
    (entry,) = report["hosts"]["host1"]["containers"]
    assert entry["status"] == "failed"
    assert "exited with code 7" in entry["error"]
    assert "cannot flush" in entry["error"]
    assert entry["bundle"] == ""
    assert pg_bundles(host) == before_bundles, "no bundle is left when a pre hook fails"
    assert sorted(hooklog(host)) == sorted([*before_log, "post-label", "post-config"])


def test_on_error_continue_reports_the_hook_and_backs_up(postgres, run_backup):
    host = postgres
    before_bundles = pg_bundles(host)
    proc, report = run_backup(
        {
            "backup_containers": [PG],
            "backup_compression": "none",
            "backup_keep_last": 0,
            "backup_hooks_from_labels": False,
            "backup_hooks": {PG: {"pre": [{"command": ["sh", "-c", "exit 5"], "on_error": "continue"}]}},
        }
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (entry,) = report["hosts"]["host1"]["containers"]
    assert entry["status"] == "ok"
    assert [(h["phase"], h["status"], h["exit_code"]) for h in entry["hooks"]] == [("pre", "failed", 5)]
    assert len(pg_bundles(host)) == len(before_bundles) + 1


def test_check_mode_runs_no_hook(postgres, run_backup):
    host = postgres
    before = hooklog(host)
    proc, _report = run_backup({"backup_containers": [PG], "backup_hooks": {PG: {"post": [POST_CONFIG]}}}, check=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert hooklog(host) == before
