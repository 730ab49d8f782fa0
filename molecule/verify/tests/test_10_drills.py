"""The hooks' evidence in the bundles prepare made on host1, and converge's drills of them on host2."""

from __future__ import annotations

import json

from conftest import (
    BACKUP_DIR,
    EVIDENCE,
    PG,
    PG_DUMP_VOLUME,
    PREFIX,
    REDIS,
    REDIS_PORT,
    REDIS_VOLUME,
    drill_leftovers,
    ephemeral_json,
    inspect,
)


def _bundle_entry(name):
    containers = ephemeral_json("backup-report.json")["hosts"]["host1"]["containers"]
    (entry,) = [c for c in containers if c["container"] == name]
    assert entry["status"] == "ok", entry
    return entry


def _volume_archive(host, entry, volume):
    manifest = json.loads(host.file(f"{entry['bundle']}/manifest.json").content_string)
    (artifact,) = [a for a in manifest["artifacts"] if a["kind"] == "volume" and a.get("volume") == volume]
    return f"{entry['bundle']}/{artifact['file']}"


def test_the_redis_hook_waited_for_bgsave_and_the_dump_is_in_the_bundle(lab):
    host1 = lab["host1"]
    entry = _bundle_entry(REDIS)
    assert [(h["phase"], h["source"], h["status"]) for h in entry["hooks"]] == [("pre", "command", "ok")]
    archive = _volume_archive(host1, entry, REDIS_VOLUME)
    (member,) = [m for m in host1.check_output(f"tar -tf {archive}").split() if m.endswith("dump.rdb")]
    # An RDB file starts with REDIS and stores short strings as they are: the value was only in memory
    # before the backup (Redis saves on its own after an hour), so the hook's BGSAVE wrote it.
    assert host1.check_output(f"tar -xOf {archive} {member} | head -c 5") == "REDIS"
    assert int(host1.check_output(f"tar -xOf {archive} {member} | grep -ac {EVIDENCE}")) >= 1


def test_the_postgres_hooks_ran_and_the_dump_is_in_the_bundle(lab):
    host1 = lab["host1"]
    entry = _bundle_entry(PG)
    assert [(h["phase"], h["source"], h["status"]) for h in entry["hooks"]] == [
        ("pre", "label:ferry.docker.pre-backup", "ok"),
        ("pre", "command", "ok"),
    ]
    archive = _volume_archive(host1, entry, PG_DUMP_VOLUME)
    (member,) = [m for m in host1.check_output(f"tar -tf {archive}").split() if m.endswith("postgres.sql")]
    dump = host1.check_output(f"tar -xOf {archive} {member}")
    assert "COPY public.evidence" in dump
    assert EVIDENCE in dump


def test_both_drills_passed_with_the_data_read_back_in_the_restored_servers():
    report = ephemeral_json("verify-report.json")
    assert (report["status"], report["passed"], report["failed"]) == ("pass", 2, 0), report
    drills = {d["container"]: d for d in report["drills"]}
    for name in (REDIS, PG):
        drill = drills[name]
        assert drill["status"] == "pass", drill
        assert (drill["target"], drill["bundle_host"]) == ("host2", "host1")
        assert drill["bundle"].startswith(f"{BACKUP_DIR}/{name}/2")  # latest, resolved to its bundle
        assert drill["command"]["status"] == "ok" and drill["command"]["exit_code"] == 0
        assert drill["scratch"]["container"].startswith(f"{PREFIX}-") and drill["scratch"]["container"].endswith(name)
        assert drill["scratch"]["network"] == drill["scratch"]["container"] + "-net"
        assert drill["leftovers"] == []
        assert set(drill["timings"]) >= {"check", "transfer", "restore", "health", "command", "cleanup", "total"}
        assert all(seconds >= 0 for seconds in drill["timings"].values())
        assert any(c.startswith("attached only to the internal scratch network") for c in drill["changes"])
    assert drills[REDIS]["health"] == "healthy"
    assert "no published ports (recorded: 6379/tcp)" in drills[REDIS]["changes"]
    assert "no restart policy (recorded: unless-stopped)" in drills[REDIS]["changes"]
    assert [v["artifact"] for v in drills[REDIS]["scratch"]["volumes"]] == [REDIS_VOLUME]


def test_the_drills_left_nothing_on_either_host(lab):
    for host in lab.values():
        assert drill_leftovers(host) == []
    assert lab["host2"].check_output("ls -A /var/lib/ferry/verify 2>/dev/null | grep -v '^.keys$' || true") == ""


def test_the_originals_were_not_touched(lab):
    host1 = lab["host1"]
    redis = inspect(host1, "container", REDIS)
    assert redis["State"]["Running"] and redis["RestartCount"] == 0
    assert redis["HostConfig"]["PortBindings"]["6379/tcp"][0]["HostPort"] == str(REDIS_PORT)
    assert host1.check_output(f"docker exec {REDIS} redis-cli GET evidence") == EVIDENCE
    assert inspect(host1, "container", PG)["State"]["Running"]
    assert inspect(lab["host2"], "container", REDIS) is None
