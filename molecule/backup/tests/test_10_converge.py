"""The bundle converge made on host1: manifest, artifacts, volume content, latest, container state.

Runs first (pytest takes the files in name order): it expects converge's bundle to be the only one.
"""

from __future__ import annotations

import json
import os

from conftest import CONTAINER_DIR, SELECTED, UNSELECTED, VOLUME, bundles, latest

KNOWN_FILES = {"alpha.txt": "alpha known content\n", "sub/beta.txt": "beta known content\n"}


def _bundle(host):
    names = bundles(host)
    assert len(names) == 1, f"converge should have made exactly one bundle, found {names}"
    return f"{CONTAINER_DIR}/{names[0]}"


def _manifest(host):
    return json.loads(host.file(f"{_bundle(host)}/manifest.json").content_string)


def test_one_bundle_and_latest_points_to_it(host):
    bundle = _bundle(host)
    assert latest(host) == bundle.rsplit("/", 1)[-1]
    assert host.file(bundle).mode == 0o700


def test_manifest_lists_every_artifact_with_its_size_and_sha256(host):
    bundle = _bundle(host)
    manifest = _manifest(host)
    assert manifest["container"]["name"] == SELECTED
    kinds = sorted(artifact["kind"] for artifact in manifest["artifacts"])
    assert kinds == ["filesystem", "volume"] or kinds == ["image", "volume"], kinds
    for artifact in manifest["artifacts"]:
        path = f"{bundle}/{artifact['file']}"
        archive = host.file(path)
        assert archive.is_file, path
        assert archive.size == artifact["size"], path
        assert archive.mode == 0o600, path
        assert host.check_output(f"sha256sum {path}").split()[0] == artifact["sha256"], path


def test_volume_archive_holds_the_known_files(host):
    bundle = _bundle(host)
    (volume,) = [a for a in _manifest(host)["artifacts"] if a["kind"] == "volume"]
    assert volume["volume"] == VOLUME
    path = f"{bundle}/{volume['file']}"
    members = host.check_output(f"zstd -dc {path} | tar -tf -").split()
    for name, content in KNOWN_FILES.items():
        (member,) = [m for m in members if m.lstrip("./") == name]
        assert host.check_output(f"zstd -dc {path} | tar -xOf - {member}") + "\n" == content


def test_unselected_container_was_not_backed_up(host):
    assert not host.file(f"{CONTAINER_DIR.rsplit('/', 1)[0]}/{UNSELECTED}").exists


def test_containers_run_again_afterwards(host):
    for name in (SELECTED, UNSELECTED):
        state = json.loads(host.check_output(f"docker inspect --format '{{{{json .State}}}}' {name}"))
        assert state["Running"] and not state["Paused"], (name, state["Status"])


def test_converge_report(host):
    report_path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "backup-report.json")
    with open(report_path, encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["status"] == "ok"
    assert report["hosts"]["host2"] == {**report["hosts"]["host2"], "status": "ok", "containers": []}
    (entry,) = report["hosts"]["host1"]["containers"]
    assert entry["container"] == SELECTED
    assert entry["status"] == "ok"
    assert entry["bundle"] == _bundle(host)
    assert entry["bytes"] > 0
    assert entry["duration"] > 0
    assert entry["volumes"] == [VOLUME]
