# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Unit tests for the run config (capture, create body, digest, redaction) and for the inspect
comparison of tests/support/inspect_compare.py that the round-trip tests rely on.

The fixtures under fixtures/runconfig/ are real ``docker inspect`` documents from Docker Engine
20.10.24 (API 1.41), produced by fixtures/runconfig/capture.sh:

* rich: every `docker run` option the brief lists, on an image that sets most Config fields;
* mounts: --mount volume/bind/tmpfs, anonymous volumes (-v, --mount, image VOLUME), systempaths;
* hostnet: --network host --pid host --ipc host --privileged --cgroupns private -it;
* plain / plainrich: nothing set beyond the image (busybox with CMD sh / the rich image).
"""

from __future__ import annotations

import copy
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _runconfig as rc
from ansible_collections.ferry.docker.tests.support.inspect_compare import (
    RUNTIME_FIELDS,
    diff_inspect,
    normalize_for_compare,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "runconfig")
SCENARIOS = ("rich", "mounts", "hostnet", "plain", "plainrich")


def load(scenario):
    with open(os.path.join(FIXTURES, scenario + ".json")) as handle:
        return json.load(handle)


def captured(scenario, **kwargs):
    doc = load(scenario)
    return rc.capture(doc["container"], doc["image"], doc["networks"], doc["volumes"], **kwargs)


def with_host_config(scenario, **changes):
    """Capture a fixture after changing HostConfig fields."""
    doc = load(scenario)
    doc["container"]["HostConfig"].update(changes)
    return rc.capture(doc["container"], doc["image"], doc["networks"], doc["volumes"])


def with_config(scenario, **changes):
    doc = load(scenario)
    doc["container"]["Config"].update(changes)
    return rc.capture(doc["container"], doc["image"], doc["networks"], doc["volumes"])


RICH_CONFIG = {
    "Cmd": ["-c", "sleep 3600"],
    "Domainname": "example.internal",
    "Entrypoint": ["/bin/sh"],
    "Env": ["APP_MODE=staging", "DB_PASSWORD=s3cret", "EMPTY="],
    "ExposedPorts": {"443/tcp": {}, "7000/tcp": {}, "9090/tcp": {}, "9999/tcp": {}},
    "Healthcheck": {
        "Interval": 10000000000,
        "Retries": 4,
        "StartPeriod": 5000000000,
        "Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"],
        "Timeout": 3000000000,
    },
    "Hostname": "web01",
    "Labels": {"com.example.role": "web", "com.example.tier": "frontend"},
    "StopSignal": "SIGTERM",
    "StopTimeout": 20,
    "User": "1001:1001",
    "Volumes": {"/cache": {}},
    "WorkingDir": "/var/www",
}

RICH_HOST_CONFIG = {
    "Binds": ["ferry-fx-data:/data/named:rw", "/srv/ferry-fx/www:/var/www:ro"],
    "CapAdd": ["CAP_NET_ADMIN", "CAP_SYS_PTRACE"],
    "CapDrop": ["CAP_MKNOD", "CAP_NET_RAW"],
    "CpuShares": 512,
    "CpusetCpus": "0",
    "DeviceCgroupRules": ["c 1:3 mr"],
    "Devices": [{"CgroupPermissions": "rwm", "PathInContainer": "/dev/zero-alias", "PathOnHost": "/dev/zero"}],
    "Dns": ["1.1.1.1", "9.9.9.9"],
    "DnsOptions": ["ndots:2"],
    "DnsSearch": ["example.internal"],
    "ExtraHosts": ["db.internal:10.0.0.5", "cache.internal:10.0.0.6"],
    "GroupAdd": ["10"],
    "Init": True,
    "LogConfig": {"Config": {"max-file": "3", "max-size": "10m"}, "Type": "json-file"},
    "Memory": 67108864,
    "MemoryReservation": 33554432,
    "MemorySwap": 134217728,
    "NanoCpus": 500000000,
    "NetworkMode": "ferry-fx-front",
    "OomScoreAdj": 100,
    "PidsLimit": 100,
    "PortBindings": {
        "443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8443"}],
        "53/udp": [{"HostIp": "", "HostPort": "5353"}],
        "7000/tcp": [{"HostIp": "", "HostPort": ""}],
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
        "9090/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9090"}, {"HostIp": "0.0.0.0", "HostPort": "9091"}],
    },
    "ReadonlyRootfs": True,
    "RestartPolicy": {"MaximumRetryCount": 5, "Name": "on-failure"},
    "SecurityOpt": ["no-new-privileges"],
    "ShmSize": 134217728,
    "Sysctls": {"net.core.somaxconn": "1024", "net.ipv4.ip_local_port_range": "20000 30000"},
    "Tmpfs": {"/run": "rw,size=16m,mode=1777"},
    "Ulimits": [{"Hard": 2048, "Name": "nofile", "Soft": 1024}, {"Hard": 512, "Name": "nproc", "Soft": 512}],
}

RICH_NETWORKS = {
    "ferry-fx-back": {"Aliases": ["backend-web"]},
    "ferry-fx-front": {"Aliases": ["web", "www.example.internal"], "IPAMConfig": {"IPv4Address": "172.30.57.10"}},
}


# --------------------------------------------------------------------------------------------
# capture over the real fixtures


def test_rich_top_level():
    run_config = captured("rich")
    assert sorted(run_config) == sorted(
        ["name", "image", "config", "host_config", "networks", "network_definitions", "volume_definitions", "mounts"]
    )
    assert run_config["name"] == "ferry-fx-web"
    assert run_config["image"] == "ferry-test/busybox:rich"


def test_rich_config_is_exactly_what_the_user_set():
    assert captured("rich")["config"] == RICH_CONFIG


def test_rich_host_config_is_exactly_what_the_user_set():
    assert captured("rich")["host_config"] == RICH_HOST_CONFIG


def test_rich_networks_keep_user_aliases_and_static_ip_only():
    run_config = captured("rich")
    assert run_config["networks"] == RICH_NETWORKS
    doc = load("rich")
    short_id = doc["container"]["Id"][:12]
    engine_aliases = doc["container"]["NetworkSettings"]["Networks"]["ferry-fx-front"]["Aliases"]
    assert short_id in engine_aliases and "web01" in engine_aliases  # what the engine added


def test_rich_network_definitions():
    definitions = captured("rich")["network_definitions"]
    assert sorted(definitions) == ["ferry-fx-back", "ferry-fx-front"]  # not "bridge"
    assert definitions["ferry-fx-front"] == {
        "Name": "ferry-fx-front",
        "Driver": "bridge",
        "Options": {"com.docker.network.bridge.name": "ferryfx0", "com.docker.network.driver.mtu": "1400"},
        "IPAM": {
            "Driver": "default",
            "Config": [{"Gateway": "172.30.57.1", "IPRange": "172.30.57.128/25", "Subnet": "172.30.57.0/24"}],
            "Options": {},
        },
        "Labels": {"com.example.net": "frontend"},
        "Internal": False,
        "Attachable": True,
        "EnableIPv6": False,
        "Scope": "local",
        "Ingress": False,
    }
    assert definitions["ferry-fx-back"]["Internal"] is True
    assert definitions["ferry-fx-back"]["Labels"] == {"com.example.net": "backend"}


def test_rich_volumes_and_mounts():
    run_config = captured("rich")
    by_dest = {m["Destination"]: m for m in run_config["mounts"]}
    assert sorted(by_dest) == ["/cache", "/data", "/data/named", "/run", "/var/www"]
    assert by_dest["/data/named"] == {
        "Type": "volume",
        "Destination": "/data/named",
        "RW": True,
        "Name": "ferry-fx-data",
        "Driver": "local",
        "Anonymous": False,
        "Origin": "binds",
        "Mode": "rw",
    }
    assert by_dest["/var/www"] == {
        "Type": "bind",
        "Destination": "/var/www",
        "RW": False,
        "Source": "/srv/ferry-fx/www",
        "Propagation": "rprivate",
        "Origin": "binds",
        "Mode": "ro",
    }
    assert (by_dest["/cache"]["Anonymous"], by_dest["/cache"]["Origin"]) == (True, "config")
    assert (by_dest["/data"]["Anonymous"], by_dest["/data"]["Origin"]) == (True, "image")
    assert by_dest["/run"] == {"Type": "tmpfs", "Destination": "/run", "RW": True, "Origin": "tmpfs"}
    volumes = run_config["volume_definitions"]
    assert volumes["ferry-fx-data"] == {
        "Name": "ferry-fx-data",
        "Driver": "local",
        "DriverOpts": {"device": "tmpfs", "o": "size=16m", "type": "tmpfs"},
        "Labels": {"com.example.vol": "data"},
        "Scope": "local",
        "Anonymous": False,
    }
    assert sorted(v["Anonymous"] for v in volumes.values()) == [False, True, True]


@pytest.mark.parametrize("scenario", ["plain", "plainrich"])
def test_plain_container_captures_nothing_but_name_image_network(scenario):
    run_config = captured(scenario)
    # `docker create` (attached) sets AttachStdout/AttachStderr; `docker run -d` does not.
    assert set(run_config["config"]) <= {"AttachStdout", "AttachStderr"}
    assert run_config["host_config"] == {}
    assert run_config["networks"] == {"bridge": {}}
    assert run_config["network_definitions"] == {}
    _name, body, extra = rc.to_create_body(run_config)
    assert extra == []
    assert "NetworkingConfig" not in body
    assert {k: v for k, v in body.items() if not k.startswith("Attach")} == {
        "Image": load(scenario)["container"]["Config"]["Image"],
        "HostConfig": {},
    }


def test_plainrich_image_volume_is_anonymous_and_not_declared_in_the_body():
    run_config = captured("plainrich")
    assert [(m["Destination"], m["Anonymous"], m["Origin"]) for m in run_config["mounts"]] == [("/data", True, "image")]
    assert "Volumes" not in rc.to_create_body(run_config)[1]


@pytest.mark.parametrize(
    ("destination", "anonymous", "origin"),
    [
        ("/anon-mount", True, "mounts"),
        ("/anon-v", True, "config"),
        ("/data", True, "image"),
        ("/etc/app", None, "mounts"),
        ("/tmp/scratch", None, "mounts"),
        ("/var/log/app", False, "mounts"),
    ],
)
def test_mounts_fixture_summary(destination, anonymous, origin):
    by_dest = {m["Destination"]: m for m in captured("mounts")["mounts"]}
    assert by_dest[destination].get("Anonymous") is anonymous
    assert by_dest[destination]["Origin"] == origin


def test_mounts_fixture_keeps_mount_form_and_systempaths():
    run_config = captured("mounts")
    doc = load("mounts")
    assert run_config["host_config"] == {
        "MaskedPaths": [],
        "ReadonlyPaths": [],
        "Mounts": doc["container"]["HostConfig"]["Mounts"],
        "RestartPolicy": {"MaximumRetryCount": 0, "Name": "always"},
    }
    assert run_config["config"] == {"User": "0:0", "Volumes": {"/anon-v": {}}}


def test_hostnet_fixture():
    run_config = captured("hostnet")
    assert run_config["host_config"] == {
        "IpcMode": "host",
        "NetworkMode": "host",
        "PidMode": "host",
        "Privileged": True,
    }
    assert run_config["config"] == {
        "AttachStderr": True,
        "AttachStdin": True,
        "AttachStdout": True,
        "Cmd": ["sleep", "3600"],
        "OpenStdin": True,
        "StdinOnce": True,
        "Tty": True,
    }
    name, body, extra = rc.to_create_body(run_config)
    assert (name, extra, "NetworkingConfig" in body) == ("ferry-fx-hostnet", [], False)


@pytest.mark.parametrize(
    ("engine_info", "expected"),
    [
        (None, {}),
        ({"Name": "vm", "CgroupVersion": "1"}, {"host_config": {"CgroupnsMode": "private"}}),
        ({"Name": "vm", "CgroupVersion": "2"}, {}),
        ({"Name": "other-host"}, {"config": {"Hostname": "vm"}}),
    ],
)
def test_engine_info_tells_engine_defaults_from_user_settings(engine_info, expected):
    plain = captured("hostnet")
    run_config = captured("hostnet", engine_info=engine_info)
    for section in ("config", "host_config"):
        extra = {k: v for k, v in run_config[section].items() if k not in plain[section]}
        assert extra == expected.get(section, {})


@pytest.mark.parametrize(
    ("engine_info", "log_type", "captured_log"),
    [
        (None, "json-file", False),
        (None, "journald", True),
        ({"LoggingDriver": "journald"}, "journald", False),
        ({"LoggingDriver": "journald"}, "json-file", True),
    ],
)
def test_log_driver_default_follows_engine(engine_info, log_type, captured_log):
    doc = load("plain")
    doc["container"]["HostConfig"]["LogConfig"] = {"Type": log_type, "Config": {}}
    run_config = rc.capture(doc["container"], doc["image"], engine_info=engine_info)
    assert ("LogConfig" in run_config["host_config"]) is captured_log


# --------------------------------------------------------------------------------------------
# what counts as default


DEFAULT_HOST_VALUES = [
    ("RestartPolicy", {"Name": "", "MaximumRetryCount": 0}),
    ("RestartPolicy", {"Name": "no", "MaximumRetryCount": 0}),
    ("NetworkMode", "default"),
    ("ShmSize", 67108864),
    ("ShmSize", 0),
    ("LogConfig", {"Type": "json-file", "Config": None}),
    ("IpcMode", "private"),
    ("IpcMode", ""),
    ("Runtime", "runc"),
    ("CgroupnsMode", "host"),
    ("CgroupnsMode", "private"),
    ("MaskedPaths", [*list(rc._MASKED_BASE), "/sys/devices/virtual/powercap"]),
    ("MaskedPaths", None),
    ("ReadonlyPaths", None),
    ("PidsLimit", None),
    ("MemorySwappiness", None),
    ("Init", None),
    ("OomKillDisable", False),
    ("OomKillDisable", None),
    ("Dns", []),
    ("Dns", None),
    ("Ulimits", None),
    ("BlkioWeightDevice", None),
    ("ConsoleSize", [40, 120]),
    ("ContainerIDFile", "/tmp/cid"),
    ("Memory", 0),
    ("Privileged", False),
    ("PortBindings", {}),
    ("KernelMemoryTCP", 0),
]


@pytest.mark.parametrize(("key", "value"), DEFAULT_HOST_VALUES, ids=lambda v: repr(v)[:40])
def test_default_host_config_values_are_not_captured(key, value):
    assert with_host_config("plain", **{key: value})["host_config"] == {}


NON_DEFAULT_HOST_VALUES = [
    ("RestartPolicy", {"Name": "always", "MaximumRetryCount": 0}),
    ("NetworkMode", "bridge"),
    ("ShmSize", 1048576),
    ("LogConfig", {"Type": "json-file", "Config": {"max-size": "1m"}}),
    ("LogConfig", {"Type": "local", "Config": {}}),
    ("IpcMode", "shareable"),
    ("Runtime", "runsc"),
    ("MaskedPaths", []),
    ("MaskedPaths", ["/proc/kcore"]),
    ("ReadonlyPaths", ["/proc/sys"]),
    ("PidsLimit", 0),
    ("MemorySwappiness", 0),
    ("Init", False),
    ("OomKillDisable", True),
    ("AutoRemove", True),
    ("PublishAllPorts", True),
    ("VolumesFrom", ["other:ro"]),
    ("StorageOpt", {"size": "1G"}),
    ("UsernsMode", "host"),
    ("UTSMode", "host"),
    ("PidMode", "host"),
    ("CpuQuota", 50000),
    ("CpuPeriod", 100000),
    ("CpusetMems", "0"),
    ("BlkioWeight", 300),
    ("BlkioDeviceReadBps", [{"Path": "/dev/sda", "Rate": 1048576}]),
    ("VolumeDriver", "nfs"),
    ("CgroupParent", "/ferry"),
    ("Isolation", "process"),
    ("DeviceRequests", [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]),
    ("OomScoreAdj", -500),
]


@pytest.mark.parametrize(("key", "value"), NON_DEFAULT_HOST_VALUES, ids=lambda v: repr(v)[:40])
def test_user_host_config_values_are_captured(key, value):
    assert with_host_config("plain", **{key: value})["host_config"] == {key: value}


def test_privileged_drops_the_engine_added_label_disable_only():
    run_config = with_host_config("hostnet", SecurityOpt=["label=disable", "apparmor=unconfined"])
    assert run_config["host_config"]["SecurityOpt"] == ["apparmor=unconfined"]


def test_privileged_with_default_masked_paths_list_is_captured():
    # A privileged container has no masked paths; a list there was asked for.
    run_config = with_host_config("hostnet", MaskedPaths=list(rc._MASKED_BASE))
    assert run_config["host_config"]["MaskedPaths"] == list(rc._MASKED_BASE)


@pytest.mark.parametrize(
    ("link", "expected"),
    [("/ferry-fx-db:/ferry-fx-plain/db", "ferry-fx-db:db"), ("db:database", "db:database"), ("/db", "db")],
)
def test_legacy_links_become_create_form(link, expected):
    assert with_host_config("plain", Links=[link])["host_config"]["Links"] == [expected]


# Config fields: (changes to the plainrich container's Config, expected captured config).
CONFIG_CASES = [
    ({"Hostname": "web"}, {"Hostname": "web"}),
    ({"Domainname": "example.org"}, {"Domainname": "example.org"}),
    ({"User": "0"}, {"User": "0"}),
    ({"WorkingDir": "/"}, {"WorkingDir": "/"}),
    ({"StopSignal": "SIGTERM"}, {"StopSignal": "SIGTERM"}),
    ({"StopTimeout": 0}, {"StopTimeout": 0}),
    ({"Healthcheck": {"Test": ["NONE"]}}, {"Healthcheck": {"Test": ["NONE"]}}),
    ({"Cmd": ["sleep 1"]}, {"Cmd": ["sleep 1"]}),
    # Overriding the entrypoint also pins Cmd: the engine would not inherit it any more.
    (
        {"Entrypoint": ["/bin/httpd"], "Cmd": ["httpd -f -p 80 -h /srv"]},
        {"Entrypoint": ["/bin/httpd"], "Cmd": ["httpd -f -p 80 -h /srv"]},
    ),
    ({"Entrypoint": [], "Cmd": ["sh"]}, {"Entrypoint": [], "Cmd": ["sh"]}),
    ({"Tty": True, "OpenStdin": True}, {"Tty": True, "OpenStdin": True}),
    ({"MacAddress": "02:42:ac:11:00:09"}, {"MacAddress": "02:42:ac:11:00:09"}),
    ({"NetworkDisabled": True}, {"NetworkDisabled": True}),
    ({"Shell": ["/bin/ash", "-c"]}, {"Shell": ["/bin/ash", "-c"]}),
    ({"OnBuild": ["RUN true"]}, {}),
    ({"FutureField": {"x": 1}}, {"FutureField": {"x": 1}}),
    ({"ArgsEscaped": False}, {}),
    (
        {"Labels": {"com.example.tier": "base", "org.opencontainers.image.title": "x", "new": ""}},
        {"Labels": {"org.opencontainers.image.title": "x", "new": ""}},
    ),
    (
        {"ExposedPorts": {"53/udp": {}, "80/tcp": {}, "8080/tcp": {}}, "Volumes": {"/data": {}, "/v": None}},
        {"ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/v": {}}},
    ),
    (
        {"Env": ["APP_MODE=dev", "PATH=/usr/local/bin:/bin", "GREETING=hello world"]},
        {"Env": ["APP_MODE=dev"]},
    ),
]


@pytest.mark.parametrize(("changes", "expected"), CONFIG_CASES, ids=lambda v: ",".join(v)[:40])
def test_config_fields_differing_from_the_image_are_captured(changes, expected):
    run_config = with_config("plainrich", **changes)
    assert {k: v for k, v in run_config["config"].items() if not k.startswith("Attach")} == expected


def test_hostname_equal_to_short_id_is_not_captured_but_another_id_is():
    doc = load("plain")
    assert doc["container"]["Config"]["Hostname"] == doc["container"]["Id"][:12]
    assert "Hostname" not in captured("plain")["config"]
    assert with_config("plain", Hostname="0123456789ab")["config"] == {"Hostname": "0123456789ab"}


def test_without_image_every_set_config_field_is_captured():
    doc = load("plainrich")
    run_config = rc.capture(doc["container"], None)
    image_config = doc["image"]["Config"]
    for key in ("Env", "Labels", "Entrypoint", "Cmd", "User", "WorkingDir", "StopSignal", "Healthcheck"):
        assert run_config["config"][key] == image_config[key]


def engine_merge_env(user, image):
    """The engine's merge of user and image env (moby daemon/commit.go merge())."""
    if not user:
        return list(image)
    keys = {e.split("=", 1)[0] for e in user}
    return list(user) + [e for e in image if e.split("=", 1)[0] not in keys]


@pytest.mark.parametrize(
    ("env", "image_env", "expected"),
    [
        (None, None, []),
        (["A=1"], ["A=1"], []),
        (["A=1", "B=2"], ["A=1", "B=2"], []),
        (["C=3", "A=1", "B=2"], ["A=1", "B=2"], ["C=3"]),
        (["A=9", "B=2"], ["A=1", "B=2"], ["A=9"]),
        # The user repeated an image entry in front: keep it, or the order would change.
        (["B=2", "C=3", "A=1"], ["A=1", "B=2"], ["B=2", "C=3"]),
        (["X=1"], [], ["X=1"]),
        (["NOVALUE", "A=1"], ["A=1"], ["NOVALUE"]),
    ],
)
def test_user_env(env, image_env, expected):
    assert rc._user_env(env, image_env) == expected


ENV_ENTRY = st.builds(
    lambda k, v: f"{k}={v}", st.sampled_from(["A", "B", "C", "PATH", "HOME"]), st.text("xyz/:", max_size=3)
)


@given(user=st.lists(ENV_ENTRY, max_size=4), image=st.lists(ENV_ENTRY, max_size=4, unique_by=lambda e: e[0]))
def test_user_env_reproduces_the_engine_merge(user, image):
    merged = engine_merge_env(user, image)
    assert engine_merge_env(rc._user_env(merged, image), image) == merged


# --------------------------------------------------------------------------------------------
# round trip: capture -> create body -> (engine merge) -> same Config/HostConfig


def engine_config(body, image_config):
    """What the engine stores as Config for a create body (image merge, moby daemon/commit.go)."""
    config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
    merged = dict(config)
    merged["Env"] = engine_merge_env(config.get("Env"), image_config.get("Env") or [])
    for key in ("Labels", "ExposedPorts", "Volumes"):
        combined = dict(image_config.get(key) or {})
        combined.update(config.get(key) or {})
        merged[key] = combined
    if not config.get("Entrypoint"):
        if not config.get("Cmd"):
            merged["Cmd"] = image_config.get("Cmd")
        if config.get("Entrypoint") is None:
            merged["Entrypoint"] = image_config.get("Entrypoint")
    for key in ("User", "WorkingDir", "StopSignal", "Healthcheck", "Shell"):
        if not config.get(key):
            merged[key] = image_config.get(key)
    return merged


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_round_trip_config_through_a_simulated_engine(scenario):
    doc = load(scenario)
    container = doc["container"]
    name, body, _extra = rc.to_create_body(captured(scenario))
    assert name == container["Name"].lstrip("/")
    stored = engine_config(body, doc["image"]["Config"])
    for key, value in container["Config"].items():
        if key in ("Hostname", "OnBuild"):
            continue
        # The engine stores Go zero values (False, 0, "") for fields the body leaves out.
        assert rc._same(stored.get(key), value) or (rc._empty(stored.get(key)) and rc._empty(value)), key
    if container["Config"]["Hostname"] != container["Id"][:12] and container["HostConfig"]["NetworkMode"] != "host":
        assert stored["Hostname"] == container["Config"]["Hostname"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_round_trip_host_config_against_engine_defaults(scenario):
    container = load(scenario)["container"]
    body = rc.to_create_body(captured(scenario))[1]
    for key, value in container["HostConfig"].items():
        if key in body["HostConfig"]:
            expected = value
            if key == "SecurityOpt" and container["HostConfig"].get("Privileged"):
                expected = [opt for opt in value if opt != "label=disable"]
            assert body["HostConfig"][key] == expected, key
        else:
            engine_added = key == "SecurityOpt" and value == ["label=disable"] and container["HostConfig"]["Privileged"]
            assert (
                engine_added
                or key in rc._HOST_SKIP
                or key in ("MaskedPaths", "ReadonlyPaths")
                or rc._empty(value)
                or any(rc._same(value, default) for default in rc.HOST_CONFIG_DEFAULTS.get(key, ()))
            ), key


def test_rich_create_body():
    name, body, extra = rc.to_create_body(captured("rich"))
    expected = dict(RICH_CONFIG)
    expected["Image"] = "ferry-test/busybox:rich"
    expected["HostConfig"] = RICH_HOST_CONFIG
    expected["NetworkingConfig"] = {"EndpointsConfig": {"ferry-fx-front": RICH_NETWORKS["ferry-fx-front"]}}
    assert name == "ferry-fx-web"
    assert body == expected
    assert extra == [("ferry-fx-back", {"Aliases": ["backend-web"]})]


def test_create_body_does_not_share_state_with_the_run_config():
    run_config = captured("rich")
    before = copy.deepcopy(run_config)
    _name, body, extra = rc.to_create_body(run_config, {"labels": {"x": "y"}, "port_map": {"80/tcp": 1}})
    body["HostConfig"]["Binds"].append("/x:/y")
    body["Labels"]["z"] = "1"
    extra[0][1]["Aliases"].append("more")
    assert run_config == before


# --------------------------------------------------------------------------------------------
# overrides


@pytest.mark.parametrize(
    ("port_map", "expected"),
    [
        ({"80/tcp": 18080}, {"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}),
        ({"80": "18080"}, {"80/tcp": [{"HostIp": "", "HostPort": "18080"}]}),
        ({"80/tcp": "127.0.0.1:18080"}, {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}]}),
        ({"80/tcp": "[::1]:18080"}, {"80/tcp": [{"HostIp": "::1", "HostPort": "18080"}]}),
        ({"53/udp": 5354}, {"53/udp": [{"HostIp": "", "HostPort": "5354"}]}),
        (
            {"9090/tcp": 19090},
            {"9090/tcp": [{"HostIp": "127.0.0.1", "HostPort": "19090"}, {"HostIp": "0.0.0.0", "HostPort": "19090"}]},
        ),
        (
            {"9090/tcp": ["127.0.0.2:1", 2]},
            {"9090/tcp": [{"HostIp": "127.0.0.2", "HostPort": "1"}, {"HostIp": "0.0.0.0", "HostPort": "2"}]},
        ),
        ({"80/tcp": None}, {"80/tcp": "absent"}),
    ],
)
def test_port_map(port_map, expected):
    _name, body, _extra = rc.to_create_body(captured("rich"), {"port_map": port_map})
    bindings = body["HostConfig"]["PortBindings"]
    for key, value in expected.items():
        assert bindings.get(key, "absent") == value
    untouched = set(RICH_HOST_CONFIG["PortBindings"]) - set(expected)
    assert {k: bindings[k] for k in untouched} == {k: RICH_HOST_CONFIG["PortBindings"][k] for k in untouched}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port_map": {"8081/tcp": 1}}, "port_map names 8081/tcp"),
        ({"port_map": {"9090/tcp": [1, 2, 3]}}, "gives 3 host bindings but the container has 2"),
        ({"volume_map": {}}, "Unknown override(s) volume_map"),
    ],
)
def test_bad_overrides_are_reported(overrides, message):
    with pytest.raises(rc.RunConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rc.to_create_body(captured("rich"), overrides)


def test_unpublishing_the_only_port_drops_port_bindings():
    run_config = captured("plain")
    run_config["host_config"]["PortBindings"] = {"80/tcp": [{"HostIp": "", "HostPort": "80"}]}
    assert "PortBindings" not in rc.to_create_body(run_config, {"port_map": {"80/tcp": None}})[1]["HostConfig"]


@pytest.mark.parametrize(
    ("bind_map", "expected_source"),
    [
        ({"/srv/ferry-fx": "/data/fx"}, "/data/fx/www"),
        ({"/srv/ferry-fx/": "/data/fx/"}, "/data/fx/www"),
        ({"/srv/ferry-fx/www": "/web"}, "/web"),
        ({"/srv/ferry-fx": "/a", "/srv/ferry-fx/www": "/b"}, "/b"),
        ({"/srv/ferry": "/nope"}, "/srv/ferry-fx/www"),
        ({"/": "/mnt/old"}, "/mnt/old/srv/ferry-fx/www"),
        ({"/srv/ferry-fx/www": "/"}, "/"),
        ({}, "/srv/ferry-fx/www"),
    ],
)
def test_bind_map_in_binds(bind_map, expected_source):
    _name, body, _extra = rc.to_create_body(captured("rich"), {"bind_map": bind_map})
    assert body["HostConfig"]["Binds"] == ["ferry-fx-data:/data/named:rw", expected_source + ":/var/www:ro"]


def test_bind_map_in_mounts_leaves_volumes_alone():
    _name, body, _extra = rc.to_create_body(captured("mounts"), {"bind_map": {"/srv/ferry-fx": "/opt/fx"}})
    sources = [(m["Type"], m.get("Source")) for m in body["HostConfig"]["Mounts"]]
    assert sources == [("volume", "ferry-fx-logs"), ("bind", "/opt/fx/conf"), ("tmpfs", None), ("volume", None)]


def test_network_map_renames_primary_and_extra_networks():
    overrides = {"network_map": {"ferry-fx-front": "front2", "ferry-fx-back": "back2"}}
    _name, body, extra = rc.to_create_body(captured("rich"), overrides)
    assert body["HostConfig"]["NetworkMode"] == "front2"
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"front2": RICH_NETWORKS["ferry-fx-front"]}}
    assert extra == [("back2", {"Aliases": ["backend-web"]})]


def test_network_map_moves_a_default_bridge_container_to_a_user_network():
    _name, body, extra = rc.to_create_body(captured("plain"), {"network_map": {"bridge": "appnet"}})
    assert body["HostConfig"]["NetworkMode"] == "appnet"
    assert extra == []


def test_network_map_rewrites_a_container_network_mode():
    run_config = with_host_config("plain", NetworkMode="container:" + "a" * 64)
    run_config["networks"] = {}
    overrides = {"network_map": {"container:" + "a" * 64: "container:db"}}
    _name, body, extra = rc.to_create_body(run_config, overrides)
    assert (body["HostConfig"]["NetworkMode"], extra) == ("container:db", [])


def test_name_image_and_labels_overrides():
    overrides = {"name": "web-copy", "image": "registry.example/web:2", "labels": {rc.DIGEST_LABEL: "x", "a": "b"}}
    name, body, _extra = rc.to_create_body(captured("rich"), overrides)
    assert name == "web-copy"
    assert body["Image"] == "registry.example/web:2"
    assert body["Labels"] == {"com.example.role": "web", "com.example.tier": "frontend", rc.DIGEST_LABEL: "x", "a": "b"}


def test_default_bridge_container_later_connected_to_a_user_network():
    run_config = captured("plain")
    run_config["networks"]["appnet"] = {"Aliases": ["app"]}
    _name, body, extra = rc.to_create_body(run_config)
    assert "NetworkingConfig" not in body
    assert extra == [("appnet", {"Aliases": ["app"]})]


def test_missing_image_is_an_error():
    run_config = captured("plain")
    run_config["image"] = None
    with pytest.raises(rc.RunConfigError, match="no image"):
        rc.to_create_body(run_config)


def test_capture_rejects_non_inspect_input():
    with pytest.raises(rc.RunConfigError):
        rc.capture({"Id": "x"}, None)


def test_missing_network_and_volume_inspects_give_minimal_definitions():
    doc = load("rich")
    run_config = rc.capture(doc["container"], doc["image"])
    assert run_config["network_definitions"] == {
        "ferry-fx-back": {"Name": "ferry-fx-back"},
        "ferry-fx-front": {"Name": "ferry-fx-front"},
    }
    assert run_config["volume_definitions"]["ferry-fx-data"] == {
        "Name": "ferry-fx-data",
        "Driver": "local",
        "DriverOpts": {},
        "Labels": {},
        "Anonymous": False,
    }


def test_inspects_may_be_given_as_dicts_by_name():
    doc = load("rich")
    nets = {n["Name"]: n for n in doc["networks"]}
    vols = {v["Name"]: v for v in doc["volumes"]}
    assert rc.capture(doc["container"], doc["image"], nets, vols) == captured("rich")


# --------------------------------------------------------------------------------------------
# network / volume definitions and SDK call arguments


def test_network_create_kwargs():
    definition = captured("rich")["network_definitions"]["ferry-fx-front"]
    assert rc.network_create_kwargs(definition) == {
        "name": "ferry-fx-front",
        "driver": "bridge",
        "options": {"com.docker.network.bridge.name": "ferryfx0", "com.docker.network.driver.mtu": "1400"},
        "ipam": {
            "Driver": "default",
            "Config": [{"Gateway": "172.30.57.1", "IPRange": "172.30.57.128/25", "Subnet": "172.30.57.0/24"}],
            "Options": None,
        },
        "check_duplicate": True,
        "internal": False,
        "labels": {"com.example.net": "frontend"},
        "enable_ipv6": False,
        "attachable": True,
    }
    assert rc.network_create_kwargs(definition, name="renamed")["name"] == "renamed"


def test_network_create_kwargs_minimal_definition():
    assert rc.network_create_kwargs({"Name": "n"}) == {
        "name": "n",
        "driver": None,
        "options": None,
        "ipam": None,
        "check_duplicate": True,
        "internal": False,
        "labels": None,
        "enable_ipv6": False,
        "attachable": None,
    }


def test_network_create_kwargs_swarm_scope_and_ingress():
    kwargs = rc.network_create_kwargs({"Name": "n", "Scope": "swarm", "Ingress": True, "Driver": "overlay"})
    assert (kwargs["scope"], kwargs["ingress"], kwargs["driver"]) == ("swarm", True, "overlay")


def test_volume_create_kwargs():
    definition = captured("rich")["volume_definitions"]["ferry-fx-data"]
    assert rc.volume_create_kwargs(definition) == {
        "name": "ferry-fx-data",
        "driver": "local",
        "driver_opts": {"device": "tmpfs", "o": "size=16m", "type": "tmpfs"},
        "labels": {"com.example.vol": "data"},
    }
    assert rc.volume_create_kwargs({"Name": "v"}) == {
        "name": "v",
        "driver": "local",
        "driver_opts": None,
        "labels": None,
    }


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ({}, {}),
        ({"Aliases": ["a", "b"]}, {"aliases": ["a", "b"]}),
        (
            {"IPAMConfig": {"IPv4Address": "10.0.0.2", "IPv6Address": "fd00::2", "LinkLocalIPs": ["169.254.1.1"]}},
            {"ipv4_address": "10.0.0.2", "ipv6_address": "fd00::2", "link_local_ips": ["169.254.1.1"]},
        ),
        ({"Links": ["db:database", "cache"]}, {"links": [("db", "database"), ("cache", None)]}),
        (
            {"DriverOpts": {"k": "v"}, "MacAddress": "02:42:ac:11:00:09"},
            {"driver_opt": {"k": "v"}, "mac_address": "02:42:ac:11:00:09"},
        ),
    ],
)
def test_connect_kwargs(endpoint, expected):
    assert rc.connect_kwargs(endpoint) == expected


def test_kwargs_match_the_docker_sdk_signatures():
    docker = pytest.importorskip("docker")
    import inspect

    run_config = captured("rich")
    network_kwargs = rc.network_create_kwargs(run_config["network_definitions"]["ferry-fx-front"])
    inspect.signature(docker.APIClient.create_network).bind(None, **network_kwargs)
    volume_kwargs = rc.volume_create_kwargs(run_config["volume_definitions"]["ferry-fx-data"])
    inspect.signature(docker.APIClient.create_volume).bind(None, **volume_kwargs)
    connect = rc.connect_kwargs({"Aliases": ["a"], "IPAMConfig": {"IPv4Address": "10.0.0.2"}, "Links": ["db:x"]})
    inspect.signature(docker.APIClient.connect_container_to_network).bind(None, "c", "n", **connect)
    name, body, _extra = rc.to_create_body(run_config)
    inspect.signature(docker.APIClient.create_container_from_config).bind(None, body, name=name)


# --------------------------------------------------------------------------------------------
# digest


def test_digest_is_hex_sha256_and_ignores_its_own_label():
    body = rc.to_create_body(captured("rich"))[1]
    digest = rc.config_digest(body)
    assert len(digest) == 64 and int(digest, 16) >= 0
    stamped = copy.deepcopy(body)
    assert rc.stamp_digest(stamped) == digest
    assert stamped["Labels"][rc.DIGEST_LABEL] == digest
    assert rc.config_digest(stamped) == digest
    assert rc.stamp_digest(stamped) == digest  # stamping twice changes nothing


def test_digest_of_odd_bodies():
    assert rc.config_digest({"Labels": ["not", "a", "dict"]}) != rc.config_digest({})
    assert rc.config_digest({"Env": ["A=é"]}) != rc.config_digest({"Env": ["A=e"]})


def test_digest_label_alone_does_not_count_as_labels():
    body = {"Image": "i", "HostConfig": {}}
    assert rc.config_digest(dict(body, Labels={rc.DIGEST_LABEL: "old"})) == rc.config_digest(body)
    assert rc.config_digest(dict(body, Labels={})) == rc.config_digest(body)


def test_digest_of_recaptured_stamped_body_is_stable():
    """Restore stamps the label; capturing that container again must give the same digest."""
    doc = load("rich")
    _name, body, extra = rc.to_create_body(captured("rich"))
    digest = rc.stamp_digest(body, extra)
    doc["container"]["Config"]["Labels"][rc.DIGEST_LABEL] = digest
    again = rc.capture(doc["container"], doc["image"], doc["networks"], doc["volumes"])
    assert again["config"]["Labels"][rc.DIGEST_LABEL] == digest
    _name, body_again, extra_again = rc.to_create_body(again)
    assert rc.config_digest(body_again, extra_again) == digest


def _paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))
    else:
        yield prefix


RICH_BODY = rc.to_create_body(captured("rich"))[1]


@pytest.mark.parametrize("path", sorted(_paths(RICH_BODY), key=repr), ids=lambda p: ".".join(map(str, p))[:60])
def test_digest_changes_when_any_value_changes(path):
    body = copy.deepcopy(RICH_BODY)
    target = body
    for key in path[:-1]:
        target = target[key]
    old = target[path[-1]]
    target[path[-1]] = (not old) if isinstance(old, bool) else ("changed" if old != "changed" else "other")
    assert rc.config_digest(body) != rc.config_digest(RICH_BODY)


@pytest.mark.parametrize(
    "change",
    [
        lambda b: b.update(Env=list(reversed(b["Env"]))),  # env order matters to the engine
        lambda b: b["HostConfig"].update(Dns=None),
        lambda b: b["HostConfig"].pop("Init"),
        lambda b: b.update(Labels=dict(b["Labels"], extra="1")),
    ],
)
def test_digest_sensitive_to_structure(change):
    body = copy.deepcopy(RICH_BODY)
    change(body)
    assert rc.config_digest(body) != rc.config_digest(RICH_BODY)


def test_digest_depends_on_extra_networks():
    _name, body, extra = rc.to_create_body(captured("rich"))
    assert rc.config_digest(body, extra) != rc.config_digest(body)
    changed = [(extra[0][0], {"Aliases": ["other"]})]
    assert rc.config_digest(body, changed) != rc.config_digest(body, extra)


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=15,
)


def _shuffled(value, rnd):
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@settings(max_examples=200)
@given(body=st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=6), rnd=st.randoms())
def test_digest_independent_of_key_order(body, rnd):
    assert rc.config_digest(_shuffled(body, rnd)) == rc.config_digest(body)


@given(body=st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=6), key=st.text(min_size=1, max_size=6))
def test_digest_ignores_none_values(body, key):
    if key in body:
        return
    assert rc.config_digest(dict(body, **{key: None})) == rc.config_digest(body)


# --------------------------------------------------------------------------------------------
# redaction


def test_redact_masks_env_values_only():
    run_config = captured("rich")
    before = copy.deepcopy(run_config)
    redacted = rc.redact(run_config)
    assert redacted["config"]["Env"] == ["APP_MODE=********", "DB_PASSWORD=********", "EMPTY=********"]
    assert "s3cret" not in json.dumps(redacted)
    assert run_config == before
    redacted["config"].pop("Env")
    before["config"].pop("Env")
    assert redacted == before


@pytest.mark.parametrize(
    ("env", "expected"),
    [(["A=1"], ["A=#"]), (["NOVALUE"], ["NOVALUE"]), (["A=b=c"], ["A=#"]), ([], [])],
)
def test_redact_mask_and_odd_entries(env, expected):
    redacted = rc.redact({"config": {"Env": env}}, mask="#")
    assert redacted["config"].get("Env", []) == expected


def test_redact_without_config():
    assert rc.redact({"name": "x"}) == {"name": "x"}


@pytest.mark.parametrize(
    ("entries", "prefix", "expected"),
    [
        (["A=1", "B=", "C", "D=x=y"], "", ["A=********", "B=********", "C", "D=********"]),
        ([], "", []),
        (None, "", []),
        (
            ['ENV PASSWORD="s3 cret"', 'CMD ["sh"]', "LABEL a=b", "ENV NAMEONLY", "ENV K=v=w"],
            "ENV ",
            ["ENV PASSWORD=********", 'CMD ["sh"]', "LABEL a=b", "ENV NAMEONLY", "ENV K=********"],
        ),
    ],
)
def test_redact_env(entries, prefix, expected):
    assert rc.redact_env(entries, prefix=prefix) == expected


ENV_NAMES = st.text(st.characters(exclude_characters="=\x00", exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ENV_NAMES, st.text(max_size=40)), max_size=8))
def test_redact_env_keeps_names_and_drops_every_value(pairs):
    entries = [f"{name}={value}" for name, value in pairs]
    redacted = rc.redact_env(entries, mask="#")
    assert redacted == [f"{name}=#" for name, _value in pairs]
    assert rc.redact({"config": {"Env": entries}}, mask="#")["config"].get("Env", []) == (redacted or [])


# --------------------------------------------------------------------------------------------
# comparing inspect documents


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_diff_of_a_document_with_itself_is_empty(scenario):
    doc = load(scenario)["container"]
    assert diff_inspect(doc, copy.deepcopy(doc)) == []


def _as_if_recreated(doc):
    """The same container as a new one: new id, times, addresses, anonymous volumes, no aliases yet."""
    new = copy.deepcopy(doc)
    old_short, new_id = doc["Id"][:12], "f" * 64
    new["Id"] = new_id
    new["Created"] = "2030-01-01T00:00:00Z"
    new["State"] = {"Status": "created", "Running": False, "Pid": 0}
    new["Image"] = "sha256:" + "e" * 64
    for key in ("ResolvConfPath", "HostnamePath", "HostsPath", "LogPath"):
        new[key] = ""
    new["GraphDriver"] = {"Name": "overlay2", "Data": None}
    new["HostConfig"]["ConsoleSize"] = [24, 80]
    if new["Config"]["Hostname"] == old_short:
        new["Config"]["Hostname"] = new_id[:12]
    new["HostConfig"]["RestartPolicy"]["Name"] = new["HostConfig"]["RestartPolicy"]["Name"].replace("no", "")
    for endpoint in new["NetworkSettings"]["Networks"].values():
        endpoint.update(IPAddress="10.9.9.9", MacAddress="02:00:00:00:00:01", EndpointID="x", NetworkID="y")
        endpoint["Aliases"] = [a for a in endpoint.get("Aliases") or [] if a != old_short] + [new_id[:12]]
        endpoint["DriverOpts"] = None
    new["NetworkSettings"]["Ports"] = {}
    new["NetworkSettings"]["SandboxID"] = "z"
    for mount in new["Mounts"]:
        if mount["Type"] == "volume":
            mount["Source"] = "/elsewhere/" + mount["Name"]
            if len(mount["Name"]) == 64:
                mount["Name"] = "d" * 64
    new["Mounts"].reverse()
    for key in ("Dns", "DnsOptions", "DnsSearch", "BlkioWeightDevice"):
        if new["HostConfig"].get(key) == []:
            new["HostConfig"][key] = None
    return new


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_runtime_fields_are_ignored(scenario):
    doc = load(scenario)["container"]
    assert diff_inspect(doc, _as_if_recreated(doc)) == []


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["Config"]["Env"].append("X=1"), "Config.Env"),
        (lambda d: d["Config"].update(Domainname="other"), "Config.Domainname"),
        (lambda d: d["HostConfig"].update(Memory=1), "HostConfig.Memory"),
        (lambda d: d["HostConfig"]["RestartPolicy"].update(Name="always"), "HostConfig.RestartPolicy.Name"),
        (lambda d: d["HostConfig"]["PortBindings"]["80/tcp"][0].update(HostPort="1"), "HostConfig.PortBindings.80/tcp"),
        (lambda d: d["HostConfig"].update(MaskedPaths=[]), "HostConfig.MaskedPaths"),
        (lambda d: d.update(Name="/renamed"), "Name"),
        (lambda d: d["Mounts"][0].update(RW=False), "Mounts"),
        (lambda d: d["Mounts"][2].update(Name="named"), "Mounts"),
        (
            lambda d: d["NetworkSettings"]["Networks"]["ferry-fx-front"]["Aliases"].remove("web"),
            "NetworkSettings.Networks.ferry-fx-front.Aliases",
        ),
        (
            lambda d: d["NetworkSettings"]["Networks"]["ferry-fx-front"]["IPAMConfig"].update(IPv4Address="1.2.3.4"),
            "NetworkSettings.Networks.ferry-fx-front.IPAMConfig.IPv4Address",
        ),
        (lambda d: d["NetworkSettings"]["Networks"].pop("ferry-fx-back"), "NetworkSettings.Networks.ferry-fx-back"),
    ],
)
def test_configuration_differences_are_reported(mutate, path):
    doc = load("rich")["container"]
    changed = copy.deepcopy(doc)
    mutate(changed)
    diffs = diff_inspect(doc, changed)
    assert [d[0] for d in diffs] == [path]
    assert diff_inspect(doc, changed, ignore=(path,)) == []


def test_diff_reports_values_and_ignores_prefixes():
    doc = load("rich")["container"]
    changed = copy.deepcopy(doc)
    changed["HostConfig"]["Memory"] = 1
    changed["Config"]["Image"] = "other:1"
    assert diff_inspect(doc, changed) == [
        ("Config.Image", "ferry-test/busybox:rich", "other:1"),
        ("HostConfig.Memory", 67108864, 1),
    ]
    assert diff_inspect(doc, changed, ignore=("Config", "HostConfig.Memory")) == []


def test_normalize_keeps_configuration_and_drops_runtime():
    doc = load("rich")["container"]
    normalized = normalize_for_compare(doc)
    for key in RUNTIME_FIELDS:
        assert key not in normalized
    assert normalized["NetworkSettings"] == {"Networks": RICH_NETWORKS}
    assert normalized["Config"]["Hostname"] == "web01"
    assert normalized["Config"]["Env"] == doc["Config"]["Env"]
    assert [m["Destination"] for m in normalized["Mounts"]] == ["/cache", "/data", "/data/named", "/var/www"]
    assert all("Source" not in m for m in normalized["Mounts"] if m["Type"] == "volume")
    assert normalized["Mounts"][0]["Name"] == "<anonymous>"
    assert "ConsoleSize" not in normalized["HostConfig"]
    assert doc["Id"] in json.dumps(doc)  # the input is not modified
    assert normalize_for_compare(load("plain")["container"])["Config"]["Hostname"] == "<short-id>"
    assert "Hostname" not in normalize_for_compare(load("hostnet")["container"])["Config"]


def test_hostname_change_is_reported_and_its_engine_alias_ignored():
    doc = load("rich")["container"]
    changed = copy.deepcopy(doc)
    changed["Config"]["Hostname"] = "web02"
    for endpoint in changed["NetworkSettings"]["Networks"].values():
        endpoint["Aliases"] = ["web02" if a == "web01" else a for a in endpoint["Aliases"]]
    assert diff_inspect(doc, changed) == [("Config.Hostname", "web01", "web02")]


def as_docker_26(doc):
    """``doc`` (Docker 20.10, API 1.41) as Docker 26 (API 1.45) shows the same container (issue 16)."""
    new = copy.deepcopy(doc)
    host_config = new["HostConfig"]
    host_config.pop("KernelMemory")  # gone since API 1.42
    host_config.pop("KernelMemoryTCP")  # left out when 0
    host_config["MaskedPaths"] = [*host_config["MaskedPaths"], "/sys/devices/virtual/powercap"]  # 26's default
    for endpoint in new["NetworkSettings"]["Networks"].values():
        endpoint["Aliases"] = [alias for alias in endpoint["Aliases"] if alias != doc["Id"][:12]]  # API 1.45
        endpoint["DNSNames"] = [*endpoint["Aliases"], doc["Id"][:12]]  # API 1.44+
    return new


def test_what_two_api_versions_only_spell_differently_is_no_difference():
    doc = load("rich")["container"]
    assert doc["HostConfig"]["KernelMemory"] == 0 and doc["HostConfig"]["KernelMemoryTCP"] == 0
    assert diff_inspect(doc, as_docker_26(doc)) == []
    assert diff_inspect(as_docker_26(doc), doc) == []


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d["HostConfig"].update(KernelMemory=8388608), "HostConfig.KernelMemory"),
        (lambda d: d["HostConfig"].update(KernelMemoryTCP=8388608), "HostConfig.KernelMemoryTCP"),
        (lambda d: d["HostConfig"]["MaskedPaths"].append("/srv/secret"), "HostConfig.MaskedPaths"),
        (lambda d: d["HostConfig"].update(MaskedPaths=[]), "HostConfig.MaskedPaths"),  # systempaths=unconfined
        (lambda d: d["HostConfig"]["ReadonlyPaths"].pop(), "HostConfig.ReadonlyPaths"),
    ],
)
def test_settings_the_engines_spell_alike_still_differ(mutate, path):
    doc = load("rich")["container"]
    changed = copy.deepcopy(doc)
    mutate(changed)
    assert [d[0] for d in diff_inspect(doc, changed)] == [path]


# --------------------------------------------------------------------------------------------
# what a create body needs on the engine


@pytest.mark.parametrize(
    ("host_config", "networking", "extra", "expected"),
    [
        ({}, None, [], []),
        ({"NetworkMode": "default"}, None, [], []),
        ({"NetworkMode": "host"}, None, [], []),
        ({"NetworkMode": "container:abc"}, None, [], []),
        ({"NetworkMode": "front"}, {"front": {"Aliases": ["w"]}}, [("back", {}), ("bridge", {})], ["front", "back"]),
        ({"NetworkMode": "bridge"}, None, [("back", {}), ("alpha", {})], ["back", "alpha"]),
        ({}, {"front": {}}, [("front", {})], ["front"]),
    ],
)
def test_needed_networks(host_config, networking, extra, expected):
    body = {"Image": "x", "HostConfig": host_config}
    if networking is not None:
        body["NetworkingConfig"] = {"EndpointsConfig": networking}
    assert rc.needed_networks(body, extra) == expected


def test_named_volumes_and_bind_sources():
    body = {
        "Image": "x",
        "HostConfig": {
            "Binds": ["data:/data", "/srv/www:/var/www:ro", "/srv/www:/again", "cache:/cache:rw"],
            "Mounts": [
                {"Type": "volume", "Source": "named", "Target": "/n"},
                {"Type": "volume", "Target": "/anonymous"},
                {"Type": "bind", "Source": "/etc/app", "Target": "/etc/app"},
                {"Type": "tmpfs", "Target": "/tmp"},
            ],
        },
    }
    assert rc.named_volumes(body) == ["cache", "data", "named"]
    assert rc.bind_sources(body) == ["/etc/app", "/srv/www"]
    assert rc.named_volumes({"Image": "x"}) == rc.bind_sources({"Image": "x"}) == []


def test_create_body_needs_of_the_rich_fixture():
    _name, body, extra = rc.to_create_body(captured("rich"), {"network_map": {"ferry-fx-back": "other"}})
    assert rc.needed_networks(body, extra) == ["ferry-fx-front", "other"]
    assert rc.named_volumes(body) == sorted(
        {b.split(":", 1)[0] for b in RICH_HOST_CONFIG.get("Binds") or [] if not b.startswith("/")}
        | {m["Source"] for m in RICH_HOST_CONFIG.get("Mounts") or [] if m.get("Type") == "volume" and m.get("Source")}
    )


def sidecar_run_config():
    return {
        "name": "sidecar",
        "image": "img",
        "config": {"Hostname": "abc123", "ExposedPorts": {"80/tcp": {}}, "Env": ["A=1"]},
        "host_config": {
            "NetworkMode": "container:0123456789abcdef",
            "VolumesFrom": ["main:ro"],
            "PortBindings": {"80/tcp": [{"HostPort": "8080"}]},
            "Dns": ["192.0.2.53"],
            "IpcMode": "container:main",
        },
        "networks": {},
    }


def test_create_body_points_group_references_at_the_target_names_and_leaves_out_the_shared_namespace():
    _name, body, extra = rc.to_create_body(
        sidecar_run_config(), {"references": {"0123456789abcdef": "main2", "main": "main2"}}
    )
    host_config = body["HostConfig"]
    assert host_config["NetworkMode"] == "container:main2" and host_config["IpcMode"] == "container:main2"
    assert host_config["VolumesFrom"] == ["main2:ro"]
    for key in ("PortBindings", "Dns"):
        assert key not in host_config
    assert "Hostname" not in body and "ExposedPorts" not in body and body["Env"] == ["A=1"]
    assert extra == []


def test_create_body_without_references_keeps_them_but_still_drops_what_the_engine_refuses():
    _name, body, _extra = rc.to_create_body(sidecar_run_config())
    assert body["HostConfig"]["NetworkMode"] == "container:0123456789abcdef"
    assert body["HostConfig"]["VolumesFrom"] == ["main:ro"] and "Hostname" not in body


def test_settings_the_engine_never_takes_from_the_image_are_captured_even_when_the_image_has_them():
    # `docker commit` writes the container's Domainname, Tty, MacAddress ... into the image it makes; the
    # engine does not copy them back at create. A container running from a migration's image (its second
    # migration) must keep them: found by host1 -> host3 -> host1 in tests/integration/test_mixed_fleet.py.
    own = {"Domainname": "example.internal", "Tty": True, "OpenStdin": True, "MacAddress": "02:42:5c:04:87:3f"}
    doc = load("plainrich")
    doc["container"]["Config"].update(own)
    doc["image"]["Config"].update(own)
    run_config = rc.capture(doc["container"], doc["image"])
    assert {key: run_config["config"].get(key) for key in own} == own
    # what the engine does inherit still is not repeated
    assert "WorkingDir" not in run_config["config"] and "User" not in run_config["config"]
