# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""check_bundle: quick and deep checks of real bundles written with the collection's own writer."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from ansible_collections.ferry.docker.plugins.module_utils._bundle import (
    add_artifact,
    artifact_entry,
    new_manifest,
    write_manifest,
)
from ansible_collections.ferry.docker.plugins.module_utils._bundlecheck import check_bundle
from ansible_collections.ferry.docker.plugins.module_utils._stream import write_stream

CONTAINER = {
    "id": "c" * 64,
    "name": "web",
    "image": "web:1",
    "image_id": "sha256:" + "d" * 64,
    "state": {"status": "running", "running": True, "paused": False},
}
SOURCE = {"hostname": "h", "docker_version": "24", "api_version": "1.43", "architecture": "x86_64", "os": "linux"}


def _tar(*files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def bundle(tmp_path):
    """A bundle with an image archive and a volume archive, both gzip."""
    path = tmp_path / "20261130T070000Z"
    path.mkdir()
    manifest = new_manifest(SOURCE, CONTAINER)
    image = write_stream([_tar(("manifest.json", b"[]"))], str(path), "image.tar.gz", compression="gzip")
    add_artifact(manifest, artifact_entry("image", "image", image, image_id="sha256:" + "d" * 64))
    volume = write_stream([_tar(("data/a.txt", b"alpha" * 100))], str(path), "volume-data.tar.gz", compression="gzip")
    add_artifact(manifest, artifact_entry("volume", "data", volume, volume="data", type="volume"))
    write_manifest(str(path), manifest)
    return path


def test_a_good_bundle_passes_quick_and_deep(bundle):
    quick = check_bundle(str(bundle))
    assert quick["ok"] and quick["problems"] == []
    assert [a["checked"] for a in quick["artifacts"]] == ["size", "size"]
    assert quick["bytes_read"] == 0
    assert quick["container"] == "web"
    deep = check_bundle(str(bundle), deep=True)
    assert deep["ok"], deep["problems"]
    assert [a["checked"] for a in deep["artifacts"]] == ["data", "data"]
    assert deep["bytes_read"] == 2 * sum(a["size"] for a in deep["artifacts"])


def test_latest_is_resolved(bundle):
    os.symlink(bundle.name, bundle.parent / "latest")
    assert check_bundle(str(bundle.parent / "latest"))["path"] == str(bundle)


def test_a_flipped_byte_is_found_only_by_the_deep_check(bundle):
    path = bundle / "volume-data.tar.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert check_bundle(str(bundle))["ok"], "same size: the quick check cannot see it"
    deep = check_bundle(str(bundle), deep=True)
    assert not deep["ok"]
    (problem,) = deep["problems"]
    assert problem.startswith("volume artifact data: ")
    assert "has sha256" in problem and "expected" in problem
    assert [a["problem"] == "" for a in deep["artifacts"]] == [True, False]


def test_a_truncated_artifact_is_found_by_the_quick_check(bundle):
    path = bundle / "image.tar.gz"
    path.write_bytes(path.read_bytes()[:-10])
    (problem,) = check_bundle(str(bundle))["problems"]
    assert "image artifact image" in problem and "truncated" in problem


def test_every_damaged_artifact_is_named(bundle):
    (bundle / "image.tar.gz").unlink()
    (bundle / "volume-data.tar.gz").write_bytes(b"")
    problems = check_bundle(str(bundle), deep=True)["problems"]
    assert len(problems) == 2
    assert "image.tar.gz cannot be read (No such file or directory)" in problems[0]
    assert "volume artifact data" in problems[1]


def test_a_link_instead_of_an_artifact_is_refused(bundle, tmp_path):
    target = tmp_path / "elsewhere"
    (bundle / "image.tar.gz").rename(target)
    os.symlink(target, bundle / "image.tar.gz")
    (problem,) = check_bundle(str(bundle))["problems"]
    assert "symbolic link" in problem


def test_data_that_does_not_decompress_to_its_size_is_found(bundle):
    # A valid gzip stream whose sha256 and size are recorded, but shorter than the recorded raw_size.
    manifest = json.loads((bundle / "manifest.json").read_text())
    image = manifest["artifacts"][0]
    image["raw_size"] += 512
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (problem,) = check_bundle(str(bundle), deep=True)["problems"]
    assert "decompresses to" in problem


def test_an_unsafe_volume_archive_fails_the_deep_check(bundle):
    raw = _tar(("../escape", b"x"))
    (bundle / "volume-data.tar.gz").unlink()
    written = write_stream([raw], str(bundle), "volume-data.tar.gz", compression="gzip")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][1].update({k: written[k] for k in ("size", "sha256", "raw_size")})
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (problem,) = check_bundle(str(bundle), deep=True)["problems"]
    assert "not safe to restore" in problem


def test_a_damaged_manifest_stops_the_check(bundle):
    (bundle / "manifest.json").write_text("{not json")
    result = check_bundle(str(bundle), deep=True)
    assert not result["ok"]
    (problem,) = result["problems"]
    assert problem.startswith("the manifest cannot be used: ")
    assert result["artifacts"] == []


def test_a_missing_bundle(tmp_path):
    (problem,) = check_bundle(str(tmp_path / "nope"))["problems"]
    assert "does not exist" in problem


def test_gzip_garbage_with_a_matching_sha256_is_found(tmp_path):
    path = tmp_path / "b"
    path.mkdir()
    manifest = new_manifest(SOURCE, CONTAINER)
    written = write_stream([b"not a gzip stream"], str(path), "image.tar.gz", compression="none")
    entry = artifact_entry("image", "image", written, image_id="sha256:" + "d" * 64)
    entry["compression"] = "gzip"  # recorded as gzip, written plain: sha256 matches, data does not
    add_artifact(manifest, entry)
    write_manifest(str(path), manifest)
    result = check_bundle(str(path), deep=True)
    assert not result["ok"]
