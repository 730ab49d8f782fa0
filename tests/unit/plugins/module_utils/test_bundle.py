# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import pathlib
import pwd
import tempfile

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _bundle
from ansible_collections.ferry.docker.plugins.module_utils._bundle import (
    BundleError,
    add_artifact,
    artifact_entry,
    ensure_bundle_dir,
    find_artifact,
    load_manifest,
    new_manifest,
    update_manifest,
    validate_manifest,
    verify_artifacts,
    write_manifest,
)
from ansible_collections.ferry.docker.plugins.module_utils._stream import FerryError, write_stream

SOURCE = {
    "hostname": "docker-a",
    "docker_version": "27.3.1",
    "api_version": "1.47",
    "architecture": "x86_64",
    "os": "linux",
}
CONTAINER = {
    "id": "c" * 64,
    "name": "web",
    "image": "nginx:1.27",
    "image_id": "sha256:" + "a" * 64,
    "state": {"status": "running", "running": True, "paused": False},
}


def artifact(kind="volume", name="data", **overrides):
    entry = {
        "kind": kind,
        "name": name,
        "file": f"{kind}-{name}.tar.zst",
        "compression": "zstd",
        "size": 10,
        "sha256": "0" * 64,
        "raw_size": 100,
    }
    entry.update(overrides)
    return entry


@pytest.fixture
def manifest():
    doc = new_manifest(SOURCE, CONTAINER)
    doc["run_config"] = {"Image": "nginx:1.27", "Env": ["A=1"]}
    doc["image_config"] = {"Cmd": ["nginx"]}
    doc["networks"] = {"front": {"Driver": "bridge"}}
    doc["volumes"] = {"data": {"Driver": "local"}}
    add_artifact(doc, artifact())
    add_artifact(doc, artifact("image", "nginx:1.27", image_id="sha256:" + "a" * 64, layers=["l1"]))
    return doc


def test_new_manifest_is_valid(manifest):
    assert validate_manifest(manifest) == []
    assert validate_manifest(new_manifest(SOURCE)) == []
    assert manifest["schema_version"] == _bundle.SCHEMA_VERSION == 1
    assert manifest["producer"] == {"collection": "ferry.docker", "version": _bundle.COLLECTION_VERSION}
    assert manifest["created"].endswith("Z")


def test_collection_version_matches_galaxy_yml():
    galaxy = pathlib.Path(__file__).resolve().parents[4] / "galaxy.yml"
    assert yaml.safe_load(galaxy.read_text())["version"] == _bundle.COLLECTION_VERSION


def delete(key):
    return ("delete", key)


INVALID = [
    ("schema_version", "1", "schema_version must be an integer"),
    ("schema_version", 0, "schema_version must be an integer"),
    ("schema_version", True, "schema_version must be an integer"),
    ("schema_version", delete, "schema_version must be an integer"),
    ("created", "2024-01-31 12:00:00", "created must be a UTC time"),
    ("created", "2024-01-31T12:00:00+01:00", "created must be a UTC time"),
    ("producer", delete, "producer must be an object"),
    ("producer", {"collection": "ferry.docker"}, "producer.version must be a string"),
    ("source", [], "source must be an object"),
    ("source", {"hostname": "a"}, "source.docker_version must be a string"),
    ("container", None, "container must be an object"),
    ("container", dict(CONTAINER, id=5), "container.id must be a string"),
    ("container", dict(CONTAINER, state={"status": "running", "running": "yes", "paused": False}), "running"),
    ("container", {k: v for k, v in CONTAINER.items() if k != "state"}, "container.state must be an object"),
    ("run_config", ["--rm"], "run_config must be an object"),
    ("image_config", "x", "image_config must be an object"),
    ("networks", delete, "networks must be an object"),
    ("volumes", [], "volumes must be an object"),
    ("artifacts", {}, "artifacts must be a list"),
    ("artifacts", ["x"], "artifacts[0] must be an object"),
]

INVALID_ARTIFACTS = [
    ({"kind": "disk"}, "artifacts[0].kind must be one of filesystem, image, volume"),
    ({"name": ""}, "artifacts[0].name must be a non-empty string"),
    ({"file": "../etc/passwd"}, "artifacts[0].file must be a plain file name"),
    ({"file": "/etc/passwd"}, "artifacts[0].file must be a plain file name"),
    ({"file": "sub/a.tar"}, "artifacts[0].file must be a plain file name"),
    ({"file": ".."}, "artifacts[0].file must be a plain file name"),
    ({"file": ".manifest.lock"}, "artifacts[0].file must be a plain file name"),
    ({"file": "manifest.json"}, "artifacts[0].file must be a plain file name"),
    ({"file": ""}, "artifacts[0].file must be a non-empty string"),
    ({"file": 3}, "artifacts[0].file must be a non-empty string"),
    ({"compression": "xz"}, "artifacts[0].compression must be one of zstd, gzip, none"),
    ({"size": -1}, "artifacts[0].size must be an integer >= 0"),
    ({"size": "10"}, "artifacts[0].size must be an integer >= 0"),
    ({"size": True}, "artifacts[0].size must be an integer >= 0"),
    ({"raw_size": 1.5}, "artifacts[0].raw_size must be an integer >= 0"),
    ({"sha256": "abc"}, "artifacts[0].sha256 must be 64 lowercase hexadecimal characters"),
    ({"sha256": "A" * 64}, "artifacts[0].sha256 must be 64 lowercase hexadecimal characters"),
    ({"sha256": "g" * 64}, "artifacts[0].sha256 must be 64 lowercase hexadecimal characters"),
    ({"sha256": None}, "artifacts[0].sha256 must be 64 lowercase hexadecimal characters"),
]


@pytest.mark.parametrize("field, value, problem", INVALID)
def test_invalid_manifest_fields(manifest, field, value, problem):
    if value is delete:
        del manifest[field]
    else:
        manifest[field] = value
    problems = validate_manifest(manifest)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize("change, problem", INVALID_ARTIFACTS)
def test_invalid_artifacts(change, problem):
    doc = new_manifest(SOURCE)
    doc["artifacts"] = [artifact(**change)]
    (reported,) = validate_manifest(doc)
    assert reported.startswith(problem)


@pytest.mark.parametrize("field", _bundle.ARTIFACT_FIELDS)
def test_artifact_missing_field(field):
    doc = new_manifest(SOURCE)
    entry = artifact()
    del entry[field]
    doc["artifacts"] = [entry]
    assert f"artifacts[0] has no {field}" in validate_manifest(doc)


def test_duplicate_artifacts_and_files():
    doc = new_manifest(SOURCE)
    doc["artifacts"] = [artifact(), artifact(), artifact(name="other", file="volume-data.tar.zst")]
    problems = validate_manifest(doc)
    assert "artifacts[1] repeats the volume artifact 'data'" in problems
    assert "artifacts[2] reuses the file 'volume-data.tar.zst' of another artifact" in problems


@pytest.mark.parametrize("doc", [None, [], "manifest", 1])
def test_manifest_must_be_an_object(doc):
    assert validate_manifest(doc) == ["the manifest must be a JSON object"]


@given(st.text(min_size=1, max_size=20))
def test_accepted_file_names_stay_inside_the_bundle(name):
    doc = new_manifest(SOURCE)
    doc["artifacts"] = [artifact(file=name)]
    if validate_manifest(doc) == []:
        bundle = "/srv/bundle"
        path = os.path.normpath(os.path.join(bundle, name))
        assert os.path.dirname(path) == bundle
        assert not name.startswith(".")
        assert name != _bundle.MANIFEST_NAME


def test_add_artifact_replaces_same_kind_and_name(manifest):
    add_artifact(manifest, artifact(size=99))
    add_artifact(manifest, artifact("filesystem", "data", file="fs.tar.zst"))
    assert [(a["kind"], a["name"]) for a in manifest["artifacts"]] == [
        ("volume", "data"),
        ("image", "nginx:1.27"),
        ("filesystem", "data"),
    ]
    assert manifest["artifacts"][0]["size"] == 99


def test_find_artifact(manifest):
    assert find_artifact(manifest, "volume", "data")["file"] == "volume-data.tar.zst"
    assert find_artifact(manifest, "image")["name"] == "nginx:1.27"
    assert find_artifact(manifest, "volume", "nope") is None
    assert find_artifact(manifest, "filesystem") is None


def test_a_streamed_image_is_recorded_once_per_name_and_checked(manifest):
    streamed = {"kind": "image", "name": "web", "image_id": "sha256:" + "b" * 64, "to": "root@192.0.2.12"}
    _bundle.add_streamed(manifest, dict(streamed, bytes=1))
    _bundle.add_streamed(manifest, dict(streamed, bytes=2))
    _bundle.add_streamed(manifest, dict(streamed, name="db"))
    assert [(e["name"], e.get("bytes")) for e in manifest["streamed"]] == [("web", 2), ("db", None)]
    assert _bundle.find_streamed(manifest, "image", "web")["bytes"] == 2
    assert _bundle.find_streamed(manifest, "image", "nope") is None
    assert validate_manifest(manifest) == []
    manifest["streamed"].append(dict(streamed, kind="volume", image_id="web:latest", to=5))
    assert validate_manifest(manifest) == [
        "streamed[2].to must be a string",
        "streamed[2].kind must be image",
        "streamed[2].image_id must be sha256:<64 lowercase hexadecimal characters>",
    ]
    manifest["streamed"] = {"web": streamed}
    assert validate_manifest(manifest) == ["streamed must be a list"]


def test_artifact_entry_from_writer_result(tmp_path):
    written = write_stream([b"volume data"], tmp_path, "volume-data.tar.gz", compression="gzip")
    entry = artifact_entry("volume", "data", written, volume="data")
    assert set(entry) == {"kind", "name", "file", "compression", "size", "sha256", "raw_size", "volume"}
    doc = add_artifact(new_manifest(SOURCE), entry)
    assert validate_manifest(doc) == []


def test_write_and_load_round_trip(tmp_path, manifest):
    write_manifest(tmp_path, manifest)
    path = tmp_path / "manifest.json"
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = path.read_text()
    assert text == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    assert load_manifest(tmp_path) == manifest
    assert sorted(os.listdir(tmp_path)) == ["manifest.json"]


def test_write_refuses_invalid_manifest(tmp_path, manifest):
    manifest["artifacts"][0]["file"] = "../escape"
    with pytest.raises(BundleError, match="refusing to write an invalid manifest"):
        write_manifest(tmp_path, manifest)
    assert os.listdir(tmp_path) == []


def test_load_missing_directory_or_manifest(tmp_path):
    message = "no manifest.json in {}: this is not a ferry.docker bundle; give the directory a capture module wrote"
    with pytest.raises(BundleError) as err:
        load_manifest(str(tmp_path))
    assert str(err.value) == message.format(tmp_path)
    with pytest.raises(BundleError, match=r"this is not a ferry\.docker bundle"):
        load_manifest(str(tmp_path / "missing"))


@pytest.mark.parametrize("content", [b"{", b"", b"\xff\xfe", b"[1, 2"])
def test_load_invalid_json(tmp_path, content):
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(BundleError, match=r"is not valid JSON .*copy it again from the source"):
        load_manifest(tmp_path)


def test_load_newer_schema(tmp_path, manifest):
    manifest["schema_version"] = 2
    manifest["something_new"] = {"we": "do not know"}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as err:
        load_manifest(str(tmp_path))
    assert str(err.value) == (
        f"bundle {tmp_path} uses manifest schema 2 but this ferry.docker understands up to 1; "
        "upgrade the ferry.docker collection on this host"
    )


def test_load_reports_every_problem(tmp_path, manifest):
    manifest["artifacts"][0]["sha256"] = "nope"
    del manifest["source"]["os"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as err:
        load_manifest(tmp_path)
    assert "source.os must be a string" in str(err.value)
    assert "artifacts[0].sha256 must be 64 lowercase hexadecimal characters" in str(err.value)
    assert isinstance(err.value, FerryError)


def test_update_manifest_creates_then_reports_no_change(tmp_path):
    doc, changed = update_manifest(tmp_path, lambda m: add_artifact(m, artifact()), source=SOURCE, container=CONTAINER)
    assert changed is True
    assert load_manifest(tmp_path) == doc
    assert doc["container"] == CONTAINER
    doc2, changed = update_manifest(tmp_path, lambda m: add_artifact(m, artifact()), source=SOURCE, container=CONTAINER)
    assert changed is False
    assert doc2 == doc
    update_manifest(tmp_path, lambda m: add_artifact(m, artifact("image", "x")))
    _manifest, changed = update_manifest(tmp_path, lambda m: add_artifact(m, artifact()))  # re-capture of the first one
    assert changed is False
    _manifest, changed = update_manifest(tmp_path, lambda m: add_artifact(m, artifact(size=11)))
    assert changed is True
    assert find_artifact(load_manifest(tmp_path), "volume", "data")["size"] == 11


def test_update_manifest_needs_a_source_to_create(tmp_path):
    with pytest.raises(BundleError, match="no source to create one"):
        update_manifest(tmp_path, lambda m: None)
    assert not (tmp_path / "manifest.json").exists()


def test_update_manifest_keeps_one_container_per_bundle(tmp_path):
    update_manifest(tmp_path, lambda m: None, source=SOURCE, container=CONTAINER)
    recreated = dict(CONTAINER, id="d" * 64)
    doc, changed = update_manifest(tmp_path, lambda m: None, container=recreated)
    assert changed and doc["container"]["id"] == "d" * 64
    with pytest.raises(BundleError, match="holds container web, not db; give each container its own bundle"):
        update_manifest(tmp_path, lambda m: None, container=dict(CONTAINER, name="db"))


def test_update_manifest_does_not_write_an_invalid_result(tmp_path):
    update_manifest(tmp_path, lambda m: add_artifact(m, artifact()), source=SOURCE)
    before = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="refusing to write"):
        update_manifest(tmp_path, lambda m: add_artifact(m, artifact("image", "x", size=-5)))
    assert (tmp_path / "manifest.json").read_bytes() == before


def _add_many(bundle_dir, prefix, barrier):
    barrier.wait()
    for i in range(20):
        update_manifest(bundle_dir, lambda m, i=i: add_artifact(m, artifact(name=f"{prefix}{i}")), source=SOURCE)


def test_concurrent_updates_do_not_lose_artifacts(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_add_many, args=(str(tmp_path), p, barrier)) for p in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    names = {a["name"] for a in load_manifest(tmp_path)["artifacts"]}
    assert names == {f"{p}{i}" for p in "ab" for i in range(20)}


def test_ensure_bundle_dir_creates_with_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = ensure_bundle_dir(tmp_path / "a" / "b" / "bundle")
    finally:
        os.umask(old)
    assert path == str(tmp_path / "a" / "b" / "bundle")
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert os.listdir(path) == []  # the write probe leaves nothing behind


def test_ensure_bundle_dir_keeps_existing_permissions(tmp_path):
    os.chmod(tmp_path, 0o755)
    ensure_bundle_dir(tmp_path)
    assert os.stat(tmp_path).st_mode & 0o777 == 0o755


def test_ensure_bundle_dir_on_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="exists and is not a directory"):
        ensure_bundle_dir(tmp_path / "file")
    with pytest.raises(BundleError, match="is below a file, not a directory"):
        ensure_bundle_dir(tmp_path / "file" / "bundle")


def _ensure_as_nobody(path, queue):
    os.setgid(65534)
    os.setuid(65534)
    try:
        ensure_bundle_dir(path)
        queue.put("no error")
    except BundleError as exc:
        queue.put(str(exc))


@pytest.mark.parametrize("leaf", ["", "new-bundle"])
def test_ensure_bundle_dir_not_writable(tmp_path, leaf):
    if os.geteuid() != 0:
        os.chmod(tmp_path, 0o555)
        target = str(tmp_path / leaf) if leaf else str(tmp_path)
        with pytest.raises(BundleError) as err:
            ensure_bundle_dir(target)
        message = str(err.value)
    else:
        # Root bypasses permission bits, so the check runs in a child that drops to "nobody", on a
        # root-owned 0755 directory directly in /tmp (pytest's tmp_path is not reachable by others).
        with tempfile.TemporaryDirectory() as parent:
            os.chmod(parent, 0o755)
            target = os.path.join(parent, leaf) if leaf else parent
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            child = ctx.Process(target=_ensure_as_nobody, args=(target, queue))
            child.start()
            message = queue.get(timeout=30)
            child.join(30)
        assert f"is not writable by {pwd.getpwuid(65534).pw_name}" in message
    assert message.startswith(f"destination {target} is not writable by ")
    assert "choose another dest or fix its permissions" in message


@pytest.fixture
def bundle(tmp_path):
    doc = new_manifest(SOURCE)
    for kind, name, data in [("volume", "data", b"v" * 5000), ("image", "nginx", b"i" * 7000)]:
        written = write_stream([data], tmp_path, f"{kind}-{name}.tar.zst")
        add_artifact(doc, artifact_entry(kind, name, written))
    write_manifest(tmp_path, doc)
    return tmp_path, doc


def test_verify_artifacts_ok_and_selection(bundle):
    bundle_dir, doc = bundle
    assert [a["name"] for a in verify_artifacts(bundle_dir, doc)] == ["data", "nginx"]
    assert [a["name"] for a in verify_artifacts(bundle_dir, doc, kinds=["image"])] == ["nginx"]
    assert [a["name"] for a in verify_artifacts(bundle_dir, doc, names=["data"])] == ["data"]
    with pytest.raises(BundleError, match="has no artifact named missing"):
        verify_artifacts(bundle_dir, doc, names=["data", "missing"])


def test_verify_artifacts_names_the_corrupt_artifact(bundle):
    bundle_dir, doc = bundle
    path = bundle_dir / "volume-data.tar.zst"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    verify_artifacts(bundle_dir, doc, kinds=["image"])
    with pytest.raises(BundleError) as err:
        verify_artifacts(bundle_dir, doc)
    assert f"volume artifact data of bundle {bundle_dir}" in str(err.value)
    assert "volume-data.tar.zst has sha256" in str(err.value)


def test_verify_artifacts_missing_file(bundle):
    bundle_dir, doc = bundle
    os.unlink(bundle_dir / "image-nginx.tar.zst")
    with pytest.raises(BundleError, match=r"image artifact nginx .* cannot be read"):
        verify_artifacts(bundle_dir, copy.deepcopy(doc))


# ------------------------------------------------------------------------------------------------
# bundle files are regular files inside the bundle, read with bounds (issue 13 F)


def _bundle_with_artifact(tmp_path, manifest_doc):
    written = write_stream([b"payload"], str(tmp_path), "volume-data.tar", compression="none")
    entry = artifact_entry("volume", "data", written)
    manifest_doc["artifacts"] = [entry]
    write_manifest(str(tmp_path), manifest_doc)
    return entry


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: os.symlink("/dev/zero", p), "symbolic link"),
        (lambda p: os.symlink("other.json", p), "symbolic link"),
        (os.mkfifo, "not a regular file"),
        (os.mkdir, "not a regular file"),
    ],
)
def test_manifest_must_be_a_regular_file(tmp_path, manifest, make, message):
    (tmp_path / "other.json").write_text(json.dumps(manifest))
    make(str(tmp_path / "manifest.json"))
    with pytest.raises(BundleError, match=message):
        load_manifest(str(tmp_path))


def test_manifest_size_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(_bundle, "MANIFEST_MAX_BYTES", 100)
    (tmp_path / "manifest.json").write_text(" " * 101 + "{}")
    with pytest.raises(BundleError, match="larger than 100 bytes"):
        load_manifest(str(tmp_path))


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_manifest_is_a_clear_error(tmp_path, depth):
    (tmp_path / "manifest.json").write_text("[" * depth + "]" * depth)
    with pytest.raises(BundleError, match="nests deeper than 64 levels"):
        load_manifest(str(tmp_path))


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p, outside: os.symlink(outside, p), "symbolic link"),
        (lambda p, outside: os.mkfifo(p), "not a regular file"),
    ],
)
def test_artifact_must_be_a_regular_file_of_the_bundle(tmp_path, manifest, make, message):
    bundle = tmp_path / "b"
    bundle.mkdir()
    entry = _bundle_with_artifact(bundle, manifest)
    outside = tmp_path / "outside"
    (bundle / entry["file"]).rename(outside)
    make(str(bundle / entry["file"]), str(outside))
    with pytest.raises(BundleError, match=message):
        verify_artifacts(str(bundle), load_manifest(str(bundle)))


def test_artifact_longer_than_recorded_is_refused_without_reading_it_all(tmp_path, manifest):
    entry = _bundle_with_artifact(tmp_path, manifest)
    with open(tmp_path / entry["file"], "ab") as f:
        f.write(b"x" * 10)
    with pytest.raises(BundleError, match="more than expected 7"):
        verify_artifacts(str(tmp_path), load_manifest(str(tmp_path)))


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\0b", None])
def test_open_bundle_file_takes_plain_names_only(tmp_path, name):
    with pytest.raises(BundleError, match="plain file name"):
        _bundle.open_bundle_file(str(tmp_path), name)
