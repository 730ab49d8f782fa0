# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The restore modules against a real Docker engine, with bundles crafted here.

Covers what the round trip does not: volume restore metadata (owner, mode, mtime, links),
idempotence and force, thin image archives with and without their base layers on the engine,
and bad inputs (missing bundle or volume, flipped byte, truncated archive, wrong checksum in the
manifest, hostile tar, newer manifest schema), each of which must fail with a message naming the
object and leave nothing behind. Needs a reachable engine: the tests fail without one, never skip.
Every resource is named ``ferry-it-rs-<random>-*`` and removed in ``finally``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker
import pytest
from ferry_run import run_module
from fixture_image import IMAGE, busybox_rootfs

from ansible_collections.ferry.docker.plugins.module_utils import _bundle, _engine, _neighbour
from ansible_collections.ferry.docker.plugins.module_utils._compat import api_tuple
from ansible_collections.ferry.docker.plugins.module_utils._stream import write_stream

SOURCE = dict(hostname="src", docker_version="20.10", api_version="1.41", architecture="x86_64", os="linux")
MODULES = Path(__file__).resolve().parents[2] / "plugins" / "modules"
RESOURCE_PREFIX = "ferry-it-rs"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


# --------------------------------------------------------------------------------------------- fixtures


# --------------------------------------------------------------------------------------------- bundles


def tar_bytes(members):
    """members: list of (TarInfo kwargs, content bytes or None)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for fields, content in members:
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if content is not None:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                tar.addfile(info)
    return data.getvalue()


def volume_tar():
    d, f, sym, lnk = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    return tar_bytes(
        [
            (dict(name=".", type=d, mode=0o755, mtime=1_500_000_000), None),
            (dict(name="./app", type=d, mode=0o750, uid=1000, gid=1001, mtime=1_600_000_000), None),
            (dict(name="./app/config.ini", type=f, mode=0o640, uid=1000, gid=1001, mtime=1_650_000_000), b"[a]\nb=1\n"),
            (dict(name="./app/current", type=sym, linkname="config.ini", mtime=1_650_000_000), None),
            (dict(name="./app/hard", type=lnk, linkname="./app/config.ini", mode=0o640, uid=1000, gid=1001), None),
            (dict(name="./big.bin", type=f, mode=0o600, mtime=1_700_000_000), os.urandom(3 * 1024 * 1024)),
        ]
    )


def make_volume_bundle(path, volumes, compression="zstd"):
    """A bundle with one volume artifact per ``{name: tar bytes}``; returns its directory."""
    path.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, data in volumes.items():
        written = write_stream([data], str(path), f"volume-{name}.tar.zst", compression=compression)
        entries[name] = _bundle.artifact_entry(
            "volume", name, written, type="volume", volume=name, anonymous=False, destination="/data", rw=True, root="."
        )

    def edit(manifest):
        for name, entry in entries.items():
            _bundle.add_artifact(manifest, entry)
            manifest["volumes"][name] = {
                "Name": name,
                "Driver": "local",
                "DriverOpts": {},
                "Labels": {"ferry.test": "restore"},
                "Scope": "local",
                "Anonymous": False,
            }

    _bundle.update_manifest(str(path), edit, source=SOURCE)
    return str(path)


def edit_manifest(bundle, fn):
    manifest_path = os.path.join(bundle, "manifest.json")
    with open(manifest_path) as f:
        doc = json.load(f)
    fn(doc)
    with open(manifest_path, "w") as f:
        json.dump(doc, f)


def archive_listing(api, volume, image=IMAGE):
    """{name: (mode, uid, gid, mtime, size, linkname, content)} of a volume, read with get_archive."""
    helper = api.create_container(
        image, command=["true"], host_config=api.create_host_config(binds={volume: {"bind": "/v", "mode": "ro"}})
    )
    try:
        stream, _stat = api.get_archive(helper["Id"], "/v/.")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            listing = {}
            for m in tar.getmembers():
                content = tar.extractfile(m).read() if m.isreg() else None
                listing[m.name] = (m.mode & 0o7777, m.uid, m.gid, m.mtime, m.size, m.linkname, m.type, content)
            return listing
    finally:
        api.remove_container(helper["Id"], force=True, v=True)


# --------------------------------------------------------------------------------------------- volume restore


def test_volume_restore_keeps_metadata_and_is_idempotent(client, res, tmp_path):
    name = res.name("data")
    bundle = make_volume_bundle(tmp_path / "b", {name: volume_tar()})

    checked = run_module("docker_volume_restore", check=True, bundle=bundle)
    assert checked["changed"] is True, checked
    assert checked["volumes"][0]["action"] == "create"
    with pytest.raises(docker.errors.NotFound):
        client.inspect_volume(name)

    first = run_module("docker_volume_restore", diff=True, bundle=bundle)
    assert first["changed"] is True, first
    assert first["volumes"][0]["bytes_written"] > 3 * 1024 * 1024
    assert first["bytes_read"] == first["size"] == os.path.getsize(first["volumes"][0]["path"])
    assert first["diff"]["before"] == {name: "absent"}
    assert client.inspect_volume(name)["Labels"] == {"ferry.test": "restore"}

    listing = archive_listing(client, name)
    config = listing["./app/config.ini"]
    assert config[:5] == (0o640, 1000, 1001, 1_650_000_000, 8)
    assert config[-1] == b"[a]\nb=1\n"
    assert listing["./app"][:4] == (0o750, 1000, 1001, 1_600_000_000)
    assert listing["./app/current"][5] == "config.ini"
    assert listing["./big.bin"][0] == 0o600 and listing["./big.bin"][4] == 3 * 1024 * 1024
    assert listing["./app/hard"][6] == tarfile.LNKTYPE and listing["./app/hard"][5].endswith("app/config.ini")

    second = run_module("docker_volume_restore", bundle=bundle)
    assert second.get("changed") is False and not second.get("failed"), second
    assert second["volumes"][0]["state_before"] == "same"
    assert not client.containers(all=True, filters={"label": "ferry.docker.helper"})


def test_volume_restore_into_existing_volumes(client, res, tmp_path):
    name, other = res.name("empty"), res.name("other")
    bundle = make_volume_bundle(tmp_path / "b", {name: volume_tar()})
    client.create_volume(name)  # existing, empty: restored into
    first = run_module("docker_volume_restore", bundle=bundle)
    assert first["changed"] is True and first["volumes"][0]["action"] == "fill", first
    assert run_module("docker_volume_restore", bundle=bundle)["changed"] is False

    # a volume with other data: refused without force, overwritten with it
    client.create_volume(other)
    helper_bundle = make_volume_bundle(tmp_path / "c", {other: tar_bytes([(dict(name="./keep.txt"), b"old")])})
    assert run_module("docker_volume_restore", bundle=helper_bundle)["changed"] is True
    refused = run_module("docker_volume_restore", bundle=bundle, volume_map={name: other})
    assert refused.get("failed") and other in refused["msg"] and "force" in refused["msg"], refused
    forced = run_module("docker_volume_restore", bundle=bundle, volume_map={name: other}, force=True)
    assert forced["changed"] is True and forced["volumes"][0]["action"] == "overwrite", forced
    listing = archive_listing(client, other)
    assert "./keep.txt" in listing and "./app/config.ini" in listing  # documented: extracted over, not emptied


def _run_module_file(module, args, tmp_path):
    """Run plugins/modules/<module>.py directly (as AnsiballZ does, minus Ansible): (result, names imported)."""
    args_file = tmp_path / f"{module}-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    script = (
        "import atexit, json, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write('IMPORTED ' + json.dumps(sorted(sys.modules)) + '\\n'))\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(MODULES / f"{module}.py"), str(args_file)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    imported = [line for line in proc.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert imported, proc.stderr[-3000:]
    return json.loads(proc.stdout), set(json.loads(imported[-1][len("IMPORTED ") :]))


def test_the_volume_modules_do_without_the_sdk_on_the_local_socket(client, res, tmp_path):
    # docker_volume_backup and docker_volume_restore make their few calls over the socket without the Docker SDK
    # (about 0.15 s of their start); a restore into an existing volume needs helper containers, which the SDK
    # then makes
    name, copy = res.name("quick"), res.name("copy")
    bundle = make_volume_bundle(tmp_path / "b", {name: volume_tar()})
    first, imported = _run_module_file("docker_volume_restore", {"bundle": str(bundle)}, tmp_path)
    assert first["changed"] is True and first["volumes"][0]["action"] == "create", first
    assert "docker" not in imported and "requests" not in imported

    backup, imported = _run_module_file(
        "docker_volume_backup", {"volumes": [name], "dest": str(tmp_path / "backup")}, tmp_path
    )
    assert backup["changed"] is True and backup["results"][0]["read_from"] == "directory", backup
    assert "docker" not in imported and "requests" not in imported

    restored, imported = _run_module_file(
        "docker_volume_restore", {"bundle": str(tmp_path / "backup"), "volume_map": {name: copy}}, tmp_path
    )
    assert restored["changed"] is True and restored["volumes"][0]["name"] == copy, restored
    assert "docker" not in imported
    assert archive_listing(client, copy) == archive_listing(client, name)

    again, imported = _run_module_file("docker_volume_restore", {"bundle": str(bundle)}, tmp_path)
    assert again["changed"] is False and again["volumes"][0]["state_before"] == "same", again
    assert "docker" in imported
    assert not client.containers(all=True, filters={"label": "ferry.docker.helper"})


def test_the_engine_calls_made_without_the_sdk_answer_as_the_sdks(client, res):
    path = _engine.socket_path(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    assert path, "these tests run against the engine's unix socket"
    engine = _engine.LocalEngine(path, "auto", 60, None)
    name = res.name("same")
    assert engine.api_version == client.api_version and engine.base_url == client.base_url
    assert engine.ping() is client.ping() is True
    assert engine.info()["ID"] == client.info()["ID"]
    assert engine.version()["ApiVersion"] == client.version()["ApiVersion"]
    assert engine.create_volume(name=name, driver="local", labels={"ferry.test": "engine"}) == client.inspect_volume(
        name
    )
    assert engine.inspect_volume(name) == client.inspect_volume(name)
    assert engine.inspect_image(IMAGE) == client.inspect_image(IMAGE)
    assert sorted(i["Id"] for i in engine.images()) == sorted(i["Id"] for i in client.images())
    engine.remove_volume(name)
    with pytest.raises(docker.errors.NotFound) as sdk:
        client.inspect_volume(name)
    with pytest.raises(_engine.EngineNotFound) as ours:
        engine.inspect_volume(name)
    assert str(ours.value) == str(sdk.value) and ours.value.status_code == sdk.value.status_code == 404
    with pytest.raises(_engine.EngineAPIError) as ours:
        engine.create_volume(name="-bad/name")
    with pytest.raises(docker.errors.APIError) as sdk:
        client.create_volume(name="-bad/name")
    assert str(ours.value) == str(sdk.value)


# --------------------------------------------------------------------------------------------- thin image archive


def test_thin_save_loads_with_base_and_names_missing_layers_without(client, res, tmp_path):
    base_repo = res.name("base").replace("ferry-it-rs", "ferry-it-rs/base")
    client.import_image_from_data(
        busybox_rootfs({"etc/base-marker": res.prefix.encode()}), repository=base_repo, tag="v1", changes=['CMD ["sh"]']
    )
    res.images.append(f"{base_repo}:v1")
    base_layers = client.inspect_image(f"{base_repo}:v1")["RootFS"]["Layers"]
    container = client.create_container(
        f"{base_repo}:v1", command=["sh", "-c", "echo hi > /top.txt"], name=res.name("src")
    )
    res.containers.append(container["Id"])
    client.start(container["Id"])
    client.wait(container["Id"])

    bundle = str(tmp_path / "thin")
    image_name = res.name("commit").replace("ferry-it-rs", "ferry-it-rs/commit") + ":1"
    saved = run_module(
        "docker_commit_save",
        container=res.name("src"),
        dest=bundle,
        exclude_layers=base_layers,
        image_name=image_name,
        keep_image=False,
    )
    assert not saved.get("failed"), saved
    res.images.append(image_name)
    manifest = _bundle.load_manifest(bundle)
    artifact = _bundle.find_artifact(manifest, "image")
    assert artifact["excluded_layers"] == base_layers
    image_id = artifact["image_id"]
    client.remove_container(container["Id"], force=True)
    try:
        client.remove_image(image_id, force=True)
    except docker.errors.NotFound:
        pass

    loaded = run_module("docker_load", bundle=bundle, tag=image_name)
    assert loaded["changed"] is True and loaded["operation"] == "load", loaded
    assert client.inspect_image(image_name)["Id"] == image_id
    assert loaded["bytes_written"] > 0
    assert run_module("docker_load", bundle=bundle, tag=image_name)["changed"] is False

    # an engine without the base: remove the loaded image and the base, then load again
    client.remove_image(image_id, force=True)
    client.remove_image(f"{base_repo}:v1", force=True)
    failed = run_module("docker_load", bundle=bundle, tag=image_name)
    assert failed.get("failed"), failed
    assert base_layers[0] in failed["msg"] and "base image" in failed["msg"], failed["msg"]
    with pytest.raises(docker.errors.ImageNotFound):
        client.inspect_image(image_id)


# --------------------------------------------------------------------------------------------- bad inputs


def flip_byte(bundle, name):
    path = os.path.join(bundle, f"volume-{name}.tar.zst")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    return f"volume-{name}.tar.zst"


def truncate(bundle, name):
    path = os.path.join(bundle, f"volume-{name}.tar.zst")
    os.truncate(path, os.path.getsize(path) - 100)
    return f"volume-{name}.tar.zst"


def wrong_checksum(bundle, name):
    def fn(doc):
        doc["artifacts"][0]["sha256"] = "0" * 64

    edit_manifest(bundle, fn)
    return f"volume-{name}.tar.zst"


def newer_schema(bundle, name):
    def fn(doc):
        doc["schema_version"] = 99

    edit_manifest(bundle, fn)
    return "upgrade the ferry.docker collection"


def hostile(kind):
    """A bundle whose archive has a valid checksum but is hostile: only the tar safety check catches it."""

    def damage(bundle, name):
        sym, f = tarfile.SYMTYPE, tarfile.REGTYPE
        if kind == "dotdot":
            members = [(dict(name="./ok.txt"), b"ok"), (dict(name="../escape"), b"pwned")]
        else:  # an absolute symlink, then a file written through it
            members = [(dict(name="./etc", type=sym, linkname="/etc"), None), (dict(name="./etc/passwd", type=f), b"x")]
        path = os.path.join(bundle, f"volume-{name}.tar.zst")
        os.unlink(path)
        written = write_stream([tar_bytes(members)], bundle, f"volume-{name}.tar.zst")

        def fn(doc):
            doc["artifacts"][0].update(size=written["size"], sha256=written["sha256"], raw_size=written["raw_size"])

        edit_manifest(bundle, fn)
        return "../escape" if kind == "dotdot" else "etc/passwd"

    return damage


@pytest.mark.parametrize(
    "damage",
    [flip_byte, truncate, wrong_checksum, newer_schema, hostile("dotdot"), hostile("through-symlink")],
    ids=["flipped-byte", "truncated", "wrong-checksum", "newer-schema", "hostile-dotdot", "hostile-symlink"],
)
def test_bad_bundle_fails_and_changes_nothing(client, res, tmp_path, damage):
    name = res.name("bad")
    bundle = make_volume_bundle(tmp_path / "b", {name: volume_tar()})
    expected = damage(bundle, name)
    for check in (True, False):
        result = run_module("docker_volume_restore", check=check, bundle=bundle)
        assert result.get("failed"), result
        assert expected in result["msg"], result["msg"]
    assert res.leftovers() == [], res.leftovers()


def test_missing_bundle_and_missing_volume(client, res, tmp_path):
    missing = run_module("docker_volume_restore", bundle=str(tmp_path / "nope"))
    assert missing.get("failed") and str(tmp_path / "nope") in missing["msg"], missing
    name = res.name("one")
    bundle = make_volume_bundle(tmp_path / "b", {name: volume_tar()})
    unknown = run_module("docker_volume_restore", bundle=bundle, volumes=["no-such-volume"])
    assert unknown.get("failed") and "no-such-volume" in unknown["msg"], unknown
    for module in ("docker_load", "docker_import"):
        result = run_module(module, bundle=bundle)
        assert result.get("failed"), result
        assert ("image" if module == "docker_load" else "filesystem") in result["msg"], result["msg"]
    container = run_module("docker_container_restore", bundle=bundle)
    assert container.get("failed") and "run_config" in container["msg"], container
    assert res.leftovers() == []


# --------------------------------------------------------------------------------------------- container restore


def plain_run_config(res, **config):
    body = {"Cmd": ["sleep", "300"], "Labels": {"ferry.test": "restore"}}
    body.update(config)
    return {
        "name": res.name("c"),
        "image": IMAGE,
        "config": body,
        "host_config": {},
        "networks": {},
        "network_definitions": {},
        "volume_definitions": {},
        "mounts": [],
    }


def test_container_restore_binds_states_and_recreate(client, res, tmp_path):
    run_config = plain_run_config(res)
    missing_dir = tmp_path / "missing" / "www"
    run_config["host_config"]["Binds"] = [f"{missing_dir}:/srv/www:ro"]
    refused = run_module("docker_container_restore", run_config=run_config)
    assert refused.get("failed") and str(missing_dir) in refused["msg"] and "create_bind_paths" in refused["msg"]
    assert res.leftovers() == []

    created = run_module("docker_container_restore", diff=True, run_config=run_config, create_bind_paths=True)
    assert created["changed"] is True and created["operation"] == "create", created
    assert created["bind_paths_created"] == [str(missing_dir)] and missing_dir.is_dir()
    assert created["diff"]["before"]["digest"] is None and created["diff"]["after"]["digest"] == created["digest"]
    res.containers.append(created["container"])
    inspect = client.inspect_container(created["container"])
    assert (
        inspect["State"]["Running"] and inspect["Config"]["Labels"]["ferry.docker.config-digest"] == created["digest"]
    )
    again = run_module("docker_container_restore", run_config=run_config)
    assert again["changed"] is False and again["operation"] == "none", again

    client.stop(created["container"], timeout=1)
    started = run_module("docker_container_restore", run_config=run_config)
    assert started["changed"] is True and started["operation"] == "start", started
    assert client.inspect_container(created["container"])["State"]["Running"]

    changed_config = plain_run_config(res, Cmd=["sleep", "301"])
    changed_config["host_config"] = run_config["host_config"]
    checked = run_module("docker_container_restore", check=True, run_config=changed_config, state="created")
    assert checked["changed"] is True and checked["operation"] == "recreate"
    assert client.inspect_container(created["container"])["Config"]["Cmd"] == ["sleep", "300"]
    recreated = run_module("docker_container_restore", run_config=changed_config, state="created")
    assert recreated["operation"] == "recreate" and recreated["container"] != created["container"], recreated
    res.containers.append(recreated["container"])
    inspect = client.inspect_container(recreated["container"])
    assert inspect["Config"]["Cmd"] == ["sleep", "301"] and not inspect["State"]["Running"]


def test_failed_replacement_puts_the_running_container_back(client, res):
    run_config = plain_run_config(res)
    first = run_module("docker_container_restore", run_config=run_config)
    assert first["operation"] == "create", first
    res.containers.append(first["container"])

    # The new config is valid for create but cannot start: the old container must come back as it was.
    broken = plain_run_config(res, Cmd=["/no/such/program"])
    failed = run_module("docker_container_restore", run_config=broken)
    assert failed.get("failed"), failed
    inspect = client.inspect_container(first["container"])
    assert inspect["Name"] == "/" + run_config["name"] and inspect["State"]["Running"]
    assert inspect["Config"]["Cmd"] == ["sleep", "300"]
    names = [c["Names"][0] for c in client.containers(all=True) if res.prefix in c["Names"][0]]
    assert names == ["/" + run_config["name"]]  # no replaced-aside or half-made container is left


def test_container_restore_missing_image_changes_nothing(client, res):
    run_config = plain_run_config(res)
    run_config["image"] = "ferry-it-rs/never-there:nope"
    failed = run_module("docker_container_restore", run_config=run_config)
    assert failed.get("failed") and "ferry-it-rs/never-there:nope" in failed["msg"] and "docker_load" in failed["msg"]
    assert res.leftovers() == []


def test_container_restore_hostile_anonymous_volume_changes_nothing(client, res, tmp_path):
    anonymous = "a" * 64
    members = [(dict(name="./ok.txt"), b"ok"), (dict(name="../escape"), b"pwned")]
    bundle = make_volume_bundle(tmp_path / "b", {anonymous: tar_bytes(members)})
    run_config = plain_run_config(res, Volumes={"/cache": {}})
    run_config["volume_definitions"] = {anonymous: {"Name": anonymous, "Driver": "local", "Anonymous": True}}
    run_config["mounts"] = [
        {
            "Type": "volume",
            "Destination": "/cache",
            "Name": anonymous,
            "Anonymous": True,
            "Origin": "config",
            "RW": True,
        }
    ]
    run_config["network_definitions"] = {res.name("net"): {"Name": res.name("net"), "Driver": "bridge"}}
    run_config["networks"] = {res.name("net"): {}}
    run_config["host_config"] = {"NetworkMode": res.name("net")}

    def edit(doc):
        doc["run_config"] = run_config
        doc["volumes"][anonymous]["Anonymous"] = True

    edit_manifest(bundle, edit)
    failed = run_module("docker_container_restore", bundle=bundle)
    assert failed.get("failed") and "../escape" in failed["msg"] and anonymous in failed["msg"], failed
    assert res.leftovers() == []
    assert not client.networks(names=[res.name("net")])

    # the same bundle with a clean archive: the new anonymous volume is filled before the first start
    os.unlink(os.path.join(bundle, f"volume-{anonymous}.tar.zst"))
    written = write_stream(
        [tar_bytes([(dict(name="./ok.txt", mode=0o600, uid=7), b"ok")])], bundle, f"volume-{anonymous}.tar.zst"
    )

    def fix(doc):
        doc["artifacts"][0].update(size=written["size"], sha256=written["sha256"], raw_size=written["raw_size"])

    edit_manifest(bundle, fix)
    restored = run_module("docker_container_restore", bundle=bundle, state="created")
    assert restored["changed"] is True and restored["networks_created"] == [res.name("net")], restored
    res.containers.append(restored["container"])
    try:
        fill = restored["volumes"][0]
        assert fill["destination"] == "/cache" and fill["bytes_written"] > 0
        mount = next(
            m for m in client.inspect_container(restored["container"])["Mounts"] if m["Destination"] == "/cache"
        )
        assert mount["Name"] == fill["name"]
        listing = archive_listing(client, fill["name"])
        assert listing["./ok.txt"][:3] == (0o600, 7, 0) and listing["./ok.txt"][-1] == b"ok"
        assert run_module("docker_container_restore", bundle=bundle, state="created")["changed"] is False
    finally:
        client.remove_container(restored["container"], force=True, v=True)
        client.remove_network(res.name("net"))


def neighbours(client, container_id):
    """The container's IPv4 neighbour table: ``{address: MAC}`` (``/proc/net/arp``, read with an exec)."""
    exec_id = client.exec_create(container_id, ["cat", "/proc/net/arp"])["Id"]
    lines = client.exec_start(exec_id).decode().splitlines()[1:]
    return {fields[0]: fields[3] for fields in (line.split() for line in lines) if fields[3] != "00:00:00:00:00:00"}


def wait_for_neighbour(client, container_id, address, seconds=5.0):
    """The container's entry for ``address``, polled for at most ``seconds`` (the request crosses a bridge)."""
    deadline = time.monotonic() + seconds
    while True:
        found = neighbours(client, container_id).get(address)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_started_container_is_asked_for_by_its_bridge(client, res):
    """Docker before 28 leaves the host's ARP to find a new container; the restore asks for it once after the start.

    The container sends nothing itself (``sleep``), so the only way its neighbour table learns the bridge's
    address is the host's request: a plain ``docker start`` leaves it empty, the restore's start fills it with
    the bridge's own MAC address.
    """
    version = client.version()["ApiVersion"]
    if api_tuple(version) >= _neighbour.ENGINE_ANNOUNCES:
        pytest.skip(f"the engine (API {version}) advertises new containers itself")
    run_config = plain_run_config(res)
    created = run_module("docker_container_restore", run_config=run_config, state="created")
    assert created["operation"] == "create", created
    res.containers.append(created["container"])

    client.start(created["container"])  # the control: the engine's own start
    network = client.inspect_container(created["container"])["NetworkSettings"]["Networks"]["bridge"]
    gateway = network["Gateway"]
    time.sleep(0.5)
    assert neighbours(client, created["container"]) == {}, "the container learned its gateway by itself"

    client.stop(created["container"], timeout=1)
    started = run_module("docker_container_restore", run_config=run_config)
    assert started["operation"] == "start", started
    bridge = client.inspect_network(network["NetworkID"])["Options"]["com.docker.network.bridge.name"]
    with open(f"/sys/class/net/{bridge}/address", encoding="ascii") as handle:
        bridge_mac = handle.read().strip()
    assert wait_for_neighbour(client, created["container"], gateway) == bridge_mac
