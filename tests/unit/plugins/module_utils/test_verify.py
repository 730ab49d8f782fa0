# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Restore drills: scratch names, the isolating run-config rewrite, and the report."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils._names import image_problem, name_problem
from ansible_collections.ferry.docker.plugins.module_utils._policy import privileged_settings
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import (
    bind_sources,
    named_volumes,
    needed_networks,
    to_create_body,
)
from ansible_collections.ferry.docker.plugins.module_utils._verify import (
    VERIFY_LABEL,
    VerifyError,
    drill_entry,
    drill_report,
    scratch_names,
    scratch_plan,
    slug,
    step_timings,
)

RUN = "20261130t080000z-1a2b"


def manifest(**host_config):
    """A manifest like the backup role writes: a web container with a volume, a bind, ports, a restart policy."""
    run_config = {
        "name": "web",
        "image": "nginx:1.25",
        "config": {
            "Env": ["SECRET=hunter2"],
            "Labels": {"com.example": "x"},
            "Healthcheck": {"Test": ["CMD", "true"]},
        },
        "host_config": {
            "Binds": ["web-data:/data:rw", "/srv/www:/usr/share/nginx/html:ro,rprivate"],
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
            "NetworkMode": "frontend",
            "Links": ["db:db"],
            "LogConfig": {"Type": "syslog", "Config": {"syslog-address": "udp://logs.example:514"}},
            **host_config,
        },
        "networks": {
            "frontend": {"Aliases": ["www"], "IPAMConfig": {"IPv4Address": "10.9.0.5"}},
            "backend": {"Aliases": ["web-internal"]},
        },
        "network_definitions": {"frontend": {"Name": "frontend"}, "backend": {"Name": "backend"}},
        "volume_definitions": {
            "web-data": {
                "Name": "web-data",
                "Driver": "local",
                "DriverOpts": {"type": "none", "o": "bind", "device": "/srv/real-data"},
                "Labels": {},
            },
            "a" * 64: {"Name": "a" * 64, "Driver": "local", "Anonymous": True},
        },
        "mounts": [
            {"Type": "volume", "Destination": "/cache", "Name": "a" * 64, "Anonymous": True, "Origin": "image"},
            {"Type": "volume", "Destination": "/data", "Name": "web-data", "Anonymous": False, "Origin": "binds"},
            {"Type": "bind", "Destination": "/usr/share/nginx/html", "Source": "/srv/www", "Origin": "binds"},
        ],
    }
    return {
        "container": {"name": "web"},
        "run_config": run_config,
        "artifacts": [
            {"kind": "image", "name": "image", "file": "image.tar"},
            {"kind": "volume", "name": "web-data", "volume": "web-data", "type": "volume", "file": "v1.tar"},
            {"kind": "volume", "name": "bind:/srv/www", "source": "/srv/www", "type": "bind", "file": "v2.tar"},
            {"kind": "volume", "name": "a" * 64, "volume": "a" * 64, "anonymous": True, "file": "v3.tar"},
        ],
    }


def body_of(plan):
    return to_create_body(plan["run_config"])


def test_scratch_names_are_valid_docker_names():
    names = scratch_names("My_App.1", RUN)
    assert names == {
        "base": f"ferry-verify-{RUN}-my-app-1",
        "container": f"ferry-verify-{RUN}-my-app-1",
        "image": f"ferry-verify/my-app-1:{RUN}",
        "network": f"ferry-verify-{RUN}-my-app-1-net",
    }


@given(st.text(min_size=0, max_size=300))
def test_any_container_name_gives_valid_scratch_names(name):
    names = scratch_names(name, RUN)
    assert name_problem("container", names["container"]) is None
    assert name_problem("network", names["network"]) is None
    assert image_problem(names["image"]) is None
    assert len(slug(name)) <= 40


def test_long_names_stay_distinct():
    a, b = "x" * 60 + "a", "x" * 60 + "b"
    assert slug(a) != slug(b)
    assert len(slug(a)) == 40


@pytest.mark.parametrize("run", ["", "UPPER", "a/b", "x" * 41, None])
def test_a_bad_run_id_is_refused(run):
    with pytest.raises(VerifyError, match="run ID"):
        scratch_names("web", run)


def test_the_plan_publishes_nothing_restarts_nothing_and_keeps_logs_local():
    plan = scratch_plan(manifest(PublishAllPorts=True), RUN)
    host = plan["run_config"]["host_config"]
    for key in ("PortBindings", "PublishAllPorts", "RestartPolicy", "Links", "AutoRemove"):
        assert key not in host
    assert host["LogConfig"] == {"Type": "json-file", "Config": {}}
    body = body_of(plan)[1]
    assert "PortBindings" not in body["HostConfig"]
    assert any("no published ports (recorded: 80/tcp)" in c for c in plan["changes"])
    assert any("no restart policy (recorded: unless-stopped)" in c for c in plan["changes"])
    assert any("syslog" in c for c in plan["changes"])


def test_the_plan_attaches_only_to_an_internal_scratch_network():
    plan = scratch_plan(manifest(), RUN)
    network = f"ferry-verify-{RUN}-web-net"
    assert plan["network"] == network
    name, body, extra = body_of(plan)
    assert name == f"ferry-verify-{RUN}-web"
    assert needed_networks(body, extra) == [network]
    assert extra == []
    definition = plan["run_config"]["network_definitions"][network]
    assert definition["Internal"] is True
    assert definition["IPAM"]["Config"] == []
    assert definition["Labels"] == {VERIFY_LABEL: RUN}
    assert body["NetworkingConfig"]["EndpointsConfig"][network] == {"Aliases": ["www", "web-internal"]}
    assert any("links and static addresses dropped" in c for c in plan["changes"])


@pytest.mark.parametrize("mode", ["host", "bridge", "default", "container:db"])
def test_any_network_mode_but_none_becomes_the_scratch_network(mode):
    doc = manifest(NetworkMode=mode)
    doc["run_config"]["networks"] = {}
    plan = scratch_plan(doc, RUN)
    assert plan["run_config"]["host_config"]["NetworkMode"] == plan["network"]
    assert privileged_settings(body_of(plan)[1]) == []


def test_network_mode_none_stays_none():
    doc = manifest(NetworkMode="none")
    doc["run_config"]["networks"] = {}
    plan = scratch_plan(doc, RUN)
    assert plan["network"] == ""
    assert plan["run_config"]["host_config"]["NetworkMode"] == "none"
    assert plan["run_config"]["network_definitions"] == {}


def test_volumes_and_binds_become_plain_scratch_volumes_filled_from_the_bundle():
    plan = scratch_plan(manifest(), RUN)
    v1, v2 = f"ferry-verify-{RUN}-web-v1", f"ferry-verify-{RUN}-web-v2"
    body = body_of(plan)[1]
    assert body["HostConfig"]["Binds"] == [f"{v1}:/data:rw", f"{v2}:/usr/share/nginx/html:ro"]
    assert bind_sources(body) == []
    assert named_volumes(body) == [v1, v2]
    assert plan["volume_map"] == {"web-data": v1, "bind:/srv/www": v2}
    assert plan["volume_names"] == [v1, v2]
    assert plan["empty_volumes"] == []
    # The recorded driver options bound a host directory; the scratch volume has none.
    definitions = plan["run_config"]["volume_definitions"]
    assert definitions[v1] == {
        "Name": v1,
        "Driver": "local",
        "DriverOpts": {},
        "Labels": {VERIFY_LABEL: RUN},
        "Scope": "local",
        "Anonymous": False,
    }
    assert "web-data" not in definitions
    assert definitions["a" * 64]["Anonymous"] is True
    # The anonymous volume keeps its recorded name in the summary, so docker_container_restore fills it.
    summary = {m["Destination"]: m for m in plan["run_config"]["mounts"]}
    assert summary["/cache"]["Name"] == "a" * 64
    assert summary["/data"]["Name"] == v1
    assert summary["/usr/share/nginx/html"] == {
        "Type": "volume",
        "Destination": "/usr/share/nginx/html",
        "Name": v2,
        "Driver": "local",
        "Anonymous": False,
        "Origin": "binds",
    }
    assert privileged_settings(body) == []


def test_api_mounts_are_rewritten_too():
    doc = manifest(
        Binds=[],
        Mounts=[
            {"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock", "BindOptions": {}},
            {
                "Type": "volume",
                "Source": "data",
                "Target": "/data",
                "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"o": "bind", "device": "/etc"}}},
            },
            {"Type": "tmpfs", "Target": "/tmp"},
        ],
    )
    before = privileged_settings(to_create_body(doc["run_config"])[1])
    assert before, "the recorded mounts are privileged"
    plan = scratch_plan(doc, RUN)
    body = body_of(plan)[1]
    mounts = body["HostConfig"]["Mounts"]
    assert mounts[0] == {"Type": "volume", "Source": f"ferry-verify-{RUN}-web-v1", "Target": "/var/run/docker.sock"}
    assert mounts[1] == {"Type": "volume", "Source": f"ferry-verify-{RUN}-web-v2", "Target": "/data"}
    assert mounts[2] == {"Type": "tmpfs", "Target": "/tmp"}
    assert privileged_settings(body) == []
    assert plan["empty_volumes"] == [f"ferry-verify-{RUN}-web-v1", f"ferry-verify-{RUN}-web-v2"]
    assert any("no archive of bind /var/run/docker.sock" in c for c in plan["changes"])


def test_one_scratch_volume_per_source_even_when_mounted_twice():
    plan = scratch_plan(manifest(Binds=["shared:/a", "shared:/b:ro"]), RUN)
    v1 = f"ferry-verify-{RUN}-web-v1"
    assert plan["run_config"]["host_config"]["Binds"] == [f"{v1}:/a", f"{v1}:/b:ro"]
    assert plan["volume_names"] == [v1]


def test_volumes_from_and_container_namespaces_are_dropped():
    plan = scratch_plan(manifest(VolumesFrom=["db:ro"], PidMode="container:db", IpcMode="shareable"), RUN)
    host = plan["run_config"]["host_config"]
    assert "VolumesFrom" not in host and "PidMode" not in host
    assert host["IpcMode"] == "shareable"
    assert any("volumes from other containers" in c for c in plan["changes"])


def test_host_namespaces_stay_for_the_policy_to_refuse():
    plan = scratch_plan(manifest(PidMode="host", Privileged=True), RUN)
    assert privileged_settings(body_of(plan)[1]) == ["privileged mode", "the host's pid namespace (PidMode=host)"]


def test_the_container_carries_the_drill_label_and_the_scratch_image():
    doc = manifest()
    plan = scratch_plan(doc, RUN)
    body = body_of(plan)[1]
    assert body["Image"] == f"ferry-verify/web:{RUN}"
    assert body["Labels"] == {"com.example": "x", VERIFY_LABEL: RUN}
    assert body["Env"] == ["SECRET=hunter2"]
    assert body["Healthcheck"] == {"Test": ["CMD", "true"]}
    assert plan["container"] == "web"


def test_the_manifest_is_not_changed():
    doc = manifest()
    before = copy.deepcopy(doc)
    scratch_plan(doc, RUN)
    assert doc == before


def test_a_manifest_without_run_config_is_refused():
    with pytest.raises(VerifyError, match="no run_config"):
        scratch_plan({"artifacts": []}, RUN)


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc.update(sealed_env={"run_config": "YWdl"}),
        lambda doc: doc["artifacts"][0].update(encryption="age"),
    ],
)
def test_an_encrypted_bundle_is_refused_with_the_reason(change):
    doc = manifest()
    change(doc)
    with pytest.raises(VerifyError, match="the bundle is encrypted"):
        scratch_plan(doc, RUN)


def test_a_bad_bind_is_refused():
    with pytest.raises(VerifyError, match="not source:destination"):
        scratch_plan(manifest(Binds=["nocolon"]), RUN)


# ------------------------------------------------------------------------------------------------ report


def test_step_timings():
    marks = [["check", 100.0], ["restore", 101.5], ["health", 104.0], ["cleanup", 110.0]]
    assert step_timings(marks, 111.25) == {
        "check": 1.5,
        "restore": 2.5,
        "health": 6.0,
        "cleanup": 1.25,
        "total": 11.25,
    }
    assert step_timings([], 5) == {}


def test_a_passing_drill():
    entry = drill_entry(
        {
            "container": "web",
            "target": "host2",
            "bundle_host": "host1",
            "bundle": "/b/web/20261130T070000Z",
            "marks": [["check", 0], ["restore", 1], ["health", 2], ["cleanup", 3]],
            "finished": 4,
            "plan": {"name": "s", "image": "i", "network": "n", "volumes": [], "changes": ["no published ports"]},
            "cleanup": [
                {"kind": "container", "name": "s", "result": {"changed": True}},
                {"kind": "network", "name": "", "result": {"skipped": True}},
                {"kind": "volume", "__verify_volume": "v1", "changed": True},
            ],
            "health": "healthy",
        }
    )
    assert entry["status"] == "pass"
    assert entry["reason"] == "" and entry["failed_step"] == ""
    assert entry["timings"]["total"] == 4
    assert entry["scratch"] == {"container": "s", "image": "i", "network": "n", "volumes": []}
    assert entry["changes"] == ["no published ports"]


def test_a_damaged_bundle_fails_with_the_step_and_the_reason():
    entry = drill_entry(
        {
            "container": "web",
            "marks": [["check", 0], ["cleanup", 1]],
            "finished": 2,
            "error": {"task": "Check the bundle", "msg": "artifact v1.tar has sha256 abc,\n expected def"},
        }
    )
    assert entry["status"] == "fail"
    assert entry["failed_step"] == "check"
    assert entry["reason"] == (
        "the bundle failed its check (task: Check the bundle): artifact v1.tar has sha256 abc, expected def"
    )


def test_the_failed_step_is_the_last_one_started():
    entry = drill_entry(
        {
            "marks": [["check", 0], ["restore", 1], ["health", 2], ["cleanup", 9]],
            "error": {"msg": "unhealthy"},
            "log_tail": ["FATAL"],
        }
    )
    assert entry["failed_step"] == "health"
    assert entry["reason"].startswith("the restored container did not come up healthy: unhealthy")
    assert entry["log_tail"] == ["FATAL"]


def test_leftovers_fail_a_drill_that_passed():
    entry = drill_entry(
        {
            "marks": [["check", 0], ["cleanup", 1]],
            "cleanup": [
                {"kind": "volume", "__verify_volume": "v1", "failed": True, "msg": "volume is in use"},
                {"kind": "image tag", "name": "t", "result": {"failed": True, "msg": "conflict"}},
            ],
        }
    )
    assert entry["status"] == "fail"
    assert entry["failed_step"] == "cleanup"
    assert entry["leftovers"] == ["volume v1: volume is in use", "image tag t: conflict"]
    assert entry["reason"] == (
        "the drill could not remove what it created: volume v1: volume is in use; image tag t: conflict"
    )


def test_check_mode_only_checks():
    entry = drill_entry({"check_mode": True, "marks": [["check", 0], ["cleanup", 1]], "finished": 1})
    assert entry["status"] == "checked"
    assert drill_report([{"check_mode": True}])["status"] == "pass"
    failed = drill_entry({"check_mode": True, "error": {"msg": "damaged"}, "marks": [["check", 0]]})
    assert failed["status"] == "fail"


def test_the_report_passes_only_when_every_drill_passed():
    ok = {"marks": [["check", 0]], "finished": 1}
    bad = {"marks": [["check", 0]], "finished": 1, "error": {"msg": "x"}}
    assert {**drill_report([ok, ok], started=0, finished=3), "drills": None} == {
        "status": "pass",
        "passed": 2,
        "failed": 0,
        "drills": None,
        "started": 0.0,
        "duration": 3.0,
    }
    assert drill_report([ok, bad])["status"] == "fail"
    assert drill_report([])["status"] == "fail"
