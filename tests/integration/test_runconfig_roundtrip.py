# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Round trip of the run config through a real Docker engine.

A richly configured container is captured, removed (with its networks and named volume), and
recreated from ``to_create_body()``; ``diff_inspect()`` must then find no difference. Needs a
reachable engine (DOCKER_HOST or the local socket): without one the tests fail, they never skip.
Every resource is uniquely named ``ferry-it-rc-<random>-*`` and removed in ``finally``.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import uuid

import docker
import pytest
from fixture_image import IMAGE, busybox_rootfs

from ansible_collections.ferry.docker.plugins.module_utils import _runconfig as rc
from ansible_collections.ferry.docker.tests.support.inspect_compare import diff_inspect

RESOURCE_PREFIX = "ferry-it-rc"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_subnet(api):
    used = []
    for net in api.networks():
        for pool in (net.get("IPAM") or {}).get("Config") or []:
            if pool.get("Subnet"):
                used.append(ipaddress.ip_network(pool["Subnet"], strict=False))
    for third in range(64, 250):
        candidate = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(candidate.overlaps(other) for other in used):
            return candidate
    pytest.fail("No free 10.213.x.0/24 subnet for the test network.", pytrace=False)


def make_networks(api, res, count):
    subnet = free_subnet(api)
    names = []
    for index in range(count):
        name = res.name(f"net{index}")
        kwargs = {"labels": {"ferry.test": "runconfig"}}
        if index == 0:
            kwargs["ipam"] = docker.types.IPAMConfig(
                pool_configs=[docker.types.IPAMPool(subnet=str(subnet), gateway=str(subnet[1]))]
            )
            kwargs["options"] = {"com.docker.network.driver.mtu": "1400"}
        api.create_network(name, driver="bridge", **kwargs)
        res.networks.append(name)
        names.append(name)
    return names, subnet


def create_rich_container(api, res, networks, subnet, bind_dir):
    """A container with (nearly) every setting the brief lists, created as a user would."""
    volume = res.name("data")
    api.create_volume(volume, labels={"ferry.test": "runconfig"})
    res.volumes.append(volume)
    tcp, tcp_local, udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    host_config = api.create_host_config(
        binds={volume: {"bind": "/data", "mode": "rw"}, str(bind_dir): {"bind": "/srv/www", "mode": "ro"}},
        port_bindings={"80/tcp": tcp, "443/tcp": ("127.0.0.1", tcp_local), "53/udp": udp, "9000/tcp": None},
        restart_policy={"Name": "unless-stopped"},
        mem_limit="64m",
        mem_reservation="32m",
        nano_cpus=500000000,
        cpu_shares=512,
        pids_limit=128,
        ulimits=[docker.types.Ulimit(name="nofile", soft=1024, hard=2048)],
        cap_add=["NET_ADMIN", "SYS_PTRACE"],
        cap_drop=["MKNOD"],
        tmpfs={"/run": "rw,size=16m,mode=1777"},
        extra_hosts={"db.internal": "10.0.0.5"},
        dns=["9.9.9.9"],
        dns_search=["example.internal"],
        dns_opt=["ndots:2"],
        init=True,
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "10m"}),
        sysctls={"net.core.somaxconn": "1024"},
        oom_score_adj=100,
        shm_size="128m",
        security_opt=["no-new-privileges"],
        network_mode=networks[0],
    )
    networking_config = api.create_networking_config(
        {networks[0]: api.create_endpoint_config(aliases=["web", "www.example.internal"], ipv4_address=str(subnet[10]))}
    )
    container = api.create_container(
        IMAGE,
        command=["sleep", "3600"],
        name=res.name("web"),
        hostname="web01",
        domainname="example.internal",
        environment={"APP_MODE": "staging", "DB_PASSWORD": "s3cret"},
        labels={"com.example.role": "web"},
        ports=[80, (53, "udp"), 443, 9000],
        volumes=["/cache"],
        working_dir="/srv",
        stop_signal="SIGTERM",
        stop_timeout=20,
        healthcheck={"test": ["CMD", "true"], "interval": 10 * 10**9, "timeout": 3 * 10**9, "retries": 3},
        host_config=host_config,
        networking_config=networking_config,
    )
    res.containers.append(container["Id"])
    for network in networks[1:]:
        api.connect_container_to_network(container["Id"], network, aliases=["alias-" + network[-4:]])
    api.start(container["Id"])
    return container["Id"]


def capture_all(api, container_id):
    inspect = api.inspect_container(container_id)
    image = api.inspect_image(inspect["Config"]["Image"])
    networks = [api.inspect_network(name) for name in inspect["NetworkSettings"]["Networks"]]
    volumes = [api.inspect_volume(m["Name"]) for m in inspect["Mounts"] if m["Type"] == "volume"]
    return inspect, rc.capture(inspect, image, networks, volumes, engine_info=api.info())


def recreate(api, res, run_config, overrides=None):
    name, body, extra_networks = rc.to_create_body(run_config, overrides)
    created = api.create_container_from_config(body, name=name)
    res.containers.append(created["Id"])
    for network, endpoint in extra_networks:
        api.connect_container_to_network(created["Id"], network, **rc.connect_kwargs(endpoint))
    api.start(created["Id"])
    return created["Id"], body, extra_networks


def wait_running(api, container_id):
    for _attempt in range(50):
        if api.inspect_container(container_id)["State"]["Running"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"container {container_id} did not start: {api.inspect_container(container_id)['State']}")


def remove_and_recreate_definitions(api, res, run_config):
    """Remove the captured networks and named volumes and recreate them from their definitions."""
    before_networks = {n: rc.network_definition(api.inspect_network(n)) for n in run_config["network_definitions"]}
    for name in run_config["network_definitions"]:
        api.remove_network(name)
    named = [v for v, d in run_config["volume_definitions"].items() if not d["Anonymous"]]
    before_volumes = {v: rc.volume_definition(api.inspect_volume(v)) for v in named}
    for name in named:
        api.remove_volume(name)
    for definition in run_config["network_definitions"].values():
        api.create_network(**rc.network_create_kwargs(definition))
    for name in named:
        api.create_volume(**rc.volume_create_kwargs(run_config["volume_definitions"][name]))
    assert {n: rc.network_definition(api.inspect_network(n)) for n in before_networks} == before_networks
    assert {v: rc.volume_definition(api.inspect_volume(v)) for v in before_volumes} == before_volumes


@pytest.mark.parametrize("network_count", [1, 2], ids=["one-network", "two-networks"])
def test_capture_remove_recreate_gives_same_inspect(client, res, tmp_path, network_count):
    networks, subnet = make_networks(client, res, network_count)
    original_id = create_rich_container(client, res, networks, subnet, tmp_path)
    wait_running(client, original_id)
    original, run_config = capture_all(client, original_id)

    assert set(run_config["networks"]) == set(networks)
    assert run_config["networks"][networks[0]]["Aliases"] == ["web", "www.example.internal"]
    assert [m["Anonymous"] for m in run_config["mounts"] if m["Destination"] == "/cache"] == [True]

    client.remove_container(original_id, force=True, v=True)  # v: anonymous volumes only
    remove_and_recreate_definitions(client, res, run_config)
    recreated_id, body, extra_networks = recreate(client, res, run_config)
    wait_running(client, recreated_id)
    recreated = client.inspect_container(recreated_id)

    assert diff_inspect(original, recreated) == []
    assert [net for net, _endpoint in extra_networks] == networks[1:]
    # Capturing the recreated container gives the same create request: restore is idempotent.
    _inspect, again = capture_all(client, recreated_id)
    assert rc.to_create_body(again) == (run_config["name"], body, extra_networks)
    assert rc.config_digest(rc.to_create_body(again)[1], extra_networks) == rc.config_digest(body, extra_networks)


def test_recreate_with_overrides_changes_only_what_was_asked(client, res, tmp_path):
    networks, subnet = make_networks(client, res, 1)
    original_id = create_rich_container(client, res, networks, subnet, tmp_path / "old")
    wait_running(client, original_id)
    original, run_config = capture_all(client, original_id)
    new_bind = tmp_path / "new"
    new_bind.mkdir()
    other_net = res.name("other")
    client.create_network(other_net, driver="bridge")
    res.networks.append(other_net)
    run_config["networks"][networks[0]].pop("IPAMConfig")  # the static IP belongs to the first network's subnet
    new_port = free_port()
    client.stop(original_id, timeout=1)  # frees the host ports that port_map does not move

    overrides = {
        "name": res.name("copy"),
        "port_map": {"80/tcp": f"127.0.0.1:{new_port}"},
        "bind_map": {str(tmp_path / "old"): str(new_bind)},
        "network_map": {networks[0]: other_net},
        "labels": {"ferry.test.copy": "yes"},
    }
    recreated_id, _body, _extra = recreate(client, res, run_config, overrides)
    recreated = client.inspect_container(recreated_id)

    paths = sorted(path for path, _a, _b in diff_inspect(original, recreated))
    assert paths == [
        "Config.Labels.ferry.test.copy",
        "HostConfig.Binds",
        "HostConfig.NetworkMode",
        "HostConfig.PortBindings.80/tcp",
        "Mounts",  # the bind source
        "Name",
        f"NetworkSettings.Networks.{networks[0]}",
        f"NetworkSettings.Networks.{other_net}",
    ]
    assert recreated["HostConfig"]["PortBindings"]["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(new_port)}]
    assert f"{new_bind}:/srv/www:ro" in recreated["HostConfig"]["Binds"]
    assert recreated["NetworkSettings"]["Networks"][other_net]["Aliases"][:2] == ["web", "www.example.internal"]


@pytest.fixture
def rich_image(client):
    """An image that sets most Config fields itself (env, labels, ports, volume, user, entrypoint...)."""
    tag = f"ferry-test/busybox:it-{uuid.uuid4().hex[:8]}"
    changes = [
        "ENV PATH=/usr/local/bin:/bin APP_MODE=production GREETING=hello",
        "LABEL com.example.tier=base org.opencontainers.image.title=ferry",
        "EXPOSE 80/tcp 53/udp",
        'VOLUME ["/data"]',
        "WORKDIR /srv",
        "USER 1000:1000",
        'ENTRYPOINT ["/bin/sh", "-c"]',
        'CMD ["sleep 3600"]',
    ]
    repository, version = tag.rsplit(":", 1)
    client.import_image_from_data(busybox_rootfs(), repository=repository, tag=version, changes=changes)
    try:
        yield tag
    finally:
        client.remove_image(tag, force=True)


def test_cli_style_body_with_mounts_and_image_defaults(client, rich_image, res, tmp_path):
    """A body as the docker CLI sends it (explicit empties, --mount forms, systempaths=unconfined)."""
    # rich_image comes before res so that the containers are gone when the image is removed.
    volume = res.name("logs")
    client.create_volume(volume, driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=8m"})
    res.volumes.append(volume)
    body = {
        "Image": rich_image,
        "Hostname": "",
        "User": "0:0",
        "AttachStdout": True,
        "AttachStderr": True,
        "Env": ["APP_MODE=staging", "SECRET=x"],
        "Cmd": None,
        "Volumes": {"/anon-v": {}},
        "Labels": {"com.example.tier": "frontend", "com.example.extra": "1"},
        "HostConfig": {
            "Binds": None,
            "ContainerIDFile": "",
            "ConsoleSize": [0, 0],
            "LogConfig": {"Type": "", "Config": {}},
            "NetworkMode": "default",
            "PortBindings": {},
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "Dns": [],
            "DnsOptions": [],
            "DnsSearch": [],
            "MaskedPaths": [],
            "ReadonlyPaths": [],
            "Mounts": [
                {"Type": "volume", "Source": volume, "Target": "/var/log/app"},
                {"Type": "bind", "Source": str(tmp_path), "Target": "/etc/app", "ReadOnly": True},
                {"Type": "tmpfs", "Target": "/tmp/scratch", "TmpfsOptions": {"SizeBytes": 8388608, "Mode": 1016}},
                {"Type": "volume", "Target": "/anon-mount"},
            ],
        },
        "NetworkingConfig": {"EndpointsConfig": {}},
    }
    created = client.create_container_from_config(body, name=res.name("cli"))
    res.containers.append(created["Id"])
    client.start(created["Id"])
    wait_running(client, created["Id"])
    original, run_config = capture_all(client, created["Id"])

    assert run_config["config"]["Env"] == ["APP_MODE=staging", "SECRET=x"]
    assert run_config["config"]["Labels"] == {"com.example.tier": "frontend", "com.example.extra": "1"}
    assert run_config["host_config"]["MaskedPaths"] == []
    assert "RestartPolicy" not in run_config["host_config"]
    anonymous = sorted(m["Destination"] for m in run_config["mounts"] if m.get("Anonymous"))
    assert anonymous == ["/anon-mount", "/anon-v", "/data"]

    client.remove_container(created["Id"], force=True, v=True)
    recreated_id, _body, _extra = recreate(client, res, run_config)
    wait_running(client, recreated_id)
    assert diff_inspect(original, client.inspect_container(recreated_id)) == []
