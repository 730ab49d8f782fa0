# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_restore_preflight against a real Docker engine.

A clean target, then one obstacle at a time: a container or a process holding a host port, a
container of the same name (already restored, or different), a network whose subnet clashes, a
missing bind source, another architecture, too little disk, the layers the engine already has,
and an engine that does not answer. The module must never change anything. Needs a reachable
engine: the tests fail without one, never skip. Every resource is named ``ferry-it-pf-<random>-*``
and removed in ``finally``.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket

import pytest
from ferry_run import run_module
from fixture_image import IMAGE

RESOURCE_PREFIX = "ferry-it-pf"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


def free_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    number = sock.getsockname()[1]
    sock.close()
    return number


def free_subnet(client):
    """A /24 in 10.0.0.0/8 that no network of the engine overlaps."""
    taken = [
        ipaddress.ip_network(pool["Subnet"], strict=False)
        for network in client.networks()
        for pool in (network.get("IPAM") or {}).get("Config") or []
        if pool.get("Subnet") and ":" not in pool["Subnet"]
    ]
    for _attempt in range(200):
        candidate = ipaddress.ip_network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    pytest.fail("found no free /24 in 10.100.0.0/16-10.250.255.0/24 for a test network")


def run_config(res, suffix="c", port=None, binds=None, networks=None, cmd=("sleep", "300")):
    """A run config as docker_run_config_info returns it; ``networks`` is {name: definition or None}."""
    config = {"Cmd": list(cmd), "Labels": {"ferry.test": "preflight"}}
    host_config = {}
    if port is not None:
        config["ExposedPorts"] = {"80/tcp": {}}
        host_config["PortBindings"] = {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]}
    if binds:
        host_config["Binds"] = list(binds)
    definitions, endpoints = {}, {}
    for index, (name, definition) in enumerate(sorted((networks or {}).items())):
        if index == 0:
            host_config["NetworkMode"] = name
        endpoints[name] = {}
        if definition is not None:
            definitions[name] = definition
    return {
        "name": res.name(suffix),
        "image": IMAGE,
        "config": config,
        "host_config": host_config,
        "networks": endpoints,
        "network_definitions": definitions,
        "volume_definitions": {},
        "mounts": [],
    }


def network_definition(name, subnet=None):
    pools = [{"Subnet": str(subnet)}] if subnet else []
    return {"Name": name, "Driver": "bridge", "IPAM": {"Driver": "default", "Config": pools, "Options": {}}}


def preflight(check=False, **args):
    args.setdefault("fail_on_problems", False)
    result = run_module("docker_restore_preflight", check=check, **args)
    assert result.get("changed") is False, result
    return result


# --------------------------------------------------------------------------------------------- clean target


def test_clean_target_lists_what_a_restore_would_create(client, res, tmp_path):
    port, subnet = free_port(), free_subnet(client)
    existing_volume = res.name("existing")
    client.create_volume(existing_volume)
    bind_dir = tmp_path / "missing" / "www"
    network = res.name("net")
    config = run_config(
        res,
        port=port,
        binds=[f"{bind_dir}:/srv/www:ro", f"{res.name('data')}:/data", f"{existing_volume}:/old", f"{tmp_path}:/tmp/x"],
        networks={network: network_definition(network, subnet)},
    )
    engine = client.info()
    before = res.snapshot()

    first = preflight(run_config=config, architecture=engine["Architecture"], dest=str(tmp_path / "in"))
    assert first["ok"] is True and first["problems"] == [], first
    assert first["name"] == config["name"] and len(first["digest"]) == 64
    assert first["container_state"] == "absent" and first["container_running"] is False
    assert first["architecture"] == engine["Architecture"] and first["docker_version"] == engine["ServerVersion"]
    assert first["ports"] == [{"host_ip": "", "host_port": port, "proto": "tcp"}]
    assert first["networks_to_create"] == [network] and first["networks_existing"] == []
    assert first["volumes_to_create"] == [res.name("data")] and first["volumes_existing"] == [existing_volume]
    assert first["bind_paths_to_create"] == [str(bind_dir)] and not bind_dir.exists()
    assert first["free_bytes"]["dest"] > 0 and first["free_bytes"]["docker_root"] > 0
    assert first["layers_present"] == []

    # nothing changed, and the same answer again, in check mode too
    assert res.snapshot() == before
    second = preflight(check=True, run_config=config, architecture=engine["Architecture"], dest=str(tmp_path / "in"))
    for key in ("ok", "digest", "networks_to_create", "volumes_to_create", "volumes_existing", "bind_paths_to_create"):
        assert second[key] == first[key], key

    # the digest is the one the restore stamps, and afterwards the container is "same"
    restored = run_module("docker_container_restore", run_config=config, create_bind_paths=True)
    assert restored["changed"] is True and restored["digest"] == first["digest"], restored
    after = preflight(run_config=config)
    assert after["ok"] is True and after["problems"] == [], after
    assert after["container_state"] == "same" and after["container_running"] is True
    assert after["networks_existing"] == [network] and after["networks_to_create"] == []
    assert after["volumes_existing"] == sorted([res.name("data"), existing_volume])
    assert after["bind_paths_to_create"] == []


# --------------------------------------------------------------------------------------------- ports


def test_port_held_by_a_container_or_a_process(client, res):
    port = free_port()
    holder = client.create_container(
        IMAGE,
        command=["sleep", "300"],
        name=res.name("holder"),
        ports=[80],
        host_config=client.create_host_config(port_bindings={80: port}),
    )
    client.start(holder["Id"])
    config = run_config(res, port=port)
    result = preflight(run_config=config)
    assert result["ok"] is False, result
    expected = f"host port {port}/tcp is already published by container {res.name('holder')}"
    assert any(expected in p and "port_map (key 80/tcp)" in p for p in result["problems"]), result["problems"]

    # remapped to a port a process of this host listens on
    other = free_port()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("0.0.0.0", other))
        sock.listen(1)
        remapped = preflight(run_config=config, port_map={"80/tcp": other})
        assert remapped["ports"] == [{"host_ip": "", "host_port": other, "proto": "tcp"}]
        assert remapped["problems"] == [
            f"host port {other}/tcp is in use by a process on this host (not a container); stop it or remap the "
            "port with port_map (key 80/tcp)"
        ], remapped
    finally:
        sock.close()
    assert preflight(run_config=config, port_map={"80/tcp": other})["ok"] is True

    # a stopped container holds no port
    client.stop(holder["Id"], timeout=1)
    assert preflight(run_config=config)["ok"] is True


# --------------------------------------------------------------------------------------------- name


def test_existing_container_same_or_differs(client, res):
    port = free_port()
    config = run_config(res, port=port)
    restored = run_module("docker_container_restore", run_config=config)
    assert restored["changed"] is True, restored

    same = preflight(run_config=config)
    assert same["ok"] is True and same["problems"] == [], same  # its own port is no conflict
    assert same["container_state"] == "same" and same["container_running"] is True
    assert same["digest"] == restored["digest"]

    changed = run_config(res, port=port, cmd=("sleep", "301"))
    differs = preflight(run_config=changed)
    assert differs["ok"] is False and differs["container_state"] == "differs", differs
    assert differs["digest"] != restored["digest"]
    assert differs["problems"][0] == (
        f"container {config['name']} already exists on this host with another configuration; remove or rename it, "
        "or choose another name with name"
    )
    assert f"already published by container {config['name']}" in differs["problems"][1]

    client.stop(restored["container"], timeout=1)
    stopped = preflight(run_config=changed)
    assert stopped["container_state"] == "differs" and stopped["container_running"] is False
    assert len(stopped["problems"]) == 1  # a stopped container holds no port

    # another name: no conflict left
    renamed = preflight(run_config=changed, name=res.name("copy"))
    assert renamed["ok"] is True and renamed["container_state"] == "absent", renamed


# --------------------------------------------------------------------------------------------- networks


def test_network_subnet_overlap(client, res):
    subnet = free_subnet(client)
    existing = res.name("existing")
    client.create_network(existing, driver="bridge", ipam={"Driver": "default", "Config": [{"Subnet": str(subnet)}]})
    wanted = res.name("wanted")
    half = next(subnet.subnets(prefixlen_diff=1))
    config = run_config(res, networks={wanted: network_definition(wanted, half), existing: None})
    result = preflight(run_config=config)
    assert result["networks_to_create"] == [wanted] and result["networks_existing"] == [existing], result
    assert result["problems"] == [
        f"network {wanted} of container {config['name']} would be created with subnet {half}, which overlaps "
        f"subnet {subnet} of the existing network {existing}; map {wanted} to another network with network_map, "
        f"or remove or re-address network {existing}"
    ]
    # mapped onto the existing network, nothing is left to create
    mapped = preflight(run_config=config, network_map={wanted: existing})
    assert mapped["ok"] is True and mapped["networks_to_create"] == [], mapped

    # a missing network without a definition
    bare = run_config(res, networks={res.name("undefined"): None})
    undefined = preflight(run_config=bare)
    assert undefined["networks_to_create"] == [res.name("undefined")]
    assert "has no definition" in undefined["problems"][0] and "network_map" in undefined["problems"][0]
    assert res.snapshot()[1] == [existing]


# --------------------------------------------------------------------------------------------- host


def test_missing_bind_path_without_create_bind_paths(client, res, tmp_path):
    missing = tmp_path / "not" / "here"
    config = run_config(res, binds=[f"{missing}:/data"])
    assert preflight(run_config=config)["bind_paths_to_create"] == [str(missing)]
    result = preflight(run_config=config, create_bind_paths=False)
    assert result["ok"] is False and result["bind_paths_to_create"] == []
    assert result["problems"] == [
        f"bind mount source {missing} of container {config['name']} does not exist on this host; create it, "
        "move it with bind_map, or set create_bind_paths=true"
    ]
    (tmp_path / "elsewhere").mkdir()
    moved = preflight(run_config=config, create_bind_paths=False, bind_map={str(missing): str(tmp_path / "elsewhere")})
    assert moved["ok"] is True, moved
    blocked = run_config(res, binds=[f"{tmp_path / 'file' / 'sub'}:/data"])
    (tmp_path / "file").write_text("x")
    refused = preflight(run_config=blocked)
    assert "not a directory" in refused["problems"][0], refused


def test_a_program_the_transfer_needs_is_named_with_its_package(client, res):
    result = preflight(run_config=run_config(res), programs=["sh", "ferry-no-such-program"])
    assert result["ok"] is False, result
    assert result["problems"] == [
        f"ferry-no-such-program is not installed on host {client.info()['Name']} (not on PATH); install it"
    ]
    assert preflight(run_config=run_config(res), programs=["sh"])["ok"] is True


def test_the_migration_plan_refuses_a_source_without_a_program_it_needs(client, res):
    missing = run_module("docker_migrate_plan", containers=["any"], programs=["ferry-no-such-program"])
    assert missing.get("failed") and missing["msg"] == (
        "ferry-no-such-program is not installed on this host (not on PATH); install it"
    ), missing


def test_an_rsync_too_old_for_the_transfer_is_named_on_both_sides(client, res, tmp_path, monkeypatch):
    """An rsync before 3.2.3 (Debian 10, RHEL 8) fails mid-transfer on --mkpath; both checks name it first."""
    fake = tmp_path / "bin" / "rsync"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'rsync  version 3.1.3  protocol version 31'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    expected = (
        "is older than 3.2.3, the first release with --mkpath, which creates the receiving directory; install rsync "
        "3.2.3 or newer there (Debian 11 and later ship one)"
    )
    result = preflight(run_config=run_config(res), programs=["rsync"])
    assert result["ok"] is False and result["problems"] == [
        f"rsync 3.1.3 on host {client.info()['Name']} ({fake}) {expected}"
    ], result
    planned = run_module("docker_migrate_plan", containers=["any"], programs=["rsync"])
    assert planned.get("failed") and planned["msg"] == f"rsync 3.1.3 on this host ({fake}) {expected}", planned
    monkeypatch.undo()
    assert preflight(run_config=run_config(res), programs=["rsync"])["ok"] is True  # this host's own rsync


def test_the_docker_command_must_reach_the_engine_the_check_used(client, res, tmp_path, monkeypatch):
    """A direct migration's image stream and guard use the docker command on the target: one that reaches another
    engine, or none, is a problem before anything is touched."""
    # this host's command reaches this engine (lab/ensure-docker.sh starts it on the command's default socket)
    assert preflight(run_config=run_config(res), programs=["docker"])["ok"] is True
    # a play's environment reaches the module, not the ssh session that the stream and the guard use: not the check
    engine = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"  # as the other tests reach it
    with monkeypatch.context() as env:
        env.setenv("DOCKER_HOST", "unix:///nonexistent/ferry-it.sock")
        kept = preflight(run_config=run_config(res), programs=["docker"], docker_host=engine)
        assert kept["ok"] is True, kept
    name = client.info()["Name"]
    fake = tmp_path / "bin" / "docker"  # a docker command whose engine is another (a rootless one, say)
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'["OTHER:ID","/home/u/.local/share/docker"]\'\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    result = preflight(run_config=run_config(res), programs=["docker"])
    assert result["ok"] is False, result
    (problem,) = result["problems"]
    assert problem.startswith(
        f"the docker command on host {name} does not reach the engine this check used (it reaches another engine "
    ), problem
    assert "migrate_transfer=controller" in problem


def test_architecture(client, res):
    engine = client.info()["Architecture"]
    aliases = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf"}
    if engine in aliases:
        assert preflight(run_config=run_config(res), architecture=aliases[engine])["ok"] is True
    other = "s390x" if engine != "s390x" else "x86_64"
    result = preflight(run_config=run_config(res), architecture=other)
    assert result["ok"] is False and result["architecture"] == engine, result
    assert result["problems"][0].startswith(f"container {res.name('c')} was captured on architecture {other}")
    assert engine in result["problems"][0]


def test_required_bytes_larger_than_free(client, res, tmp_path):
    config = run_config(res)
    fits = preflight(run_config=config, dest=str(tmp_path / "in"), required_bytes=1, docker_required_bytes=1)
    assert fits["ok"] is True and fits["free_bytes"]["dest"] > 1, fits
    huge = 2**62
    result = preflight(run_config=config, dest=str(tmp_path / "in"), required_bytes=huge)
    assert result["ok"] is False, result
    assert str(tmp_path / "in") in result["problems"][0] and "bundle needs" in result["problems"][0]
    docker_side = preflight(run_config=config, docker_required_bytes=huge)
    assert docker_side["free_bytes"]["docker_root"] > 0
    assert "Docker's root" in docker_side["problems"][0], docker_side


def test_layers_present_is_a_prefix(client, res):
    layers = client.inspect_image(IMAGE)["RootFS"]["Layers"]
    bogus = "sha256:" + "0" * 64
    result = preflight(run_config=run_config(res), layers=[*layers, bogus])
    assert result["ok"] is True and result["layers_present"] == layers, result
    assert preflight(run_config=run_config(res), layers=[bogus, *layers])["layers_present"] == []


# --------------------------------------------------------------------------------------------- failing


def test_fail_on_problems_fails_with_every_problem(client, res, tmp_path):
    config = run_config(res, binds=[f"{tmp_path / 'gone'}:/data"])
    other = "s390x" if client.info()["Architecture"] != "s390x" else "x86_64"
    result = run_module("docker_restore_preflight", run_config=config, architecture=other, create_bind_paths=False)
    assert result.get("failed") is True, result
    assert result["msg"].startswith(f"container {config['name']} cannot be restored on host ")
    assert "2 problems" in result["msg"] and "(1) container" in result["msg"]
    assert f"(2) bind mount source {tmp_path / 'gone'}" in result["msg"]
    assert result["ok"] is False and len(result["problems"]) == 2
    assert res.snapshot() == ([], [], [])


def test_unreachable_engine(res):
    config = run_config(res)
    url = "unix:///nonexistent/ferry-docker.sock"
    reported = preflight(run_config=config, docker_host=url)
    assert reported["ok"] is False and reported["container_state"] is None, reported
    assert reported["problems"][0].startswith(f"the Docker engine at {url} does not answer")
    failed = run_module("docker_restore_preflight", run_config=config, docker_host=url)
    assert failed.get("failed") is True and url in failed["msg"], failed


def test_bad_overrides_fail_whatever_fail_on_problems(res):
    result = run_module("docker_restore_preflight", run_config=run_config(res), port_map={"81/tcp": 1})
    assert result.get("failed") is True and "port_map names 81/tcp" in result["msg"], result
    no_name = dict(run_config(res), name="")
    result = run_module("docker_restore_preflight", run_config=no_name, fail_on_problems=False)
    assert result.get("failed") is True and "set name" in result["msg"], result
