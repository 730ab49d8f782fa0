# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Volume metadata through docker_volume_backup and docker_volume_restore on the local engine (issue 17).

A volume whose root is ``0750 999:999`` with an old mtime and an xattr, holding a file with a
``user.*`` xattr, a POSIX access ACL, a directory with a default ACL and the setgid bit, a file with
``security.capability``, a hard-link pair, a 64 MiB sparse file, old mtimes and a symlink, is backed
up, restored into a new volume and, with force, into a volume holding other data, and compared
entry by entry: the content digest of ``_volmeta`` plus explicit checks of the root, the xattrs
and the allocated blocks of the sparse file.

The tests read and write the volumes' directories on this host, so they need the engine to be
local (as every integration test here uses it). The attributes are written first with the
filesystem's own calls; if the filesystem of the engine's data root cannot hold one of them, the
test fails naming it (the restore's report of such a loss is checked separately, on a volume
the module cannot look into). Resources are named ``ferry-it-vm-<random>-*`` and removed in
``finally``.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile

import pytest
from ferry_run import run_module

from ansible_collections.ferry.docker.plugins.module_utils import _bundle
from ansible_collections.ferry.docker.plugins.module_utils._restore import artifact_fingerprint
from ansible_collections.ferry.docker.plugins.module_utils._stream import IterReader, write_stream
from ansible_collections.ferry.docker.plugins.module_utils._volmeta import TreeTar, tree_digest

OLD = 1_000_000_000  # 2001-09-09
SPARSE_SIZE = 64 * 1024 * 1024
SPARSE_DATA_AT = 1024 * 1024
ACL_USER, ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x02, 0x01, 0x04, 0x10, 0x20
UNDEFINED_ID = 0xFFFFFFFF
CAP_NET_RAW = 13
VFS_CAP_REVISION_2 = 0x02000000


def posix_acl(*entries):
    """The xattr value of a POSIX ACL (version 2): (tag, perm, id) entries, as setfacl writes it."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


ACCESS_ACL = posix_acl(
    (ACL_USER_OBJ, 6, UNDEFINED_ID),
    (ACL_USER, 4, 1234),
    (ACL_GROUP_OBJ, 4, UNDEFINED_ID),
    (ACL_MASK, 4, UNDEFINED_ID),
    (ACL_OTHER, 0, UNDEFINED_ID),
)
DEFAULT_ACL = posix_acl(
    (ACL_USER_OBJ, 7, UNDEFINED_ID),
    (ACL_USER, 5, 1234),
    (ACL_GROUP_OBJ, 5, UNDEFINED_ID),
    (ACL_MASK, 5, UNDEFINED_ID),
    (ACL_OTHER, 0, UNDEFINED_ID),
)
# cap_net_raw=ep, revision 2 (what setcap writes)
CAPABILITY = struct.pack("<IIIII", VFS_CAP_REVISION_2 | 1, 1 << CAP_NET_RAW, 0, 0, 0)
EXPECTED_XATTRS = {
    ".": {"user.origin": b"volume root"},
    "data/notes.txt": {"user.comment": b"keep me", "system.posix_acl_access": ACCESS_ACL},
    "shared": {"system.posix_acl_default": DEFAULT_ACL},
    "bin/ping": {"security.capability": CAPABILITY},
}


RESOURCE_PREFIX = "ferry-it-vm"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


def set_xattr(path, name, value):
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
    except OSError as exc:
        pytest.fail(
            f"the filesystem of the engine's data root cannot hold the extended attribute {name} on {path} "
            f"({exc.strerror}); the volume metadata round trip needs a filesystem with user xattrs and ACLs",
            pytrace=False,
        )


def populate(root):
    """Fill the directory ``root`` with every kind of metadata the issue lists."""
    os.makedirs(f"{root}/data")
    os.makedirs(f"{root}/bin")
    with open(f"{root}/data/notes.txt", "w") as f:
        f.write("notes\n")
    with open(f"{root}/data/a", "w") as f:
        f.write("linked\n")
    os.link(f"{root}/data/a", f"{root}/data/b")
    with open(f"{root}/bin/ping", "wb") as f:
        f.write(b"\x7fELF not really")
    os.chmod(f"{root}/bin/ping", 0o755)
    with open(f"{root}/sparse.img", "wb") as f:
        f.truncate(SPARSE_SIZE)
        f.seek(SPARSE_DATA_AT)
        f.write(b"x" * 4096)
    os.mkdir(f"{root}/shared")
    os.chown(f"{root}/shared", 0, 50)
    os.chmod(f"{root}/shared", 0o2775)
    os.symlink("data/notes.txt", f"{root}/link")
    os.chown(f"{root}/data/notes.txt", 999, 999)
    for name, attributes in EXPECTED_XATTRS.items():
        for key, value in attributes.items():
            set_xattr(os.path.join(root, name), key, value)
    for name in ("data/notes.txt", "data/a", "bin/ping", "sparse.img", "shared", "data", "bin"):
        os.utime(f"{root}/{name}", (OLD, OLD))
    os.utime(f"{root}/link", (OLD, OLD), follow_symlinks=False)
    os.chown(root, 999, 999)
    os.chmod(root, 0o750)
    os.utime(root, (OLD + 1, OLD + 1))
    allocated = os.stat(f"{root}/sparse.img").st_blocks * 512
    assert allocated < SPARSE_SIZE // 8, f"the source file system did not keep sparse.img sparse ({allocated} bytes)"


def listing(root):
    """{name: (type, mode, uid, gid, size, link, xattrs, mtime)} of a directory, via the module's own walk."""
    entries = {}
    with tarfile.open(fileobj=IterReader(TreeTar(root).chunks()), mode="r|") as tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith("./") else member.name
            xattrs = {k: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            mtime = None if member.isdir() and name != "." else member.mtime  # filling a directory moves its mtime
            fields = (member.type, member.mode, member.uid, member.gid, member.size, member.linkname, xattrs, mtime)
            entries[name or "."] = fields
    return entries


def assert_metadata(root):
    """The explicit checks: root, xattrs, sparse allocation, hard link, setgid, symlink, mtimes."""
    st = os.stat(root)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (0o750, 999, 999, OLD + 1)
    for name, attributes in EXPECTED_XATTRS.items():
        path = os.path.join(root, name)
        for key, value in attributes.items():
            assert os.getxattr(path, key) == value, f"{key} of {name}"
    sparse = os.stat(f"{root}/sparse.img")
    assert sparse.st_size == SPARSE_SIZE
    assert sparse.st_blocks * 512 < SPARSE_SIZE // 8, f"sparse.img has {sparse.st_blocks * 512} bytes allocated"
    with open(f"{root}/sparse.img", "rb") as f:
        f.seek(SPARSE_DATA_AT - 1)
        assert f.read(4098) == b"\0" + b"x" * 4096 + b"\0"
    assert int(sparse.st_mtime) == OLD
    assert os.stat(f"{root}/data/a").st_ino == os.stat(f"{root}/data/b").st_ino
    shared = os.stat(f"{root}/shared")
    assert (stat.S_IMODE(shared.st_mode), shared.st_gid) == (0o2775, 50)
    assert os.readlink(f"{root}/link") == "data/notes.txt"
    assert int(os.lstat(f"{root}/link").st_mtime) == OLD
    assert int(os.stat(f"{root}/data/notes.txt").st_mtime) == OLD


def ok(result):
    assert not result.get("failed"), result.get("msg", result)
    return result


def test_volume_metadata_round_trip(client, res, tmp_path):
    source = res.name("src")
    client.create_volume(source)
    populate(res.volume_path(source))
    bundle = str(tmp_path / "bundle")

    backup = ok(run_module("docker_volume_backup", volumes=[source], dest=bundle))
    assert backup["results"][0]["read_from"] == "directory"
    assert backup["metadata_not_kept"] == []
    assert backup["artifacts"][0]["metadata"] == 2
    assert backup["bytes_read"] < 2 * 1024 * 1024, "the holes of sparse.img were stored"
    again = ok(run_module("docker_volume_backup", volumes=[source], dest=bundle))
    assert again["changed"] is False

    manifest = _bundle.load_manifest(bundle)
    artifact = _bundle.find_artifact(manifest, "volume", source)
    assert artifact_fingerprint(bundle, artifact) == tree_digest(res.volume_path(source))

    target = res.name("copy")
    restored = ok(run_module("docker_volume_restore", bundle=bundle, volume_map={source: target}))
    assert restored["changed"] is True
    assert restored["volumes"][0]["metadata_not_kept"] == []
    assert tree_digest(res.volume_path(target)) == tree_digest(res.volume_path(source))
    assert listing(res.volume_path(target)) == listing(res.volume_path(source))
    assert_metadata(res.volume_path(target))
    second = ok(run_module("docker_volume_restore", bundle=bundle, volume_map={source: target}))
    assert second["changed"] is False and second["volumes"][0]["state_before"] == "same"

    # force into a volume that holds other data and Docker's default root
    busy = res.name("busy")
    client.create_volume(busy)
    with open(os.path.join(res.volume_path(busy), "other.txt"), "w") as f:
        f.write("stays\n")
    refused = run_module("docker_volume_restore", bundle=bundle, volume_map={source: busy})
    assert refused.get("failed") and "force=true" in refused["msg"]
    assert stat.S_IMODE(os.stat(res.volume_path(busy)).st_mode) == 0o755
    forced = ok(run_module("docker_volume_restore", bundle=bundle, volume_map={source: busy}, force=True))
    assert forced["volumes"][0]["action"] == "overwrite"
    assert forced["volumes"][0]["metadata_not_kept"] == []
    overwritten = listing(res.volume_path(busy))
    assert set(overwritten) - set(listing(res.volume_path(source))) == {"other.txt"}
    del overwritten["other.txt"]
    expected = listing(res.volume_path(source))
    expected["."] = (*expected["."][:-1], None)  # other.txt was there before: only the root's mtime may differ
    overwritten["."] = (*overwritten["."][:-1], None)
    assert overwritten == expected
    assert_metadata(res.volume_path(busy))


def test_digest_sees_a_lost_root_or_xattr(client, res):
    name = res.name("digest")
    client.create_volume(name)
    root = res.volume_path(name)
    populate(root)
    before = tree_digest(root)
    os.chmod(root, 0o755)
    assert tree_digest(root) != before
    os.chmod(root, 0o750)
    assert tree_digest(root) == before
    os.removexattr(f"{root}/data/notes.txt", "user.comment")
    assert tree_digest(root) != before


def test_a_volume_the_module_cannot_look_into_is_reported_not_silently_degraded(client, res, tmp_path):
    """A ``local`` volume with mount options is only mounted while in use: capture and restore go through the engine.

    The engine's archive API carries neither user xattrs nor holes, so both modules must say so.
    """
    source = res.name("plain")
    client.create_volume(source)
    populate(res.volume_path(source))
    backing = tmp_path / "backing"
    backing.mkdir()
    bound = res.name("bound")
    client.create_volume(bound, driver="local", driver_opts={"type": "none", "o": "bind", "device": str(backing)})

    bundle = str(tmp_path / "bundle")
    ok(run_module("docker_volume_backup", volumes=[source], dest=bundle))
    restored = ok(run_module("docker_volume_restore", bundle=bundle, volume_map={source: bound}))
    notes = {item["attribute"]: item for item in restored["volumes"][0]["metadata_not_kept"]}
    assert notes["sparse"]["paths"] == ["sparse.img"]
    assert "restored fully allocated" in notes["sparse"]["reason"]
    assert notes["xattr user.comment"]["paths"] == ["data/notes.txt"]
    assert "not verified" in notes["xattr user.comment"]["reason"]
    assert "xattr security.capability" not in notes  # the engine's own view shows it
    assert any("sparse not kept on sparse.img" in w for w in restored.get("warnings", []))
    # the root still gets its owner and mode through the engine
    st = os.stat(backing)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 999, 999)

    again = ok(run_module("docker_volume_backup", volumes=[bound], dest=str(tmp_path / "again")))
    assert again["results"][0]["read_from"] == "engine"
    attributes = {item["attribute"] for item in again["metadata_not_kept"]}
    assert attributes == {"xattr user.* and POSIX ACLs", "sparse"}
    assert any("driver local with options" in item["reason"] for item in again["metadata_not_kept"])


def test_old_bundle_without_metadata_version_still_restores_with_its_root(client, res, tmp_path):
    """A bundle written before this change (Docker's archive, no ``metadata`` key) restores, root included."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.GNU_FORMAT) as tar:
        root = tarfile.TarInfo(".")
        root.type, root.mode, root.uid, root.gid, root.mtime = tarfile.DIRTYPE, 0o700, 999, 999, OLD
        tar.addfile(root)
        info = tarfile.TarInfo("./PG_VERSION")
        info.size, info.uid, info.gid, info.mode = 3, 999, 999, 0o600
        tar.addfile(info, io.BytesIO(b"15\n"))
    name = res.name("old")
    bundle = tmp_path / "old"
    bundle.mkdir()
    written = write_stream([data.getvalue()], str(bundle), f"volume-{name}.tar.zst")
    entry = _bundle.artifact_entry("volume", name, written, type="volume", volume=name, anonymous=False, root=".")
    entry.update(destination="/var/lib/postgresql/data", rw=True)

    def edit(manifest):
        _bundle.add_artifact(manifest, entry)
        manifest["volumes"][name] = {
            "Name": name,
            "Driver": "local",
            "DriverOpts": {},
            "Labels": {},
            "Anonymous": False,
        }

    _bundle.update_manifest(
        str(bundle),
        edit,
        source=dict(hostname="h", docker_version="20.10", api_version="1.41", architecture="x86_64", os="linux"),
    )
    restored = ok(run_module("docker_volume_restore", bundle=str(bundle)))
    assert restored["volumes"][0]["metadata"] == 1
    st = os.stat(res.volume_path(name))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (0o700, 999, 999, OLD)
