"""export mode with the controller transfer, a new name and port, and cutover keep."""

from __future__ import annotations

from conftest import CURL, inspect, playbook, start_service, volume_checksums, wait_healthy

NAME = "ferry-mig-exp"
VOLUME = "ferry-mig-exp-page"


def test_export_through_the_controller(lab, tmp_path):
    start_service(lab["host1"], NAME, VOLUME, 18087)
    try:
        wait_healthy(lab["host1"], NAME)
        source = inspect(lab["host1"], "container", NAME)
        _proc, report = playbook(
            "migrate",
            {
                "migrate_source": "host1",
                "migrate_target": "host3",
                "migrate_containers": NAME,  # a comma-separated string, as an AWX survey gives it
                "migrate_mode": "export",
                "migrate_transfer": "controller",
                "migrate_controller_dir": str(tmp_path / "staging"),
                "migrate_cutover": "keep",
                "migrate_name_map": {NAME: f"{NAME}2"},
                "migrate_port_map": {"80/tcp": 18088},
                "migrate_health_url": "http://127.0.0.1:18088/index.html",
            },
            tmp_path,
        )
        (entry,) = report["containers"]
        assert entry["status"] == "migrated", entry
        assert entry["bytes_captured"] > 0 and entry["bytes_sent"] > 0
        assert entry["excluded_layers"] == 0  # export sends the whole filesystem
        assert entry["downtime_seconds"] > 0
        assert set(entry["phases"]) >= {"preflight", "capture", "transfer", "restore", "health", "cutover"}

        target = inspect(lab["host3"], "container", f"{NAME}2")
        assert target["State"]["Health"]["Status"] == "healthy"
        assert target["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "18088"}]}
        assert target["Config"]["Cmd"] == source["Config"]["Cmd"]
        assert target["Config"]["Env"] == source["Config"]["Env"]
        assert volume_checksums(lab["host3"], VOLUME) == volume_checksums(lab["host1"], VOLUME)
        page = lab["host3"].check_output(f"{CURL} http://127.0.0.1:18088/index.html")
        assert page == f"<h1>served by {NAME}</h1>"
        # cutover keep: the source was restarted right after the capture and still runs.
        assert inspect(lab["host1"], "container", NAME)["State"]["Running"]
        assert not any((tmp_path / "staging").rglob("*.zst"))  # the controller's copy is gone
    finally:
        lab["host1"].run(f"docker rm -f {NAME}; docker volume rm {VOLUME}")
        lab["host3"].run(f"docker rm -f {NAME}2; docker volume rm {VOLUME}")
