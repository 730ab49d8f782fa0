"""A fleet plan: 6 containers across 3 hosts, each source host migrating at the same time."""

from __future__ import annotations

from conftest import CURL, inspect, playbook, start_service, volume_checksums, wait_healthy

# (container, source, target, host port); every host is both a source and a target.
PLAN = [
    ("ferry-mig-f1", "host1", "host2", 18091),
    ("ferry-mig-f2", "host1", "host3", 18092),
    ("ferry-mig-f3", "host2", "host3", 18093),
    ("ferry-mig-f4", "host2", "host1", 18094),
    ("ferry-mig-f5", "host3", "host1", 18095),
    ("ferry-mig-f6", "host3", "host2", 18096),
]


def test_fleet_plan_runs_in_parallel(lab, tmp_path):
    try:
        for name, source, _target, port in PLAN:
            start_service(lab[source], name, f"{name}-page", port)
        for name, source, _target, _port in PLAN:
            wait_healthy(lab[source], name)
        checksums = {name: volume_checksums(lab[source], f"{name}-page") for name, source, _t, _p in PLAN}
        plan = [{"container": name, "source": source, "target": target} for name, source, target, _port in PLAN]
        _proc, report = playbook("migrate", {"migrate_plan": plan}, tmp_path)
        assert report["status"] == "ok"
        assert sorted(report["sources"]) == ["host1", "host2", "host3"]
        entries = {entry["container"]: entry for entry in report["containers"]}
        assert sorted(entries) == sorted(name for name, *_rest in PLAN)
        for name, source, target, port in PLAN:
            assert entries[name]["status"] == "migrated", entries[name]
            assert inspect(lab[target], "container", name)["State"]["Health"]["Status"] == "healthy"
            assert inspect(lab[source], "container", name)["State"]["Status"] == "exited"
            assert volume_checksums(lab[target], f"{name}-page") == checksums[name]
            assert (
                lab[target].check_output(f"{CURL} http://127.0.0.1:{port}/index.html") == f"<h1>served by {name}</h1>"
            )
        # The source hosts worked side by side: every host's span of work overlaps every other's.
        spans = {
            host: (min(e["started_at"] for e in part["containers"]), max(e["ended_at"] for e in part["containers"]))
            for host, part in report["sources"].items()
        }
        for host, (start, end) in spans.items():
            for other, (other_start, other_end) in spans.items():
                assert start < other_end and other_start < end, (host, other, spans)
    finally:
        for name, *_rest, _port in PLAN:
            for host in lab.values():
                host.run(f"docker rm -f {name}; docker volume rm {name}-page")
