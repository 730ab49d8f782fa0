# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Capture a richly configured container with the capture modules, remove it, restore it, compare.

Two paths: docker_commit_save -> docker_load, and docker_export -> docker_import; both with
docker_volume_backup -> docker_volume_restore and docker_container_restore. After the restore the
container must have the same run config field by field (``diff_inspect`` ignoring only what the
engine or the restore assigns: ``Config.Image``, because the container now runs the restored
image, whose id is checked instead, the restore's own config-digest label and, after an import,
the image's ``ferry.docker.artifact-sha256`` label that the container inherits), the same volume
contents (sha256, mode and owner of every file) and the file written into its root filesystem.
Every restore runs twice; the second run must report no change. Needs a reachable engine: the
tests fail without one, never skip. Resources are named ``ferry-it-rt-<random>-*``.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import socket
import subprocess
import tarfile
import time

import docker
import pytest
from ferry_run import run_module
from fixture_image import IMAGE

from ansible_collections.ferry.docker.plugins.module_utils import _bundle
from ansible_collections.ferry.docker.plugins.module_utils import _runconfig as rc
from ansible_collections.ferry.docker.tests.support.inspect_compare import diff_inspect

DIGEST_IGNORE = "Config.Labels." + rc.DIGEST_LABEL
# docker_import labels the image with the archive's sha256 (its idempotence marker); containers inherit image labels.
IMPORT_LABEL_IGNORE = "Config.Labels.ferry.docker.artifact-sha256"
RESOURCE_PREFIX = "ferry-it-rt"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


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
    for third in range(100, 250):
        candidate = ipaddress.ip_network(f"10.214.{third}.0/24")
        if not any(candidate.overlaps(other) for other in used):
            return candidate
    pytest.fail("No free 10.214.x.0/24 subnet for the test network.", pytrace=False)


def exec_sh(api, container, script):
    exec_id = api.exec_create(container, ["sh", "-c", script])
    output = api.exec_start(exec_id)
    code = api.exec_inspect(exec_id)["ExitCode"]
    assert code == 0, (script, output)
    return output


def create_source(api, res, bind_dir):
    """The container to move: named + anonymous volume, bind, TCP/UDP ports, env, labels, restart,
    healthcheck, a user-defined network with an alias, resource limits; data written everywhere."""
    subnet = free_subnet(api)
    network = res.name("net")
    api.create_network(
        network,
        driver="bridge",
        labels={"ferry.test": "roundtrip"},
        ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))]),
    )
    volume = res.name("data")
    api.create_volume(volume, labels={"ferry.test": "roundtrip"})
    (bind_dir / "index.html").write_text("hello\n")
    host_config = api.create_host_config(
        binds={volume: {"bind": "/data", "mode": "rw"}, str(bind_dir): {"bind": "/srv/www", "mode": "ro"}},
        port_bindings={"80/tcp": ("127.0.0.1", free_port()), "53/udp": ("127.0.0.1", free_port(socket.SOCK_DGRAM))},
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        mem_limit="64m",
        nano_cpus=500000000,
        pids_limit=64,
        network_mode=network,
    )
    networking = api.create_networking_config({network: api.create_endpoint_config(aliases=["web"])})
    container = api.create_container(
        IMAGE,
        command=["sleep", "3600"],
        name=res.name("web"),
        environment={"APP_MODE": "staging", "DB_PASSWORD": "s3cret"},
        labels={"com.example.role": "web"},
        ports=[80, (53, "udp")],
        volumes=["/cache"],
        healthcheck={"test": ["CMD", "true"], "interval": 5 * 10**9, "timeout": 2 * 10**9, "retries": 3},
        stop_signal="SIGTERM",
        host_config=host_config,
        networking_config=networking,
    )
    api.start(container["Id"])
    exec_sh(
        api,
        container["Id"],
        "echo data > /data/a.txt && busybox mkdir -p /data/sub && echo x > /data/sub/b"
        " && busybox chown 1000:1001 /data/sub/b && busybox chmod 640 /data/sub/b"
        " && echo cache > /cache/c.txt && echo rootfs > /root-marker.txt",
    )
    return container["Id"], network, volume


def tree(api, container, path):
    """{name: (sha256, mode, uid, gid)} of everything below ``path`` in a container, via get_archive."""
    stream, _stat = api.get_archive(container, path.rstrip("/") + "/.")
    result = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        for member in tar.getmembers():
            content = tar.extractfile(member).read() if member.isreg() else member.linkname.encode()
            if member.name != ".":
                result[member.name] = (
                    hashlib.sha256(content).hexdigest(),
                    member.mode & 0o7777,
                    member.uid,
                    member.gid,
                )
    return result


def contents(api, container):
    return {"/data": tree(api, container, "/data"), "/cache": tree(api, container, "/cache")}


def wait_running(api, container_id):
    for _attempt in range(50):
        if api.inspect_container(container_id)["State"]["Running"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"container {container_id} did not start: {api.inspect_container(container_id)['State']}")


def ok(result):
    assert not result.get("failed"), result.get("msg", result)
    return result


def twice(module, **args):
    """Run a restore module in check mode, then for real twice.

    The check run must predict a change, the first real run must still make it (so check mode
    changed nothing), and the second real run must report no change.
    """
    checked = ok(run_module(module, check=True, **args))
    assert checked["changed"] is True, checked
    first = ok(run_module(module, diff=True, **args))
    assert first["changed"] is True, first
    assert "diff" in first, first
    second = ok(run_module(module, **args))
    assert second["changed"] is False, second
    return first


def remove_everything(api, container_id, network, volume):
    api.remove_container(container_id, force=True, v=True)
    api.remove_volume(volume)
    api.remove_network(network)


def restore_and_compare(api, res, bundle, image, image_id, original, before, ignore=()):
    volumes = twice("docker_volume_restore", bundle=bundle)
    assert [v["name"] for v in volumes["volumes"]] == [res.name("data")]
    restored = twice("docker_container_restore", bundle=bundle, image=image)
    assert restored["operation"] == "create"
    assert restored["networks_created"] == [res.name("net")]
    assert [v["destination"] for v in restored["volumes"]] == ["/cache"]
    wait_running(api, restored["container"])
    after = api.inspect_container(restored["container"])

    assert diff_inspect(original, after, ignore=("Config.Image", DIGEST_IGNORE, *ignore)) == []
    assert after["Image"] == image_id
    assert contents(api, restored["container"]) == before
    assert exec_sh(api, restored["container"], "cat /root-marker.txt") == b"rootfs\n"
    return restored


def test_commit_save_roundtrip(client, res, tmp_path):
    bind_dir = tmp_path / "www"
    bind_dir.mkdir()
    container_id, network, volume = create_source(client, res, bind_dir)
    original = client.inspect_container(container_id)
    before = contents(client, container_id)
    bundle = str(tmp_path / "bundle")
    image_ref = res.image("commit") + ":1"

    ok(run_module("docker_commit_save", container=container_id, dest=bundle, image_name=image_ref))
    ok(run_module("docker_volume_backup", container=container_id, dest=bundle))
    artifact = _bundle.find_artifact(_bundle.load_manifest(bundle), "image")
    remove_everything(client, container_id, network, volume)
    try:
        client.remove_image(artifact["image_id"], force=True)
    except docker.errors.NotFound:
        pass

    loaded = twice("docker_load", bundle=bundle)
    assert loaded["image_id"] == artifact["image_id"]
    assert client.inspect_image(artifact["image_ref"])["Id"] == artifact["image_id"]
    restore_and_compare(client, res, bundle, artifact["image_ref"], artifact["image_id"], original, before)


def test_export_import_roundtrip(client, res, tmp_path):
    bind_dir = tmp_path / "www"
    bind_dir.mkdir()
    container_id, network, volume = create_source(client, res, bind_dir)
    original = client.inspect_container(container_id)
    before = contents(client, container_id)
    bundle = str(tmp_path / "bundle")

    ok(run_module("docker_export", container=container_id, dest=bundle))
    ok(run_module("docker_volume_backup", container=container_id, dest=bundle))
    remove_everything(client, container_id, network, volume)

    repository = res.image("import")
    imported = twice("docker_import", bundle=bundle, repository=repository, tag="1")
    image = f"{repository}:1"
    image_id = client.inspect_image(image)["Id"]
    assert imported["image_id"] == image_id

    # a plain `docker run` of the imported image runs the original command
    name = res.name("plain")
    subprocess.run(["docker", "run", "-d", "--name", name, image], check=True, capture_output=True)
    wait_running(client, name)
    processes = client.top(name)["Processes"]
    assert any("sleep 3600" in " ".join(p) for p in processes), processes
    client.remove_container(name, force=True, v=True)

    restore_and_compare(client, res, bundle, image, image_id, original, before, ignore=(IMPORT_LABEL_IGNORE,))
