# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The mountpoint fast path of a volume restore: one pass verifies, checks and writes an archive."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _extract as x
from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import UnsafeTarError
from ansible_collections.ferry.docker.plugins.module_utils._volmeta import TreeTar, tree_digest, walk_digest


def make_tree(root):
    os.makedirs(root / "sub" / "deep")
    (root / "a").write_bytes(b"hello\n")
    os.link(root / "a", root / "sub" / "hard")
    os.symlink("a", root / "link")
    (root / "sub" / "deep" / "big").write_bytes(os.urandom(300_000))
    os.chmod(root / "a", 0o4755)
    os.chown(root / "sub", 1000, 27)
    os.chmod(root / "sub", 0o750)
    os.chmod(root, 0o711)
    try:
        os.setxattr(root / "a", "user.k", b"v")
    except OSError:
        pass


def artifact_of(tmp_path, data, **extra):
    path = tmp_path / "bundle" / "volume-v.tar"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    entry = dict(
        kind="volume",
        name="v",
        file=path.name,
        compression="none",
        raw_size=len(data),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    entry.update(extra)
    return path, entry


def restore(path, artifact, dest):
    with open(path, "rb") as handle:
        return x.extract(x.verified_chunks(handle, artifact, "volume artifact v"), str(dest))


def test_a_tree_comes_back_the_same_in_one_pass(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_tree(src)
    dest.mkdir()
    path, artifact = artifact_of(tmp_path, b"".join(TreeTar(str(src)).chunks()))
    summary, written = restore(path, artifact, dest)
    x.LocalVolume(str(dest), "v").put_root(summary["root"])
    assert summary["complete"] and written == 300_000 + 6
    assert walk_digest(str(dest))[:2] == tree_digest(str(src))


def hostile(members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def info(name, kind=tarfile.REGTYPE, size=0, link=""):
    entry = tarfile.TarInfo(name)
    entry.type, entry.size, entry.linkname = kind, size, link
    return entry


@pytest.mark.parametrize(
    "members, problem",
    [
        ([(info("../escape", size=1), b"x")], "escape"),
        ([(info("/abs", size=1), b"x")], "abs"),
        ([(info("l", tarfile.SYMTYPE, link="/etc"), None), (info("l/passwd", size=1), b"x")], "symlink"),
        ([(info("h", tarfile.LNKTYPE, link="/etc/passwd"), None)], "hard link"),
        ([(info("f", size=1), b"x"), (info("f/g", size=1), b"y")], "not a directory"),
    ],
)
def test_a_hostile_member_is_refused_before_anything_of_it_is_written(tmp_path, members, problem):
    dest = tmp_path / "dest"
    dest.mkdir()
    path, artifact = artifact_of(tmp_path, hostile(members))
    with pytest.raises(UnsafeTarError):
        restore(path, artifact, dest)
    assert not (tmp_path / "escape").exists()
    assert sorted(os.listdir(dest)) in ([], ["l"], ["f"])  # at most an earlier member, inside the new volume


def test_a_file_that_does_not_match_the_manifest_fails_the_pass(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_tree(src)
    dest.mkdir()
    data = b"".join(TreeTar(str(src)).chunks())
    path, artifact = artifact_of(tmp_path, data, sha256="0" * 64)
    with pytest.raises(UnsafeTarError, match="does not match the manifest"):
        restore(path, artifact, dest)
    for index, (cut, extra, message) in enumerate(
        [
            (len(data) // 2, {}, "end-of-archive marker|ends before|end of data"),
            (len(data), {"raw_size": 1000}, "raw_size"),
        ]
    ):
        fresh = tmp_path / f"fresh{index}"
        fresh.mkdir()
        path, artifact = artifact_of(tmp_path, data[:cut], **extra)
        with pytest.raises(UnsafeTarError, match=message):
            restore(path, artifact, fresh)


def test_devices_only_when_allowed(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    device = info("null", tarfile.CHRTYPE)
    device.devmajor, device.devminor = 1, 3
    path, artifact = artifact_of(tmp_path, hostile([(device, None)]))
    with pytest.raises(UnsafeTarError):
        restore(path, artifact, dest)
    assert os.listdir(dest) == []
