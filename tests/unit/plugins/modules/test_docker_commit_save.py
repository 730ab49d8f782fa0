# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_commit_save without an engine: image reference parsing and leaving layers out of a save archive.

The save archive is synthetic but has the docker 20.10 layout and member order (``<dir>/VERSION``,
``<dir>/json``, ``<dir>/layer.tar`` for each layer, then ``<id>.json``, ``manifest.json``,
``repositories``), so manifest.json comes after the layers it describes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _step_commit_save as mod
from ansible_collections.ferry.docker.plugins.module_utils._stream import ArtifactWriter, write_stream


def _add(tar, name, data=None, directory=False):
    info = tarfile.TarInfo(name)
    info.mtime = 1700000000
    if directory:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def layer_tar(text):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        _add(tar, "file.txt", text.encode() * 1000)
    return data.getvalue()


def save_archive(layers, swap_manifest=False):
    """A docker-save-like archive of ``layers`` (list of layer.tar bytes); returns (bytes, diff IDs, dirs)."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    dirs = [hashlib.sha256(f"v1-{i}".encode()).hexdigest() for i in range(len(layers))]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    listed = [f"{d}/layer.tar" for d in dirs]
    if swap_manifest:
        listed.reverse()
    manifest = json.dumps([{"Config": "abc.json", "RepoTags": ["r:t"], "Layers": listed}]).encode()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for d, layer in sorted(zip(dirs, layers)):
            _add(tar, d, directory=True)
            _add(tar, f"{d}/VERSION", b"1.0")
            _add(tar, f"{d}/json", b'{"id":"%s"}' % d.encode())
            _add(tar, f"{d}/layer.tar", layer)
        _add(tar, "abc.json", config)
        _add(tar, "manifest.json", manifest)
        _add(tar, "repositories", b"{}")
    return data.getvalue(), diff_ids, dirs


def chunked(data, size=1000):
    return [data[i : i + size] for i in range(0, len(data), size)]


class FakeClient:
    def __init__(self, archives):
        self.archives = list(archives)
        self.reads = 0

    def get_image(self, ref, chunk_size=None):
        archive = self.archives[min(self.reads, len(self.archives) - 1)]
        self.reads += 1
        return iter(chunked(archive))


class FakeCapture:
    compression = "none"

    def __init__(self, client, dest):
        self.client = client
        self.dest = str(dest)

    def writer(self, filename):
        return ArtifactWriter(self.dest, filename, compression=self.compression)

    def write(self, chunks, filename):
        return write_stream(chunks, self.dest, filename, compression=self.compression)


def members(path):
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isreg() else None) for m in tar}


@pytest.mark.parametrize(
    ("image_name", "expected"),
    [
        ("repo/name:tag", ("repo/name", "tag")),
        ("name", ("name", "latest")),
        ("localhost:5000/repo", ("localhost:5000/repo", "latest")),
        ("localhost:5000/repo:v1", ("localhost:5000/repo", "v1")),
    ],
)
def test_image_ref_parses_the_given_name(image_name, expected):
    assert mod.image_ref({"image_name": image_name}, "web") == expected


def test_image_ref_default_is_a_valid_repository():
    repository, tag = mod.image_ref({"image_name": None}, "My_App..1")
    assert repository == "ferry-commit/my-app-1"
    assert tag.endswith("Z") and len(tag) == len("20250101T120000Z")


def test_exclude_drops_only_the_excluded_layer_tar(tmp_path):
    layers = [layer_tar("base"), layer_tar("middle"), layer_tar("top")]
    archive, diff_ids, dirs = save_archive(layers)
    client = FakeClient([archive])
    image = {"RootFS": {"Layers": diff_ids}}
    written, excluded = mod.save(FakeCapture(client, tmp_path), "r:t", image, [diff_ids[0], "sha256:" + "0" * 64])
    assert excluded == [diff_ids[0]]
    assert client.reads == 2  # one read for manifest.json, one to write
    out = members(written["path"])
    assert f"{dirs[0]}/layer.tar" not in out
    assert f"{dirs[0]}/json" in out and f"{dirs[0]}/VERSION" in out
    for d, layer in zip(dirs[1:], layers[1:]):
        assert out[f"{d}/layer.tar"] == layer
    assert json.loads(out["manifest.json"])[0]["Layers"] == [f"{d}/layer.tar" for d in dirs]
    assert written["raw_size"] < len(archive)


def test_without_exclusion_the_archive_is_copied_byte_for_byte(tmp_path):
    archive, diff_ids, _dirs = save_archive([layer_tar("only")])
    client = FakeClient([archive])
    written, excluded = mod.save(FakeCapture(client, tmp_path), "r:t", {"RootFS": {"Layers": diff_ids}}, [])
    assert excluded == []
    assert client.reads == 1
    with open(written["path"], "rb") as f:
        assert f.read() == archive


def test_an_archive_that_changes_between_reads_is_refused(tmp_path):
    layers = [layer_tar("a"), layer_tar("b")]
    archive, diff_ids, _dirs = save_archive(layers)
    changed, _ids, _d = save_archive(layers, swap_manifest=True)
    client = FakeClient([archive, changed])
    with pytest.raises(ValueError, match="changed between"):
        mod.save(FakeCapture(client, tmp_path), "r:t", {"RootFS": {"Layers": diff_ids}}, [diff_ids[0]])
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_layer_count_mismatch_is_refused(tmp_path):
    archive, diff_ids, _dirs = save_archive([layer_tar("a"), layer_tar("b")])
    client = FakeClient([archive])
    with pytest.raises(ValueError, match="lists 2 layers"):
        mod.save(FakeCapture(client, tmp_path), "r:t", {"RootFS": {"Layers": diff_ids[:1]}}, [diff_ids[0]])
