# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The capture modules (docker_export, docker_commit_save, docker_volume_backup, docker_run_config_info)
run for real through Ansible against the local Docker engine.

Needs a reachable engine (DOCKER_HOST or the local socket): without one the tests fail, they never
skip. Every resource is named ``ferry-it-cap-<random>-*`` and removed in ``finally``; bundles go to
pytest's tmp_path. Nothing is pulled: the test image is a static busybox imported locally.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import uuid

import docker
import pytest
from ferry_run import run_module
from fixture_image import IMAGE

from ansible_collections.ferry.docker.plugins.module_utils import _bundle, _stream

HELPER_LABEL = "ferry.docker.helper"
RESOURCE_PREFIX = "ferry-it-cap"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


def tar_bytes(files):
    """An in-memory tar of {path: text}."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for path, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(raw)
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(raw))
    return data.getvalue()


def read_members(path, compression):
    """{member name: bytes or None} of an artifact, read back through the streaming reader."""
    raw = io.BufferedReader(_stream.IterReader(_stream.read_decompressed(path, compression)))
    out = {}
    with tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            out[member.name] = tar.extractfile(member).read() if member.isreg() else None
    return out


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def leftovers(directory):
    """Temporary files an interrupted writer would leave behind."""
    return [n for n in os.listdir(directory) if n.endswith(".part")]


def assert_valid_bundle(bundle, kinds):
    manifest = _bundle.load_manifest(str(bundle))
    checked = _bundle.verify_artifacts(str(bundle), manifest)
    assert sorted({a["kind"] for a in checked}) == sorted(kinds)
    assert not leftovers(bundle)
    assert oct(os.stat(bundle).st_mode & 0o777) == oct(0o700)
    for artifact in checked:
        assert os.stat(bundle / artifact["file"]).st_mode & 0o777 == 0o600
    return manifest


# --------------------------------------------------------------------------------------------
# docker_export


def test_export_records_image_config_and_is_idempotent(client, res, tmp_path):
    name, cid = res.container(
        "exp",
        command=["sh", "-c", "echo run"],
        entrypoint=["/bin/sh", "-e"],
        environment={"FERRY_SECRET": "s3cret", "PLAIN": "1"},
        working_dir="/srv",
        ports=[8080],
        user="1000",
        labels={"ferry.test": "yes"},
        stop_signal="SIGINT",
        healthcheck={"test": ["CMD", "true"], "interval": 5_000_000_000},
    )
    client.put_archive(cid, "/", tar_bytes({"srv/app.txt": "changed file\n"}))
    bundle_a, bundle_b = tmp_path / "a", tmp_path / "b"

    first = run_module("docker_export", container=name, dest=str(bundle_a))
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] is True
    path = bundle_a / "filesystem.tar.zst"
    assert first["path"] == str(path)
    assert first["sha256"] == sha256_of(path) == first["artifact"]["sha256"]
    assert first["size"] == first["bytes_written"] == os.path.getsize(path)
    assert first["bytes_read"] > first["bytes_written"] > 0
    assert first["manifest"] == str(bundle_a / "manifest.json")
    assert "s3cret" not in str(first)

    manifest = assert_valid_bundle(bundle_a, ["filesystem"])
    members = read_members(str(path), "zstd")
    assert members["srv/app.txt"] == b"changed file\n"
    assert "bin/busybox" in members
    config = manifest["image_config"]
    assert config["Cmd"] == ["sh", "-c", "echo run"]
    assert config["Entrypoint"] == ["/bin/sh", "-e"]
    assert "FERRY_SECRET=s3cret" in config["Env"]
    assert config["WorkingDir"] == "/srv"
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["User"] == "1000"
    assert config["Labels"]["ferry.test"] == "yes"
    assert config["StopSignal"] == "SIGINT"
    assert config["Healthcheck"]["Test"] == ["CMD", "true"]
    assert manifest["container"]["name"] == name
    assert manifest["container"]["id"] == cid
    assert manifest["run_config"]["name"] == name
    entry = _bundle.find_artifact(manifest, "filesystem", name)
    assert entry["file"] == "filesystem.tar.zst" and entry["container_id"] == cid

    again = run_module("docker_export", container=name, dest=str(bundle_a))
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False, "export of a stopped container into the same bundle must be unchanged"
    assert again["sha256"] == first["sha256"]

    other = run_module("docker_export", container=name, dest=str(bundle_b), compression="gzip")
    assert not other.get("failed"), other.get("msg")
    assert other["path"] == str(bundle_b / "filesystem.tar.gz")
    assert_valid_bundle(bundle_b, ["filesystem"])
    assert read_members(other["path"], "gzip")["srv/app.txt"] == b"changed file\n"

    # Another compression replaces the artifact: the old file goes, the manifest names the new one.
    regz = run_module("docker_export", container=name, dest=str(bundle_a), compression="gzip")
    assert not regz.get("failed"), regz.get("msg")
    assert regz["changed"] is True
    assert not path.exists()
    assert _bundle.find_artifact(assert_valid_bundle(bundle_a, ["filesystem"]), "filesystem")["file"] == (
        "filesystem.tar.gz"
    )

    # A bundle holds one container: another one is refused before anything is written.
    stranger, _sid = res.container("stranger")
    before = sorted(os.listdir(bundle_a))
    refused = run_module("docker_export", container=stranger, dest=str(bundle_a), compression="gzip")
    assert refused.get("failed")
    assert name in refused["msg"] and stranger in refused["msg"]
    assert sorted(os.listdir(bundle_a)) == before
    assert sha256_of(bundle_a / "filesystem.tar.gz") == regz["sha256"]


def test_export_check_mode_writes_nothing(res, tmp_path):
    name, _cid = res.container("expcheck")
    bundle = tmp_path / "bundle"
    result = run_module("docker_export", check=True, container=name, dest=str(bundle))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    assert result["path"] == str(bundle / "filesystem.tar.zst")
    assert not bundle.exists()


# --------------------------------------------------------------------------------------------
# docker_commit_save


def commit_images(client, name):
    return [i for i in client.images() if any(f"/{name}:" in t for t in (i.get("RepoTags") or []))]


def test_commit_save_with_and_without_excluded_layers(client, res, tmp_path):
    name, cid = res.container("commit", start=True)
    client.put_archive(cid, "/", tar_bytes({"opt/state.txt": "committed\n"}))
    base_layers = client.inspect_image(IMAGE)["RootFS"]["Layers"]

    full = run_module("docker_commit_save", container=name, dest=str(tmp_path / "full"), compression="none")
    assert not full.get("failed"), full.get("msg")
    art = full["artifact"]
    assert art["kind"] == "image" and art["excluded_layers"] == []
    assert art["layers"][: len(base_layers)] == base_layers
    assert len(art["layers"]) == len(base_layers) + 1
    assert full["image_removed"] is True
    with pytest.raises(docker.errors.ImageNotFound):
        client.inspect_image(art["image_id"])
    assert not commit_images(client, name.lower())
    state = client.inspect_container(cid)["State"]
    assert state["Running"] and not state["Paused"]
    assert_valid_bundle(tmp_path / "full", ["image"])
    full_members = read_members(full["path"], "none")
    full_layers = [m for m in full_members if m.endswith("/layer.tar")]
    assert len(full_layers) == len(art["layers"])

    slim = run_module(
        "docker_commit_save",
        container=name,
        dest=str(tmp_path / "slim"),
        exclude_layers=[*base_layers, "sha256:" + "0" * 64],
    )
    assert not slim.get("failed"), slim.get("msg")
    art = slim["artifact"]
    assert art["excluded_layers"] == sorted(base_layers)
    manifest = assert_valid_bundle(tmp_path / "slim", ["image"])
    assert _bundle.find_artifact(manifest, "image", name)["excluded_layers"] == sorted(base_layers)
    members = read_members(slim["path"], "zstd")
    layers = [m for m in members if m.endswith("/layer.tar")]
    assert len(layers) == 1, layers
    # The remaining layer is the commit's own: its sha256 is the last diff ID.
    assert "sha256:" + hashlib.sha256(members[layers[0]]).hexdigest() == art["layers"][-1]
    assert "manifest.json" in members and "repositories" in members
    with pytest.raises(docker.errors.ImageNotFound):
        client.inspect_image(art["image_id"])
    state = client.inspect_container(cid)["State"]
    assert state["Running"] and not state["Paused"]

    # The slim archive loads here because this engine has the base layers.
    res.images.append(art["image_id"])
    raw = io.BufferedReader(_stream.IterReader(_stream.read_decompressed(slim["path"], "zstd")))
    list(client.load_image(raw))
    assert client.inspect_image(art["image_id"])["RootFS"]["Layers"] == art["layers"]


def test_commit_save_paused_container_stays_paused_and_keep_image(client, res, tmp_path):
    name, cid = res.container("paused", start=True)
    client.pause(cid)
    try:
        result = run_module(
            "docker_commit_save", container=name, dest=str(tmp_path / "b"), keep_image=True, image_name="ferry-it/x:y"
        )
        assert not result.get("failed"), result.get("msg")
        res.images.append(result["image_id"])
        assert result["image_removed"] is False
        assert client.inspect_image(result["image_id"])["RepoTags"] == ["ferry-it/x:y"]
        state = client.inspect_container(cid)["State"]
        assert state["Running"] and state["Paused"]
    finally:
        client.unpause(cid)


def test_commit_save_check_mode_commits_nothing(client, res, tmp_path):
    name, _cid = res.container("commitcheck")
    result = run_module("docker_commit_save", check=True, container=name, dest=str(tmp_path / "b"))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    assert not (tmp_path / "b").exists()
    assert not commit_images(client, name.lower())


# --------------------------------------------------------------------------------------------
# docker_volume_backup


def helpers_using(client, volume):
    found = []
    for c in client.containers(all=True, filters={"label": HELPER_LABEL}):
        if any(m.get("Name") == volume for m in c.get("Mounts") or []):
            found.append(c["Id"])
    return found


def test_volume_backup_named_anonymous_and_bind(client, res, tmp_path):
    named = res.volume("named")
    bind_dir = tmp_path / "bind"
    bind_dir.mkdir()
    (bind_dir / "host.txt").write_text("from host\n")
    name, cid = res.container(
        "vols",
        volumes=["/named", "/anon", "/bind"],
        host_config=client.create_host_config(binds=[f"{named}:/named", f"{bind_dir}:/bind"]),
        start=True,
    )
    client.put_archive(cid, "/named", tar_bytes({"n.txt": "named data\n"}))
    client.put_archive(cid, "/anon", tar_bytes({"sub/a.txt": "anonymous data\n"}))
    anon = next(m["Name"] for m in client.inspect_container(cid)["Mounts"] if m["Destination"] == "/anon")
    bundle = tmp_path / "bundle"

    result = run_module(
        "docker_volume_backup", container=name, include_binds=True, consistency="stop", dest=str(bundle)
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    by_name = {a["name"]: a for a in result["artifacts"]}
    assert set(by_name) == {named, anon, f"bind:{bind_dir}"}
    assert by_name[anon]["anonymous"] is True and by_name[named]["anonymous"] is False
    assert by_name[named]["file"] == f"volume-{named}.tar.zst"
    assert by_name[named]["destination"] == "/named" and by_name[named]["root"] == "."
    assert by_name[f"bind:{bind_dir}"]["type"] == "bind"
    manifest = assert_valid_bundle(bundle, ["volume"])
    assert manifest["volumes"][named]["Driver"] == "local"
    assert manifest["volumes"][anon]["Anonymous"] is True

    def members(artifact_name):
        return read_members(str(bundle / by_name[artifact_name]["file"]), "zstd")

    named_members = members(named)
    assert named_members["./n.txt"] == b"named data\n"
    assert "." in named_members or "./" in named_members
    assert members(anon)["./sub/a.txt"] == b"anonymous data\n"
    assert members(f"bind:{bind_dir}")["./host.txt"] == b"from host\n"

    state = client.inspect_container(cid)["State"]
    assert state["Running"] and not state["Paused"], "consistency=stop must leave the container running"
    assert not helpers_using(client, named)

    again = run_module(
        "docker_volume_backup", container=name, include_binds=True, consistency="pause", dest=str(bundle)
    )
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False, again["results"]
    state = client.inspect_container(cid)["State"]
    assert state["Running"] and not state["Paused"]
    assert not helpers_using(client, named)


def test_volume_backup_standalone_volume_and_check_mode(client, res, tmp_path):
    vol = res.volume("alone")
    holder, hid = res.container("holder", host_config=client.create_host_config(binds=[f"{vol}:/v"]))
    client.put_archive(hid, "/v", tar_bytes({"x.txt": "x\n"}))
    bundle = tmp_path / "bundle"

    check = run_module("docker_volume_backup", check=True, volumes=[vol], dest=str(bundle))
    assert not check.get("failed"), check.get("msg")
    assert check["paths"] == [str(bundle / f"volume-{vol}.tar.zst")]
    assert not bundle.exists()

    result = run_module("docker_volume_backup", volumes=[vol], dest=str(bundle), compression="gzip")
    assert not result.get("failed"), result.get("msg")
    manifest = assert_valid_bundle(bundle, ["volume"])
    assert "container" not in manifest
    assert read_members(str(bundle / f"volume-{vol}.tar.gz"), "gzip")["./x.txt"] == b"x\n"
    assert not helpers_using(client, vol)
    assert holder


# --------------------------------------------------------------------------------------------
# docker_run_config_info


def test_run_config_info_redacts_env_unless_asked(client, res):
    name, _cid = res.container("info", environment={"FERRY_TOKEN": "tok-123"})
    shown = run_module("docker_run_config_info", container=name, show_env_values=True)
    hidden = run_module("docker_run_config_info", container=name)
    for result in (shown, hidden):
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is False
        assert result["image"] == IMAGE
        assert result["image_id"].startswith("sha256:")
        assert result["state"] == {"status": "created", "running": False, "paused": False}
        assert result["run_config"]["name"] == name
        assert result["network_definitions"] == {} and result["volume_definitions"] == {}
    assert "FERRY_TOKEN=********" in hidden["run_config"]["config"]["Env"]
    assert "tok-123" not in str(hidden)
    assert "FERRY_TOKEN=tok-123" in shown["run_config"]["config"]["Env"]
    check = run_module("docker_run_config_info", check=True, container=name)
    assert check["run_config"] == hidden["run_config"]


# --------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    "module",
    ["docker_export", "docker_commit_save", "docker_volume_backup", "docker_run_config_info"],
)
def test_missing_container_fails_and_writes_nothing(module, tmp_path):
    missing = f"ferry-it-cap-missing-{uuid.uuid4().hex[:8]}"
    args = dict(container=missing)
    if module != "docker_run_config_info":
        args["dest"] = str(tmp_path / "bundle")
    result = run_module(module, **args)
    assert result.get("failed")
    assert missing in result["msg"] and "does not exist" in result["msg"]
    assert os.listdir(tmp_path) == []


def test_missing_volume_fails_and_writes_nothing(client, tmp_path):
    missing = f"ferry-it-cap-missing-{uuid.uuid4().hex[:8]}"
    result = run_module("docker_volume_backup", volumes=[missing], dest=str(tmp_path / "bundle"))
    assert result.get("failed")
    assert missing in result["msg"] and "does not exist" in result["msg"]
    assert os.listdir(tmp_path) == []
    with pytest.raises(docker.errors.NotFound):
        client.inspect_volume(missing)  # the module must not create it


@pytest.mark.parametrize("module", ["docker_export", "docker_commit_save", "docker_volume_backup"])
def test_dest_below_a_file_fails_and_leaves_nothing(client, res, tmp_path, module):
    vol = res.volume("destvol")
    name, cid = res.container("dest", host_config=client.create_host_config(binds=[f"{vol}:/v"]))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    dest = blocker / "bundle"
    started = time.time()
    result = run_module(module, container=name, dest=str(dest))
    assert result.get("failed")
    assert str(dest) in result["msg"], result["msg"]
    assert sorted(os.listdir(tmp_path)) == ["file"]
    assert not commit_images(client, name.lower())
    assert not helpers_using(client, vol)
    assert client.inspect_container(cid)["State"]["Status"] == "created"
    assert time.time() - started < 120
