# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Volume metadata: the directory walk, sparse maps, the content digest, root and restore decisions."""

from __future__ import annotations

import io
import os
import socket
import stat
import subprocess
import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _volmeta
from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import scan_stream, xattr_kept
from ansible_collections.ferry.docker.plugins.module_utils._volmeta import (
    Notes,
    TreeTar,
    data_segments,
    holes,
    local_reason,
    punch_holes,
    root_member,
    sparse_map_block,
    tar_fingerprint,
    tree_digest,
    verify_xattrs,
)

MIB = 1024 * 1024
HOST = socket.gethostname()
LOCAL = "http+docker://localhost"


def user_xattrs_supported(path):
    try:
        os.setxattr(path, "user.ferry-probe", b"1")
        os.removexattr(path, "user.ferry-probe")
    except OSError as exc:
        pytest.fail(f"these tests need user xattrs on the filesystem of {path} ({exc.strerror})", pytrace=False)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "vol"
    root.mkdir()
    user_xattrs_supported(str(root))
    (root / "dir").mkdir()
    (root / "dir" / "file").write_bytes(b"content")
    os.link(root / "dir" / "file", root / "dir" / "hard")
    (root / "link").symlink_to("dir/file")
    with open(root / "sparse", "wb") as f:
        f.truncate(8 * MIB)
        f.seek(2 * MIB)
        f.write(b"d" * 8192)
    os.setxattr(root / "dir" / "file", "user.note", b"kept")
    os.setxattr(root, "user.root", b"\x00\xff binary")
    os.chmod(root / "dir", 0o2750)
    os.chmod(root, 0o750)
    os.utime(root / "dir" / "file", (1_000_000_000, 1_000_000_000))
    return str(root)


def members(raw):
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: m for m in tar.getmembers()}


# ----------------------------------------------------------------------------------------- xattr policy


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("user.comment", True),
        ("user.", False),
        ("security.capability", True),
        ("system.posix_acl_access", True),
        ("system.posix_acl_default", True),
        ("security.selinux", False),
        ("trusted.overlay.opaque", False),
        ("system.nfs4_acl", False),
        ("security.ima", False),
    ],
)
def test_xattr_namespaces_kept(name, kept):
    assert xattr_kept(name) is kept


# ----------------------------------------------------------------------------------------- the walk


def test_tree_tar_keeps_root_xattrs_links_modes_and_sparse(tree):
    walk = TreeTar(tree)
    raw = b"".join(walk.chunks())
    assert len(raw) % tarfile.RECORDSIZE == 0
    found = members(raw)
    assert next(iter(found)) == "."
    root = found["."]
    assert root.isdir() and root.mode == 0o750
    assert root.pax_headers["SCHILY.xattr.user.root"].encode("utf-8", "surrogateescape") == b"\x00\xff binary"
    assert found["./dir"].mode == 0o2750
    assert found["./dir/file"].pax_headers["SCHILY.xattr.user.note"] == "kept"
    assert found["./dir/file"].mtime == 1_000_000_000
    assert found["./dir/hard"].islnk() and found["./dir/hard"].linkname == "./dir/file"
    assert found["./link"].issym() and found["./link"].linkname == "dir/file"
    sparse = found["./sparse"]
    assert sparse.size == 8 * MIB and sparse.sparse is not None
    assert sum(n for _o, n in sparse.sparse) < MIB
    assert len(raw) < MIB  # the holes are not stored
    assert (walk.sparse_files, walk.xattr_files, walk.notes.as_list()) == (1, 2, [])


def test_tree_tar_content_reads_back_exactly(tree, tmp_path):
    raw = b"".join(TreeTar(tree).chunks())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        data = tar.extractfile("./sparse").read()
    with open(os.path.join(tree, "sparse"), "rb") as f:
        assert data == f.read()
    out = tmp_path / "gnu"
    out.mkdir()
    # GNU tar reads the same archive: names, sparse members and data
    subprocess.run(["tar", "-x", "-C", str(out), "-f", "-"], input=raw, check=True)
    assert (out / "sparse").read_bytes() == data
    assert (out / "dir" / "file").read_bytes() == b"content"


def test_tree_tar_passes_the_safety_scan(tree):
    summary = scan_stream(TreeTar(tree).chunks())
    assert summary["problems"] == [] and summary["complete"]
    assert summary["root"]["mode"] == 0o750
    assert summary["root"]["xattrs"] == {"user.root": b"\x00\xff binary"}
    assert summary["xattrs"] == [("dir/file", ["user.note"])]
    assert [name for name, _size, _map in summary["sparse"]] == ["sparse"]
    assert summary["bytes"] == 8 * MIB + len(b"content")  # apparent sizes; the hard link is not counted again


def test_tree_tar_reports_what_it_cannot_keep(tmp_path):
    root = tmp_path / "vol"
    root.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "app.sock"))
        walk = TreeTar(str(root))
        names = set(members(b"".join(walk.chunks())))
    finally:
        sock.close()
    assert names == {"."}
    assert [(n["attribute"], n["paths"]) for n in walk.notes.as_list()] == [("socket", ["./app.sock"])]


def test_tree_tar_is_deterministic_and_chunked(tree):
    small = list(TreeTar(tree, chunk_size=4096).chunks())
    assert max(len(c) for c in small) <= 4096 + 8192  # one chunk plus at most one data piece
    assert b"".join(small) == b"".join(TreeTar(tree).chunks())


def test_a_symlinked_directory_is_stored_as_a_link_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no")
    root = tmp_path / "vol"
    root.mkdir()
    (root / "escape").symlink_to(outside)
    found = members(b"".join(TreeTar(str(root)).chunks()))
    assert set(found) == {".", "./escape"}
    assert found["./escape"].issym()


def reference_archive(root):
    """The archive TreeTar writes, through tarfile: PAX format, numeric owners, ``.`` then depth first by name."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(path, arcname):
            info = tar.gettarinfo(path, arcname)
            info.uname = info.gname = ""
            info.mtime = int(info.mtime)
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if info.isdir():
                for name in sorted(os.listdir(path)):
                    add(os.path.join(path, name), f"{arcname}/{name}")

        add(root, ".")
    return out.getvalue()


@pytest.mark.parametrize("chunk_size", [1, 100, 512, 4096, MIB])
def test_tree_tar_writes_what_tarfile_writes(tmp_path, chunk_size):
    # files of every size around the block and the chunk, long and non-ASCII names, big owner numbers:
    # each entry without xattrs or holes is the ustar block tarfile writes, or its PAX headers
    root = tmp_path / "vol"
    (root / "d" / "e").mkdir(parents=True)
    sizes = [0, 1, 511, 512, 513, 4095, 4096, 4097, 3 * 4096 + 5, 70_000]
    for index, size in enumerate(sizes):
        (root / "d" / f"f{index}").write_bytes(os.urandom(size))
    (root / ("n" * 100)).write_bytes(b"a name of 100")
    (root / ("o" * 101)).write_bytes(b"a name of 101")
    (root / "d" / "e" / "ünï").write_bytes(b"not ascii")
    (root / "far").write_bytes(b"mtime beyond 11 octal digits")
    os.utime(root / "far", (8**11 + 1, 8**11 + 1))
    if os.geteuid() == 0:
        (root / "ids").write_bytes(b"owner beyond 7 octal digits")
        os.chown(root / "ids", 8**7, 8**7 - 1)
    os.chmod(root / "d", 0o2751)
    raw = b"".join(TreeTar(str(root), chunk_size=chunk_size).chunks())
    assert raw == reference_archive(str(root))


def test_tree_tar_chunks_are_bounded_and_large_files_go_out_whole(tmp_path):
    root = tmp_path / "vol"
    root.mkdir()
    for index in range(20):
        (root / f"small{index:02d}").write_bytes(os.urandom(3000))
    (root / "big").write_bytes(os.urandom(10 * 4096 + 7))
    chunks = list(TreeTar(str(root), chunk_size=4096).chunks())
    assert all(isinstance(c, bytes) for c in chunks)
    assert max(len(c) for c in chunks[:-1]) < 2 * 4096 + 2 * tarfile.BLOCKSIZE  # a chunk plus one small file
    assert len(chunks[-1]) <= 4096 + tarfile.RECORDSIZE  # the rest, the end marker and the record's padding
    assert [len(c) for c in chunks].count(4096) >= 10  # the big file's whole reads, as read
    assert b"".join(chunks) == b"".join(TreeTar(str(root)).chunks())


def test_a_sparse_file_of_many_segments_comes_out_in_bounded_chunks(tmp_path):
    root = tmp_path / "vol"
    root.mkdir()
    with open(root / "sparse", "wb") as f:
        f.truncate(400 * 65536)
        for index in range(200):  # 200 data segments of 4 KiB, 60 KiB holes between them
            f.seek(2 * index * 65536)
            f.write(os.urandom(4096))
    walk = TreeTar(str(root), chunk_size=16384)
    chunks = list(walk.chunks())
    assert walk.sparse_files == 1
    assert max(len(c) for c in chunks[:-1]) < 16384 + 4096 + 2 * tarfile.BLOCKSIZE
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        data = tar.extractfile("./sparse").read()
    assert data == (root / "sparse").read_bytes()


@pytest.mark.parametrize(("size", "left"), [(3000, 1000), (3000, 0), (20_000, 5000), (20_000, 4096)])
def test_a_file_that_shrinks_while_read_keeps_its_size_with_zeros(monkeypatch, tmp_path, size, left):
    root = tmp_path / "vol"
    root.mkdir()
    data = os.urandom(size)
    (root / "a").write_bytes(data)
    (root / "b").write_bytes(b"after")
    target = os.stat(root / "a").st_ino
    real_pread = os.pread

    def shrinking(fd, n, offset):
        if os.fstat(fd).st_ino == target and os.fstat(fd).st_size == size:
            os.truncate(root / "a", left)  # the service truncates the file while it is read
        return real_pread(fd, n, offset)

    monkeypatch.setattr(_volmeta.os, "pread", shrinking)
    walk = TreeTar(str(root), chunk_size=4096)
    raw = b"".join(walk.chunks())
    monkeypatch.undo()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getmember("./a").size == size
        assert tar.extractfile("./a").read() == data[:left] + bytes(size - left)
        assert tar.extractfile("./b").read() == b"after"
    (note,) = walk.notes.as_list()
    assert (note["attribute"], note["paths"]) == ("file", ["./a"])
    assert "shrank while read" in note["reason"]


# ----------------------------------------------------------------------------------------- sparse maps


def test_data_segments_of_a_sparse_file(tmp_path):
    path = tmp_path / "s"
    with open(path, "wb") as f:
        f.truncate(4 * MIB)
        f.seek(MIB)
        f.write(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        segments = data_segments(fd, 4 * MIB)
    finally:
        os.close(fd)
    assert len(segments) == 1 and segments[0][0] <= MIB < sum(segments[0])


@pytest.mark.parametrize(
    ("segments", "size", "text"),
    [
        ([(0, 10)], 10, "1\n0\n10\n"),
        ([(4096, 512)], 8192, "2\n4096\n512\n8192\n0\n"),
        ([], 100, "1\n100\n0\n"),
    ],
)
def test_sparse_map_block(segments, size, text):
    block, _entries = sparse_map_block(segments, size)
    assert len(block) % 512 == 0
    assert block.rstrip(b"\0").decode() == text


@pytest.mark.parametrize(
    ("sparse_map", "size", "block", "expected"),
    [
        ([(4096, 4096)], 16384, 4096, [(0, 4096), (8192, 8192)]),
        ([(0, 100)], 10000, 4096, [(4096, 4096)]),  # only whole blocks
        ([(0, 16384)], 16384, 4096, []),
        ([], 8192, 4096, [(0, 8192)]),
        ([(8192, 0), (0, 0), (4096, 10)], 8192, 4096, [(0, 4096)]),  # GNU padding entries are ignored
    ],
)
def test_holes(sparse_map, size, block, expected):
    assert holes(sparse_map, size, block) == expected


@given(
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 1 << 16)), max_size=8),
    st.sampled_from([512, 4096]),
)
def test_holes_never_touch_data(raw, block):
    sparse_map, pos = [], 0
    for gap, length in raw:
        sparse_map.append((pos + gap, length))
        pos += gap + length
    size = pos + 100
    for start, length in holes(sparse_map, size, block):
        assert start % block == 0 and length % block == 0 and start + length <= size
        for offset, data in sparse_map:
            assert start + length <= offset or offset + data <= start


def test_punch_holes_deallocates_and_keeps_mtime(tmp_path):
    root = tmp_path / "vol"
    (root / "d").mkdir(parents=True)
    path = root / "d" / "s"
    path.write_bytes(b"\0" * (4 * MIB))
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert os.stat(path).st_blocks * 512 >= 4 * MIB
    notes = Notes()
    assert punch_holes(str(root), [("d/s", 4 * MIB, [(MIB, 4096)])], notes) == 1
    after = os.stat(path)
    assert notes.as_list() == []
    assert after.st_blocks * 512 < MIB and after.st_size == 4 * MIB and after.st_mtime == 1_000_000_000


def test_punch_holes_refuses_symlinks_and_changed_files(tmp_path):
    root = tmp_path / "vol"
    root.mkdir()
    (tmp_path / "target").write_bytes(b"\0" * 8192)
    (root / "link").symlink_to(tmp_path / "target")
    (root / "small").write_bytes(b"x")
    notes = Notes()
    assert punch_holes(str(root), [("link", 8192, []), ("small", 8192, [])], notes) == 0
    assert [(n["attribute"], n["paths"]) for n in notes.as_list()] == [("sparse", ["link", "small"])]
    assert os.stat(tmp_path / "target").st_blocks > 0


# ----------------------------------------------------------------------------------------- digest


def test_tree_digest_equals_the_digest_of_its_archive(tree):
    raw = b"".join(TreeTar(tree).chunks())
    assert tree_digest(tree) == tar_fingerprint(io.BytesIO(raw))
    assert tree_digest(tree)[1] == 5


@pytest.mark.parametrize(
    "change",
    [
        lambda root: os.chmod(root, 0o755),
        lambda root: os.setxattr(root, "user.root", b"other"),
        lambda root: os.removexattr(os.path.join(root, "dir", "file"), "user.note"),
        lambda root: os.setxattr(os.path.join(root, "dir"), "user.new", b"1"),
        lambda root: os.chmod(os.path.join(root, "dir"), 0o750),  # the setgid bit
        lambda root: open(os.path.join(root, "sparse"), "r+b").write(b"z"),
    ],
)
def test_tree_digest_sees_root_and_xattr_losses(tree, change):
    before = tree_digest(tree)
    change(tree)
    assert tree_digest(tree) != before


def test_tree_digest_ignores_mtimes_and_sparseness(tree):
    before = tree_digest(tree)
    os.utime(tree, (1, 1))
    path = os.path.join(tree, "sparse")
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)  # the same bytes, fully allocated
    assert tree_digest(tree) == before


def test_digest_xattr_views(tree):
    raw = b"".join(TreeTar(tree).chunks())
    full = tar_fingerprint(io.BytesIO(raw))
    assert tar_fingerprint(io.BytesIO(raw), xattrs="capability") != full
    assert tar_fingerprint(io.BytesIO(raw), xattrs="capability") == tar_fingerprint(io.BytesIO(raw), xattrs="none")


# ----------------------------------------------------------------------------------------- restore decisions


def test_root_member_carries_the_root_metadata():
    root = dict(mode=0o700, uid=999, gid=998, mtime=1_000_000_000, xattrs={"user.a": b"\x01\x02"})
    raw = root_member(root)
    assert len(raw) % tarfile.RECORDSIZE == 0
    (only,) = members(raw).values()
    assert (only.name, only.type, only.mode, only.uid, only.gid, only.mtime) == (
        "vol",
        tarfile.DIRTYPE,
        0o700,
        999,
        998,
        1_000_000_000,
    )
    assert only.pax_headers["SCHILY.xattr.user.a"].encode("utf-8", "surrogateescape") == b"\x01\x02"


def test_verify_xattrs_names_every_missing_attribute(tree):
    notes = Notes()
    expected = [("dir/file", ["user.note", "user.gone"]), ("link", ["user.x"]), ("nowhere/x", ["user.y"])]
    verify_xattrs(tree, expected, {"user.root": b"", "user.lost": b""}, notes)
    got = {n["attribute"]: n["paths"] for n in notes.as_list()}
    assert got == {
        "xattr user.gone": ["dir/file"],
        "xattr user.x": ["link"],
        "xattr user.lost": ["."],
        "xattr user.y": ["nowhere/x"],
    }


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((LOCAL, HOST, [], "volume", "local", {}, "DIR"), None),
        ((LOCAL, HOST, None, "volume", "local", None, "DIR"), None),
        ((LOCAL, HOST, [], "bind", None, None, "DIR"), None),
        (("http://10.0.0.2:2375", HOST, [], "volume", "local", {}, "DIR"), "not reached over a local unix socket"),
        (("http+docker://ssh", HOST, [], "volume", "local", {}, "DIR"), "not reached over a local unix socket"),
        ((LOCAL, "elsewhere", [], "volume", "local", {}, "DIR"), "runs on elsewhere"),
        ((LOCAL, HOST, ["name=seccomp", "name=rootless"], "volume", "local", {}, "DIR"), "remaps user IDs"),
        ((LOCAL, HOST, ["name=userns"], "volume", "local", {}, "DIR"), "remaps user IDs"),
        ((LOCAL, HOST, [], "volume", "local", {"type": "nfs"}, "DIR"), "mounted only while in use"),
        ((LOCAL, HOST, [], "volume", "rexray", {}, "DIR"), "mounted only while in use"),
        ((LOCAL, HOST, [], "volume", "local", {}, "MISSING"), "is not a directory on this host"),
        ((LOCAL, HOST, [], "bind", None, None, "FILE"), "is not a directory on this host"),
    ],
)
def test_local_reason(tmp_path, args, reason):
    (tmp_path / "file").write_text("x")
    paths = {"DIR": str(tmp_path), "MISSING": str(tmp_path / "missing"), "FILE": str(tmp_path / "file")}
    found = local_reason(*args[:6], paths[args[6]])
    if reason is None:
        assert found is None
    else:
        assert reason in found


def test_notes_name_attribute_and_files():
    notes = Notes()
    for i in range(7):
        notes.add("xattr user.a", f"f{i}", "not supported")
    notes.add("sparse", "big.img", "fully allocated")
    assert notes.messages("volume v") == [
        "volume v: sparse not kept on big.img: fully allocated",
        "volume v: xattr user.a not kept on f0, f1, f2, f3, f4 and 2 more: not supported",
    ]
    other = Notes()
    other.add("sparse", "b2", "fully allocated")
    notes.extend(other)
    assert notes.items["sparse"]["count"] == 2 and bool(notes)


def test_metadata_version_constants():
    assert _volmeta.METADATA_VERSION > _volmeta.METADATA_API == 1


def test_symlink_modes_are_ignored(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    (root / "l").symlink_to("x")
    found = members(b"".join(TreeTar(str(root)).chunks()))
    assert stat.S_IMODE(found["./l"].mode) == 0o777


# ------------------------------------------------------------------ the ustar header without tarfile's detour

_TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE]


@given(
    name=st.text(min_size=1, max_size=120),
    link=st.text(max_size=110),
    kind=st.sampled_from(_TYPES),
    mode=st.integers(0, 0o177777),
    uid=st.integers(0, 2**22),
    gid=st.integers(0, 2**22),
    size=st.one_of(st.integers(0, 2**20), st.integers(8**11 - 2, 8**11 + 2)),
    mtime=st.one_of(st.integers(0, 2**34), st.floats(0, 2**31, allow_nan=False)),
    dev=st.integers(0, 2**22),
    xattrs=st.booleans(),
)
def test_the_fast_ustar_header_is_tarfile_s_own_block_or_none(
    name, link, kind, mode, uid, gid, size, mtime, dev, xattrs
):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.size = size if kind == tarfile.REGTYPE else 0
    info.linkname = link if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    info.devmajor, info.devminor = dev, dev // 3
    info.uname = info.gname = ""
    info.pax_headers = {"SCHILY.xattr.user.k": "v"} if xattrs else {}
    fast = _volmeta._ustar_header(info)
    try:
        full = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    except ValueError:  # a device number beyond its field: tarfile cannot write it either
        assert fast is None
        return
    if fast is not None:
        assert fast == full  # byte for byte: the archives do not change
    else:
        assert len(full) > tarfile.BLOCKSIZE  # only an entry that needs an extended header goes the long way
    assert _volmeta._header(info) == full


@given(
    name=st.text(min_size=1, max_size=110),
    mode=st.integers(0o100000, 0o107777),
    uid=st.integers(0, 2**22),
    gid=st.integers(0, 2**22),
    size=st.one_of(st.integers(0, 2**20), st.integers(8**11 - 2, 8**11 + 2)),
    mtime=st.one_of(st.integers(-10, 2**34), st.floats(-10, 2**31, allow_nan=False)),
)
def test_the_regular_file_header_is_tarfile_s_own_block_or_none(name, mode, uid, gid, size, mtime):
    st_like = os.stat_result((mode, 1, 1, 1, uid, gid, size, 0, mtime, 0))
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.size, info.mtime = mode & 0o7777, uid, gid, size, int(st_like.st_mtime)
    info.uname = info.gname = ""
    fast = _volmeta._file_header(name, st_like, size)
    full = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert fast == (full if len(full) == tarfile.BLOCKSIZE else None)
