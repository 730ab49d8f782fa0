"""After converge: the sample service runs on host2 with the same run config, data and page."""

from __future__ import annotations

import json

from conftest import ALIAS, BIND, CURL, DIGEST_LABEL, NETWORK, PORT, SERVICE, VOLUME, inspect, volume_checksums

CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Healthcheck", "StopSignal", "Tty")
HOST_CONFIG_FIELDS = (
    "PortBindings",
    "RestartPolicy",
    "Init",
    "NetworkMode",
    "Privileged",
    "CapAdd",
    "CapDrop",
    "Memory",
    "NanoCpus",
    "CpuShares",
    "ReadonlyRootfs",
    "Tmpfs",
    "ExtraHosts",
    "Dns",
    "LogConfig",
    "SecurityOpt",
)


def _mounts(container):
    return sorted((m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"]) for m in container["Mounts"])


def _aliases(container, network):
    endpoint = container["NetworkSettings"]["Networks"][network]
    return sorted(a for a in endpoint.get("Aliases") or [] if not container["Id"].startswith(a))


def test_run_config_is_the_same_field_by_field(lab):
    source = inspect(lab["host1"], "container", SERVICE)
    target = inspect(lab["host2"], "container", SERVICE)
    assert target is not None, "the service does not exist on host2"
    for field in CONFIG_FIELDS:
        assert target["Config"].get(field) == source["Config"].get(field), field
    labels = dict(target["Config"]["Labels"])
    assert labels.pop(DIGEST_LABEL)
    assert labels == source["Config"]["Labels"]
    for field in HOST_CONFIG_FIELDS:
        assert target["HostConfig"].get(field) == source["HostConfig"].get(field), field
    assert _mounts(target) == _mounts(source)
    assert sorted(target["NetworkSettings"]["Networks"]) == sorted(source["NetworkSettings"]["Networks"]) == [NETWORK]
    assert _aliases(target, NETWORK) == _aliases(source, NETWORK) == [ALIAS]
    network = inspect(lab["host2"], "network", NETWORK)
    assert network["IPAM"]["Config"] == inspect(lab["host1"], "network", NETWORK)["IPAM"]["Config"]


def test_volume_data_has_the_same_checksums(lab):
    source = volume_checksums(lab["host1"], VOLUME)
    assert len(source) > 50
    assert volume_checksums(lab["host2"], VOLUME) == source


def test_the_page_is_served_on_the_published_port(lab):
    assert lab["host2"].check_output(f"{CURL} http://127.0.0.1:{PORT}/index.html") == f"<h1>served by {SERVICE}</h1>"


def test_target_runs_healthy_with_its_bind_mount(lab):
    target = inspect(lab["host2"], "container", SERVICE)
    assert target["State"]["Running"]
    assert target["State"]["Health"]["Status"] == "healthy"
    assert any(m["Type"] == "bind" and m["Source"] == BIND for m in target["Mounts"])


def test_source_is_stopped_and_still_present(lab):
    source = inspect(lab["host1"], "container", SERVICE)
    assert source is not None
    assert source["State"]["Status"] == "exited"


def test_no_bundle_left_on_target_and_kept_on_source(lab):
    # this scenario's only: the benchmark may be migrating its own containers to host2 meanwhile
    assert lab["host2"].check_output("ls -A /var/lib/ferry/incoming | grep -e '-ferry-mig' || true") == ""
    # <work dir>/<run>/<group>/<container>: the service is a group of its own
    bundles = lab["host1"].check_output(f"ls -d /var/lib/ferry/migrate/*/{SERVICE}/{SERVICE}").split()
    assert bundles
    assert lab["host1"].file(f"{bundles[-1]}/manifest.json").exists
    # This run's key is gone from both ends. Only this run's: the lab hosts outlive a scenario, and a
    # run stopped with its host (its guard gone too) keeps its key until the key's expiry-time.
    run = bundles[-1].split("/")[-3]
    assert f"ferry.docker migrate {run} " not in lab["host2"].file("/root/.ssh/authorized_keys").content_string
    assert not lab["host1"].file(f"/var/lib/ferry/migrate/.keys/{run}").exists


def test_rerun_report_says_unchanged():
    report = json.loads(open("/tmp/ferry-mig-report.json", encoding="utf-8").read())
    # The idempotence step ran converge again, so the report is the second run's.
    (entry,) = report["containers"]
    assert entry["status"] == "unchanged"
    assert (entry["container"], entry["source"], entry["target"]) == (SERVICE, "host1", "host2")
    assert entry["bytes_sent"] == 0
