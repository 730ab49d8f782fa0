# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Hostile bundles against a real engine (issue 13 E and F): each is refused, with a message naming
the object and what to do, in check mode and for real, and nothing is left on the host.

The bundles are built here by hand: tar headers no tar tool writes together, decompression and
sparse bombs, FIFOs and symlinks where bundle files belong, manifests that name host paths.
Needs a reachable engine: the tests fail without one, never skip. Resources are named
``ferry-it-rs-<random>-*`` (the ``res`` fixture of conftest.py) and removed in ``finally``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import tarfile

import pytest
from ferry_run import run_module
from fixture_image import IMAGE
from test_restore_modules import edit_manifest, make_volume_bundle, plain_run_config, tar_bytes

from ansible_collections.ferry.docker.plugins.module_utils import _bundle
from ansible_collections.ferry.docker.plugins.module_utils._stream import write_stream

BLOCK = tarfile.BLOCKSIZE
END = bytes(2 * BLOCK)
RESOURCE_PREFIX = "ferry-it-rs"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


def header(name, kind=b"0", size=0, prefix=b"", magic=b"ustar\x0000", linkname=b""):
    """One tar header block written by hand."""
    block = bytearray(BLOCK)
    block[0:100] = name.ljust(100, b"\0")[:100]
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[157:257] = linkname.ljust(100, b"\0")[:100]
    block[257:265] = magic
    block[345:500] = prefix.ljust(155, b"\0")[:155]
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pad(data):
    return data + bytes(-len(data) % BLOCK)


def pax_record(key, value):
    body = f" {key}={value}\n".encode()
    length = len(body)
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def global_header_tar():
    records = pax_record("path", "link")
    return header(b"pax_global_header", b"g", len(records)) + pad(records) + header(b"f", size=1) + pad(b"x") + END


def prefix_symlink_tar():
    # "link" -> /etc, then a GNU-magic header whose atime field Python would read as the prefix "link"
    return (
        header(b"link", b"2", linkname=b"/etc")
        + header(b"passwd", size=2, prefix=b"link", magic=b"ustar  \0")
        + pad(b"x\n")
        + END
    )


def assert_refused(result, *words):
    assert result.get("failed"), result
    for word in words:
        assert word in result["msg"], result["msg"]


def refused_everywhere(module, words, **args):
    for check in (True, False):
        assert_refused(run_module(module, check=check, **args), *words)


# --------------------------------------------------------------------------------------------- F: tar


@pytest.mark.parametrize(
    "raw,words",
    [
        (global_header_tar(), ["PAX global header", "capture it again"]),
        (prefix_symlink_tar(), ["through the symlink", "capture it again"]),
    ],
    ids=["pax-global-header", "prefix-differential-symlink"],
)
def test_parser_differentials_are_refused(client, res, tmp_path, raw, words):
    name = res.name("diff")
    bundle = make_volume_bundle(tmp_path / "b", {name: raw})
    refused_everywhere("docker_volume_restore", [name, *words], bundle=bundle)
    assert res.leftovers() == []


def test_zip_bomb_is_refused_before_the_engine_writes_it(client, res, tmp_path):
    name = res.name("bomb")
    info = tarfile.TarInfo("zeros")
    info.size = 512 * 1024 * 1024
    bundle = make_volume_bundle(tmp_path / "b", {name: tar_bytes([(dict(name="small"), b"ok")])})
    # the artifact becomes a gzip stream of 512 MiB of zeros, while the manifest records a small raw_size
    path = os.path.join(bundle, f"volume-{name}.tar.zst")
    os.unlink(path)
    gz_name = f"volume-{name}.tar.gz"
    with gzip.open(os.path.join(bundle, gz_name), "wb", compresslevel=1) as f:
        f.write(info.tobuf(tarfile.PAX_FORMAT))
        zeros = bytes(1024 * 1024)
        for _mebibyte in range(512):
            f.write(zeros)
        f.write(END)
    size = os.path.getsize(os.path.join(bundle, gz_name))
    with open(os.path.join(bundle, gz_name), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert size < 4 * 1024 * 1024

    def bomb(doc):
        artifact = doc["artifacts"][0]
        artifact.update(file=gz_name, compression="gzip", size=size, sha256=digest, raw_size=10240)

    edit_manifest(bundle, bomb)
    refused_everywhere("docker_volume_restore", [name, "more than its recorded raw_size of 10240"], bundle=bundle)
    assert res.leftovers() == []


def test_sparse_bomb_is_refused(client, res, tmp_path):
    name = res.name("sparse")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "hole", "wb") as f:
        f.truncate(2 * 1024 * 1024 * 1024)
    raw = subprocess.run(
        ["tar", "-C", str(src), "--sparse", "--format=posix", "-cf", "-", "hole"], check=True, capture_output=True
    ).stdout
    bundle = make_volume_bundle(tmp_path / "b", {name: raw})
    refused_everywhere(
        "docker_volume_restore", [name, "sparse files at their apparent size", "2147483648"], bundle=bundle
    )
    assert res.leftovers() == []


# --------------------------------------------------------------------------------------------- F: files


def _replace_artifact(bundle, make):
    with open(os.path.join(bundle, "manifest.json")) as f:
        artifact = json.load(f)["artifacts"][0]
    path = os.path.join(bundle, artifact["file"])
    os.unlink(path)
    make(path)
    return artifact


@pytest.mark.parametrize(
    "case,words",
    [
        ("fifo-artifact", ["not a regular file"]),
        ("artifact-symlink-out", ["symbolic link"]),
        ("manifest-dev-zero", ["symbolic link", "manifest.json"]),
        ("deep-json", ["nests deeper than 64 levels"]),
    ],
)
def test_bundle_files_must_be_regular_files_inside_the_bundle(client, res, tmp_path, case, words):
    name = res.name("files")
    bundle = make_volume_bundle(tmp_path / "b", {name: tar_bytes([(dict(name="f"), b"data")])})
    outside = tmp_path / "outside.tar.zst"
    if case == "fifo-artifact":
        _replace_artifact(bundle, os.mkfifo)
    elif case == "artifact-symlink-out":
        with open(os.path.join(bundle, "manifest.json")) as f:
            artifact = json.load(f)["artifacts"][0]
        os.rename(os.path.join(bundle, artifact["file"]), outside)
        os.symlink(outside, os.path.join(bundle, artifact["file"]))
    elif case == "manifest-dev-zero":
        os.unlink(os.path.join(bundle, "manifest.json"))
        os.symlink("/dev/zero", os.path.join(bundle, "manifest.json"))
    else:
        with open(os.path.join(bundle, "manifest.json"), "w") as f:
            f.write("[" * 200_000 + "]" * 200_000)
    modules = ["docker_volume_restore"]
    if case.startswith(("manifest", "deep")):
        modules += ["docker_container_restore", "docker_load", "docker_import"]
    for module in modules:
        assert_refused(run_module(module, check=False, bundle=bundle), *words)
    assert res.leftovers() == []


def test_import_runs_the_same_scan(client, res, tmp_path):
    bundle = make_volume_bundle(tmp_path / "b", {res.name("unused"): tar_bytes([(dict(name="f"), b"data")])})
    written = write_stream([prefix_symlink_tar()], bundle, "filesystem-x.tar.zst", compression="zstd")
    _bundle.update_manifest(
        bundle, lambda m: _bundle.add_artifact(m, _bundle.artifact_entry("filesystem", "x", written))
    )
    repository = res.name("imp")
    res.images.append(f"{repository}:latest")
    refused_everywhere(
        "docker_import", ["filesystem artifact x", "through the symlink"], bundle=bundle, repository=repository
    )
    assert res.leftovers() == []


# --------------------------------------------------------------------------------------------- E: names


def test_absolute_path_volume_name_is_refused_in_check_mode_too(client, res, tmp_path):
    target = tmp_path / "host-dir"
    name = res.name("abs")
    bundle = make_volume_bundle(tmp_path / "b", {name: tar_bytes([(dict(name="planted"), b"x")])})

    def absolute(doc):
        doc["artifacts"][0]["volume"] = str(target)
        doc["volumes"][str(target)] = dict(doc["volumes"].pop(name), Name=str(target))

    edit_manifest(bundle, absolute)
    for module in ("docker_volume_restore", "docker_container_restore"):
        refused_everywhere(module, [str(target), "not a valid Docker volume name", "absolute path"], bundle=bundle)
    assert not target.exists()
    assert res.leftovers() == []


def test_bind_driver_options_are_refused_by_default(client, res, tmp_path):
    target = tmp_path / "host-dir"
    target.mkdir()
    name = res.name("bindopts")
    bundle = make_volume_bundle(tmp_path / "b", {name: tar_bytes([(dict(name="planted"), b"x")])})

    def bind(doc):
        doc["volumes"][name]["DriverOpts"] = {"type": "none", "o": "bind", "device": str(target)}

    edit_manifest(bundle, bind)
    refused_everywhere(
        "docker_volume_restore", [f"volume {name}", "bind-mount a host path", "allow_privileged=true"], bundle=bundle
    )
    assert os.listdir(target) == []
    assert res.leftovers() == []


def test_hostile_image_names_are_refused(client, res, tmp_path):
    bundle = make_volume_bundle(tmp_path / "b", {res.name("v"): tar_bytes([(dict(name="f"), b"x")])})

    def bad_container(doc):
        doc["container"] = {
            "id": "c" * 64,
            "name": "../../etc",
            "image": IMAGE,
            "image_id": "sha256:" + "a" * 64,
            "state": {"status": "exited", "running": False, "paused": False},
        }

    edit_manifest(bundle, bad_container)
    assert_refused(
        run_module("docker_volume_restore", bundle=bundle), "'../../etc'", "not a valid Docker container name"
    )
    assert res.leftovers() == []


# --------------------------------------------------------------------------------------------- E: replacement


def test_unrelated_container_of_the_same_name_is_never_replaced(client, res):
    name = res.name("theirs")
    theirs = client.create_container(IMAGE, command=["sleep", "300"], name=name)["Id"]
    res.containers.append(theirs)
    client.start(theirs)
    run_config = plain_run_config(res)
    run_config["name"] = name
    refused_everywhere("docker_container_restore", [f"container named {name}", "replace=true"], run_config=run_config)
    inspect = client.inspect_container(name)
    assert inspect["Id"] == theirs and inspect["State"]["Running"]

    replaced = run_module("docker_container_restore", run_config=run_config, replace=True)
    assert replaced.get("changed") and replaced["operation"] == "recreate", replaced
    res.containers.append(replaced["container"])
    assert client.inspect_container(name)["Id"] == replaced["container"] != theirs


def test_failing_create_removes_the_networks_and_volumes_it_made(client, res):
    run_config = plain_run_config(res)
    network, volume = res.name("net"), res.name("vol")
    run_config["host_config"] = {"NetworkMode": network, "Binds": [f"{volume}:/data"], "Memory": 1024}
    run_config["network_definitions"] = {network: {"Name": network, "Driver": "bridge"}}
    run_config["volume_definitions"] = {volume: {"Name": volume, "Driver": "local"}}
    try:
        failed = run_module("docker_container_restore", run_config=run_config)
        assert failed.get("failed"), failed
        assert not client.networks(names=[network])
        assert res.leftovers() == []
    finally:
        for net in client.networks(names=[network]):
            client.remove_network(net["Id"])


# --------------------------------------------------------------------------------------------- E: tags


def test_load_never_moves_a_tag_without_force_tag(client, res, tmp_path):
    helper = client.create_container(IMAGE, command=["true"], name=res.name("src"))["Id"]
    res.containers.append(helper)
    other = client.commit(helper, repository=res.name("other"), tag="v1", changes=['LABEL ferry.test="other"'])["Id"]
    res.images.append(f"{res.name('other')}:v1")
    repository = res.name("app")
    client.tag(IMAGE, repository, tag="live")
    res.images.append(f"{repository}:live")
    original = client.inspect_image(f"{repository}:live")["Id"]
    bundle = make_volume_bundle(tmp_path / "b", {res.name("v"): tar_bytes([(dict(name="f"), b"x")])})
    # the archive itself tags the image repository:live, as a docker save of that tag would
    client.tag(other, repository, tag="live", force=True)
    written = write_stream(client.get_image(f"{repository}:live"), bundle, "image.tar.zst", compression="zstd")
    client.tag(original, repository, tag="live", force=True)
    client.remove_image(other, force=True)
    entry = _bundle.artifact_entry("image", "img", written, image_id=other, repo_tags=[])
    _bundle.update_manifest(bundle, lambda m: _bundle.add_artifact(m, entry))
    res.images.append(other)

    loaded = run_module("docker_load", bundle=bundle)  # the archive's own tag is not applied
    assert loaded.get("changed") and loaded["operation"] == "load", loaded
    assert client.inspect_image(f"{repository}:live")["Id"] == original

    for check in (True, False):
        moved = run_module("docker_load", check=check, bundle=bundle, tag=f"{repository}:live")
        assert_refused(moved, f"{repository}:live", "force_tag=true")
    assert client.inspect_image(f"{repository}:live")["Id"] == original
    forced = run_module("docker_load", bundle=bundle, tag=f"{repository}:live", force_tag=True)
    assert forced.get("changed"), forced
    assert client.inspect_image(f"{repository}:live")["Id"] == other


def test_failed_image_id_check_leaves_nothing_behind(client, res, tmp_path):
    helper = client.create_container(IMAGE, command=["true"], name=res.name("src2"))["Id"]
    res.containers.append(helper)
    image = client.commit(helper, repository=res.name("lie"), tag="v1", changes=['LABEL ferry.test="lie"'])["Id"]
    client.remove_container(helper)
    bundle = make_volume_bundle(tmp_path / "b", {res.name("v"): tar_bytes([(dict(name="f"), b"x")])})
    written = write_stream(client.get_image(image), bundle, "image.tar.zst", compression="zstd")
    client.remove_image(image, force=True)
    claimed = "sha256:" + "e" * 64  # the manifest names another image than the archive holds
    entry = _bundle.artifact_entry("image", "img", written, image_id=claimed, repo_tags=[f"{res.name('lie')}:v2"])
    _bundle.update_manifest(bundle, lambda m: _bundle.add_artifact(m, entry))
    try:
        failed = run_module("docker_load", bundle=bundle)
        assert_refused(failed, claimed, "capture it again")
        assert not [i for i in client.images(all=True) if i["Id"] == image]
        assert res.leftovers() == []
    finally:
        if [i for i in client.images(all=True) if i["Id"] == image]:
            client.remove_image(image, force=True)


# --------------------------------------------------------------------------------------------- D: policy


@pytest.mark.parametrize(
    "host_config,word",
    [
        ({"Privileged": True}, "privileged mode"),
        ({"Binds": ["/:/host"]}, "root directory"),
        ({"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]}, "Docker socket"),
        ({"CapAdd": ["ALL"]}, "ALL"),
        ({"NetworkMode": "host"}, "network namespace"),
        ({"PidMode": "host"}, "pid namespace"),
        ({"IpcMode": "host"}, "ipc namespace"),
        ({"UTSMode": "host"}, "uts namespace"),
        ({"UsernsMode": "host"}, "userns namespace"),
        ({"SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"]}, "unconfined"),
        (
            {"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "rwm"}]},
            "/dev/null",
        ),
    ],
    ids=lambda v: None if isinstance(v, str) else "-".join(v),
)
def test_privilege_bearing_run_config_needs_allow_privileged(client, res, host_config, word):
    run_config = plain_run_config(res)
    run_config["host_config"] = host_config
    refused_everywhere(
        "docker_container_restore", [run_config["name"], word, "allow_privileged=true"], run_config=run_config
    )
    assert res.leftovers() == []
    listed = run_module("docker_restore_preflight", run_config=run_config, fail_on_problems=False)
    assert any(word in setting for setting in listed["privileged"]), listed
    assert not listed["ok"] and any("allow_privileged=true" in problem for problem in listed["problems"]), listed
    allowed = run_module(
        "docker_restore_preflight", run_config=run_config, fail_on_problems=False, allow_privileged=True
    )
    assert not any("privilege-bearing" in problem for problem in allowed["problems"]), allowed


def test_allow_privileged_applies_them(client, res):
    run_config = plain_run_config(res)
    run_config["host_config"] = {"CapAdd": ["SYS_PTRACE"]}
    created = run_module("docker_container_restore", run_config=run_config, allow_privileged=True, state="created")
    assert created.get("changed"), created
    res.containers.append(created["container"])
    assert client.inspect_container(created["container"])["HostConfig"]["CapAdd"] == ["SYS_PTRACE"]


def test_failing_volume_restore_removes_every_volume_it_created(client, res, tmp_path):
    first, second = res.name("one"), res.name("two")
    bundle = make_volume_bundle(
        tmp_path / "b", {first: tar_bytes([(dict(name="a"), b"1")]), second: tar_bytes([(dict(name="b"), b"2")])}
    )
    edit_manifest(bundle, lambda doc: doc["volumes"][second].update(Driver="ferry-no-such-driver"))
    failed = run_module("docker_volume_restore", bundle=bundle)
    assert failed.get("failed") and "ferry-no-such-driver" in failed["msg"], failed
    assert res.leftovers() == []


def test_import_names_are_checked(client, res, tmp_path):
    bundle = make_volume_bundle(tmp_path / "b", {res.name("unused"): tar_bytes([(dict(name="f"), b"data")])})
    written = write_stream([tar_bytes([(dict(name="f"), b"x")])], bundle, "filesystem-x.tar.zst", compression="zstd")
    _bundle.update_manifest(
        bundle, lambda m: _bundle.add_artifact(m, _bundle.artifact_entry("filesystem", "x", written))
    )
    refused_everywhere(
        "docker_import", ["'Upper/Case:latest'", "reference grammar"], bundle=bundle, repository="Upper/Case"
    )
    assert res.leftovers() == []
