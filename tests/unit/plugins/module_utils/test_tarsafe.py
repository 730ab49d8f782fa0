# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    ArtifactError,
    read_decompressed,
    write_stream,
)
from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import (
    TarChecker,
    UnsafeTarError,
    check_member,
    normalised_chunks,
    scan_stream,
)
from ansible_collections.ferry.docker.tests.support.hashing import HashingReader


def member(name, kind="file", target="", data=b"", pax=None):
    info = tarfile.TarInfo(name)
    info.type = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
        "blk": tarfile.BLKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }[kind]
    info.linkname = target
    info.size = len(data) if kind == "file" else 0
    info.mode = 0o755 if kind == "dir" else 0o644
    if pax:
        info.pax_headers = pax
    return info, data


def build_tar(*members, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def scan(raw, **kwargs):
    return scan_stream(io.BytesIO(raw), **kwargs)


HOSTILE = {
    "absolute name": ([member("/etc/cron.d/evil", data=b"x")], "has an absolute name"),
    "dot-dot": ([member("../../etc/x", data=b"x")], "has a '..' component"),
    "dot-dot inside": ([member("a/../../x", data=b"x")], "has a '..' component"),
    "dot component": ([member("a/./b", data=b"x")], "has an empty or '.' path component"),
    "trailing dot through a symlink": (
        [member("a", "symlink", "/etc"), member("a/.", "symlink", "x")],
        "has an empty or '.' path component",
    ),
    "empty component": ([member("a//b", data=b"x")], "has an empty or '.' path component"),
    "hardlink with dot component": (
        [member("f", data=b"x"), member("h", "hardlink", "./f/.")],
        "not a member name inside the archive",
    ),
    "write through symlink": (
        [member("link", "symlink", "/etc"), member("link/passwd", data=b"root::0:0::/:/bin/sh\n")],
        "would be written through the symlink 'link'",
    ),
    "write through nested symlink": (
        [member("a", "dir"), member("a/link", "symlink", "../b"), member("a/link/c/d", data=b"x")],
        "would be written through the symlink 'a/link'",
    ),
    "file over symlink": (
        [member("link", "symlink", "/etc/passwd"), member("link", data=b"x")],
        "would be written through the symlink of the same name",
    ),
    "dir over symlink": (
        [member("link", "symlink", "/etc"), member("link", "dir")],
        "would be written through the symlink of the same name",
    ),
    "symlink over dir": ([member("d", "dir"), member("d", "symlink", "/etc")], "would replace the directory"),
    "member below a regular file": (
        [member("a", data=b"x"), member("a/a", data=b"y")],
        "would be written below 'a', which is not a directory",
    ),
    "relative symlink escaping": ([member("up", "symlink", "../../etc")], "outside the extraction root"),
    "absolute symlink climbing": ([member("up", "symlink", "/../../../etc")], "outside the extraction root"),
    "empty symlink target": ([member("s", "symlink", "")], "has an empty target"),
    "hardlink to /etc/shadow": ([member("h", "hardlink", "/etc/shadow")], "not a member name inside the archive"),
    "hardlink escaping": ([member("h", "hardlink", "../../etc/shadow")], "not a member name inside the archive"),
    "hardlink to unknown member": ([member("h", "hardlink", "etc/shadow")], "not an earlier regular file"),
    "hardlink to later member": (
        [member("h", "hardlink", "f"), member("f", data=b"x")],
        "not an earlier regular file",
    ),
    "hardlink to symlink": (
        [member("s", "symlink", "/etc/shadow"), member("h", "hardlink", "s")],
        "not an earlier regular file",
    ),
    "symlink replacing an implied directory": (
        [member("d/f", data=b"x"), member("d", "symlink", "/etc"), member("h", "hardlink", "d/f")],
        "would replace the directory of the same name",
    ),
    "hardlink to directory": ([member("d", "dir"), member("h", "hardlink", "d")], "not an earlier regular file"),
    "hardlink to file replaced by symlink": (
        [member("f", data=b"x"), member("f", "symlink", "/etc/shadow"), member("h", "hardlink", "f")],
        "not an earlier regular file",
    ),
    "character device": ([member("dev/mem", "chr")], "is a device or FIFO node"),
    "block device": ([member("dev/sda", "blk")], "is a device or FIFO node"),
    "fifo": ([member("run/pipe", "fifo")], "is a device or FIFO node"),
    "NUL in name": ([member("x", pax={"path": "safe\x00/../../etc/passwd"})], "has a NUL byte"),
    "NUL in link target": ([member("s", "symlink", pax={"linkpath": "a\x00b"})], "has a NUL byte"),
    "root replaced by a symlink": ([member(".", "symlink", "/")], "would replace the extraction root"),
    "root replaced by a file": ([member("./", data=b"x")], "would replace the extraction root"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused(case):
    members, expected = HOSTILE[case]
    result = scan(build_tar(*members))
    assert result["problem_count"] >= 1
    assert any(expected in problem for problem in result["problems"]), result["problems"]
    assert result["complete"] is True  # well-formed tar, just hostile


@pytest.mark.parametrize("kind", ["chr", "blk", "fifo"])
def test_device_nodes_allowed_on_request(kind):
    assert scan(build_tar(member("dev/node", kind)), allow_devices=True)["problems"] == []


def test_checker_as_extraction_filter(tmp_path):
    checker = TarChecker()
    with pytest.raises(UnsafeTarError, match="absolute name"):
        checker(tarfile.TarInfo("/etc/passwd"), str(tmp_path))
    ok = tarfile.TarInfo("etc/passwd")
    assert checker(ok, str(tmp_path)) is ok


def test_extraction_filter_stops_hostile_extraction(tmp_path):
    raw = build_tar(member("link", "symlink", str(tmp_path / "outside")), member("link/x", data=b"evil"))
    (tmp_path / "outside").mkdir()
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive, pytest.raises(UnsafeTarError):
        archive.extractall(tmp_path / "root", filter=TarChecker())
    assert os.listdir(tmp_path / "outside") == []


def test_check_member_is_pure():
    info = tarfile.TarInfo("a/b")
    assert check_member(info) is None
    assert check_member(info) is None
    assert "device" in check_member(member("n", "fifo")[0])
    assert check_member(member("n", "fifo")[0], allow_devices=True) is None


BENIGN = {
    "files and dirs": [member("etc", "dir"), member("etc/hosts", data=b"127.0.0.1 localhost\n")],
    "dot-slash names and root entry": [member("./", "dir"), member("./etc", "dir"), member("./etc/a", data=b"a")],
    "relative symlinks": [member("a", "dir"), member("a/f", data=b"x"), member("b", "symlink", "a/f")],
    "absolute symlink targets are data": [
        member("etc", "dir"),
        member("etc/mtab", "symlink", "/proc/self/mounts"),
        member("etc/alternatives", "dir"),
        member("etc/alternatives/editor", "symlink", "/usr/bin/vim.basic"),
    ],
    "merged usr": [
        member("usr/lib", "dir"),
        member("lib", "symlink", "usr/lib"),
        member("usr/lib/libc.so", data=b"\x7fELF"),
        member("usr/lib/x86_64-linux-gnu", "dir"),
        member("usr/lib/x86_64-linux-gnu/ld.so", "symlink", "../../../lib/ld.so"),
    ],
    "symlink replaced by symlink": [member("s", "symlink", "a"), member("s", "symlink", "b")],
    "hardlinks to earlier files": [
        member("bin", "dir"),
        member("bin/busybox", data=b"bb"),
        member("bin/sh", "hardlink", "bin/busybox"),
        member("bin/ls", "hardlink", "./bin/sh"),
    ],
    "long names": [
        member("d" * 120, "dir"),
        member("d" * 120 + "/" + "f" * 150, data=b"x"),
        member("s" * 200, "symlink", "t" * 200),
    ],
    "symlink to dot-dot that stays inside": [member("a/b", "dir"), member("a/b/up", "symlink", "../..")],
}


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("case", sorted(BENIGN))
def test_benign_archives_pass(case, fmt):
    result = scan(build_tar(*BENIGN[case], fmt=fmt))
    assert result["problems"] == [], result["problems"]
    assert result["complete"] is True
    assert result["members"] == len(BENIGN[case])


def test_summary_counts_and_xattrs():
    raw = build_tar(
        member("a", data=b"12345"),
        member("b", data=b"678", pax={"SCHILY.xattr.user.comment": "hello"}),
        member("d", "dir"),
        member("h", "hardlink", "a"),
    )
    result = scan(raw)
    assert result == {
        "members": 4,
        "bytes": 8,
        "has_sparse": False,
        "has_xattrs": True,
        "complete": True,
        "problems": [],
        "problem_count": 0,
        "root": None,
        "sparse": [],
        "xattrs": [("b", ["user.comment"])],
        "lists_complete": True,
    }
    assert scan(build_tar(member("a", data=b"1")))["has_xattrs"] is False


def test_gnu_sparse_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.img", "wb") as f:
        f.seek(64 * 1024 * 1024)
        f.write(b"end")
    (src / "plain").write_bytes(b"plain")
    for flavour in (["--format=gnu"], ["--format=posix"]):
        raw = subprocess.run(
            ["tar", "-c", "--sparse", *flavour, "-C", str(src), "."], check=True, stdout=subprocess.PIPE
        ).stdout
        assert len(raw) < 1024 * 1024  # the holes are not stored
        result = scan(raw)
        assert result["problems"] == []
        assert result["has_sparse"] is True
        assert result["members"] == 3
        assert result["bytes"] == 64 * 1024 * 1024 + 3 + 5  # apparent size
        assert result["sparse"] == [("sparse.img", 64 * 1024 * 1024 + 3, [(64 * 1024 * 1024, 3)])]


def test_many_problems_are_capped():
    raw = build_tar(*[member(f"/abs{i}", data=b"") for i in range(150)])
    result = scan(raw, max_problems=10)
    assert len(result["problems"]) == 10
    assert result["problem_count"] == 150
    truncated = scan(raw[: 512 * 40], max_problems=10)  # 40 header blocks; a stream problem is always reported
    assert truncated["problem_count"] == 40 + 1
    assert "truncated" in truncated["problems"][-1]


def test_truncated_archive_is_incomplete():
    raw = build_tar(member("a", data=b"x" * 2000), member("b", data=b"y" * 2000))
    end_of_b = 512 + 2048 + 512 + 2048  # two headers and padded contents, before the end marker
    for cut in (end_of_b, end_of_b - 100, 512 + 2048, 700):
        result = scan(raw[:cut])
        assert result["complete"] is False, cut
        assert any("truncated" in p or "not a readable tar" in p for p in result["problems"]), (cut, result)


def _header_via_private_parser(cls, tar):
    """fromtarfile as some patched Python builds have it: headers parsed without calling frombuf."""
    buf = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(buf) == tarfile.BLOCKSIZE and not buf.strip(b"\0"):
        raise tarfile.EOFHeaderError("end of file header")
    if len(buf) != tarfile.BLOCKSIZE:
        raise tarfile.TruncatedHeaderError("truncated header")
    obj = tarfile.TarInfo.frombuf.__func__(cls, buf, tar.encoding, tar.errors)
    obj.offset = tar.fileobj.tell() - tarfile.BLOCKSIZE
    return obj._proc_member(tar)


def test_end_marker_found_when_headers_bypass_frombuf(monkeypatch):
    # Debian 12's python3.11 parses headers in a private _frombuf; the end marker must still count.
    monkeypatch.setattr(tarfile.TarInfo, "fromtarfile", classmethod(_header_via_private_parser))
    raw = build_tar(member("a", data=b"x" * 2000), member("b", data=b"y" * 10))
    assert scan(raw)["complete"] is True
    assert scan(raw[: 512 + 2048])["complete"] is False


def test_garbage_header_is_reported():
    raw = build_tar(member("a", data=b"x" * 100))
    garbled = raw[:1024] + b"\x01" * 512 + raw[1536:]
    result = scan(garbled)
    assert result["complete"] is False
    assert result["problems"]


@pytest.mark.parametrize("raw", [b"", os.urandom(4096), b"\x1f\x8b" + bytes(100)])
def test_not_a_tar_stream(raw):
    result = scan(raw)
    assert result["complete"] is False
    assert any("not a readable tar archive" in p for p in result["problems"])


def test_empty_archive_is_complete():
    assert scan(build_tar()) == {
        "members": 0,
        "bytes": 0,
        "has_sparse": False,
        "has_xattrs": False,
        "complete": True,
        "problems": [],
        "problem_count": 0,
        "root": None,
        "sparse": [],
        "xattrs": [],
        "lists_complete": True,
    }


def test_scan_reads_the_whole_source_once_from_an_iterator():
    raw = build_tar(member("a", data=os.urandom(5000)))  # padded to a 10 KiB record
    chunks = [raw[i : i + 1000] for i in range(0, len(raw), 1000)]
    reader = HashingReader(iter(chunks))
    assert scan_stream(reader)["problems"] == []
    assert reader.bytes_read == len(raw)


def test_scan_of_a_compressed_artifact(tmp_path):
    raw = build_tar(member("a", data=os.urandom(300_000)), member("b", "symlink", "/etc/hosts"))
    result = write_stream([raw], tmp_path, "v.tar.zst")
    assert scan_stream(read_decompressed(result["path"], "zstd"))["problems"] == []
    path = tmp_path / "v.tar.zst"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        scan_stream(read_decompressed(path, "zstd"))


# Property: whatever sequence of members an archive holds, if the scan finds no problem then even
# Python's unfiltered tarfile extraction creates and changes nothing outside the root, and gives
# no name inside the root to a file outside it. Link targets point into a sibling "outside"
# directory of the same temporary tree, so a checker bug can never touch the real system.
# A few names and targets, plain ones more often, so that generated archives often pass the scan
# and get extracted, and links often point where later members go.
NAMES = ["a", "a", "b", "a/b", "a/a", "b/a", "./a/b", "a/.", "..", "a/../b", "a//b", "."]
LINK_TARGETS = [
    "a",
    "a",
    "b",
    "a/b",
    "..",
    "../outside",
    "/outside",
    "/outside",
    "/outside/secret",
    "/outside/secret",
    "/",
]
members_strategy = st.lists(
    st.tuples(
        st.sampled_from(["file", "dir", "symlink", "symlink", "hardlink"]),
        st.sampled_from(NAMES),
        st.sampled_from(LINK_TARGETS),
    ),
    max_size=6,
)


def _snapshot(top, skip):
    seen = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            seen[path] = (st_.st_ino, st_.st_mode, st_.st_size, st_.st_mtime_ns)
    return seen


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(members_strategy)
@example([("symlink", "a", "/outside"), ("file", "a/b", "")])
@example([("symlink", "a", "/outside/secret"), ("file", "a", "")])
@example([("symlink", "a", "/outside/secret"), ("hardlink", "b", "a")])
@example([("file", "a/b", ""), ("symlink", "a", "/outside"), ("hardlink", "b", "a/b")])
def test_accepted_archives_never_escape(spec):
    with tempfile.TemporaryDirectory() as top:
        base = os.path.join(top, "w", "x", "y")
        root, outside = os.path.join(base, "root"), os.path.join(base, "outside")
        os.makedirs(root)
        os.makedirs(outside)
        with open(os.path.join(outside, "secret"), "wb") as f:
            f.write(b"secret")
        members = []
        for kind, name, target in spec:
            target = outside + target[len("/outside") :] if target.startswith("/outside") else target
            members.append(member(name, kind, target if kind in ("symlink", "hardlink") else "", b"data"))
        raw = build_tar(*members)
        if scan(raw)["problems"]:
            return
        before = _snapshot(top, root)
        with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
            for info in archive.getmembers():
                try:
                    archive.extract(info, root, set_attrs=True, filter="fully_trusted")
                except (OSError, tarfile.TarError):
                    pass
        assert _snapshot(top, root) == before
        secret = os.stat(os.path.join(outside, "secret")).st_ino
        inside = _snapshot(root, None)
        assert all(entry[0] != secret for entry in inside.values())  # entry[0] is the inode


def normalised(name):
    name = name.removeprefix("./").rstrip("/")
    return name if name not in ("", ".") else "."


class FullWalkChecker:
    """TarChecker's ordering rules as first written: every ancestor of every member looked up and recorded."""

    def __init__(self):
        self.kinds = {}

    def check(self, info):
        problem = check_member(info)
        if problem:
            return problem
        name = normalised(info.name)
        parts = name.split("/") if name != "." else []
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        for parent in parents:
            if self.kinds.get(parent) in ("l", "f", "o"):
                return f"below {parent}"
        previous = self.kinds.get(name)
        if (previous == "l" and not info.issym()) or (previous == "d" and not info.isdir()):
            return "replaces"
        if info.islnk() and self.kinds.get(normalised(info.linkname)) != "f":
            return "hard link"
        for parent in parents:
            self.kinds[parent] = "d"
        self.kinds[name] = "f" if info.isreg() or info.islnk() else "d" if info.isdir() else "l"
        return None


DEEP = ["a", "a/b", "a/b/c", "a/b/c/d", "b", "b/a", "a/c", "./a/b/c", "a/b/", "c/d/e"]


# Property: TarChecker skips the ancestors of a member whose parent is a known directory. On any sequence of
# members over a few nested names, it accepts and refuses exactly what the full walk does, and names the member
# as the full walk does.
@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["file", "dir", "dir", "symlink", "hardlink"]), st.sampled_from(DEEP)),
        max_size=10,
    ),
    st.sampled_from(DEEP),
)
@example([("dir", "a/b/c"), ("symlink", "a/b"), ("file", "a/b/c/d")], "x")
@example([("file", "a/b/c"), ("dir", "a"), ("file", "a/b/c/d")], "x")
@example([("dir", "a/b"), ("file", "a"), ("file", "a/b/c")], "x")
def test_the_checker_skips_ancestors_only_where_they_are_directories(spec, target):
    ours, reference = TarChecker(), FullWalkChecker()
    for kind, name in spec:
        info = member(name, kind, target if kind in ("symlink", "hardlink") else "")[0]
        problem, name_seen = ours.judge(info)
        expected = reference.check(info)
        assert (problem is None) == (expected is None), (name, problem, expected)
        assert name_seen == (normalised(name) if problem is None else None)


ACL = bytes.fromhex("0200000001000600ffffffff04000400ffffffff20000000ffffffff")
CAP = bytes.fromhex("0100000200200000000000000000000000000000")


def xattr(name, value):
    return {"SCHILY.xattr." + name: value.decode("utf-8", "surrogateescape")}


@pytest.mark.parametrize(
    ("kind", "pax"),
    [
        ("file", xattr("user.comment", b"hello")),
        ("dir", xattr("user.x", b"")),
        ("file", xattr("security.capability", CAP)),
        ("file", xattr("system.posix_acl_access", ACL)),
        ("dir", xattr("system.posix_acl_access", ACL)),
        ("dir", xattr("system.posix_acl_default", ACL)),
        ("file", xattr("user.binary", bytes(range(256)))),
    ],
)
def test_kept_xattrs_pass(kind, pax):
    assert check_member(member("./x", kind, pax=pax)[0]) is None


@pytest.mark.parametrize(
    ("kind", "pax", "problem"),
    [
        ("file", xattr("trusted.overlay.opaque", b"y"), "only user.*, security.capability and POSIX ACLs"),
        ("file", xattr("security.selinux", b"system_u"), "only user.*"),
        ("file", xattr("system.nfs4_acl", b"x"), "only user.*"),
        ("file", xattr("user.", b"x"), "only user.*"),
        ("file", {"LIBARCHIVE.xattr.user.x": "eA=="}, "libarchive xattr record"),
        ("dir", xattr("security.capability", CAP), "is not a regular file"),
        ("file", xattr("system.posix_acl_default", ACL), "is not a directory"),
        ("symlink", xattr("system.posix_acl_access", ACL), "symlink './x' carries"),
        ("symlink", xattr("user.x", b"1"), "exist only on files and directories"),
        ("file", xattr("system.posix_acl_access", b"\x02\x00\x00\x00\x01"), "wrong length"),
        ("file", xattr("system.posix_acl_access", bytes(12)), "not a version 2 POSIX ACL"),
        ("file", xattr("user.big", b"x" * 65537), "larger than 65536 bytes"),
        ("file", xattr("user." + "n" * 300, b"x"), "invalid name"),
    ],
)
def test_other_or_malformed_xattrs_are_refused(kind, pax, problem):
    info = member("./x", kind, target="y" if kind == "symlink" else "", pax=pax)[0]
    found = check_member(info)
    assert found is not None and problem in found
    # and the same through a real archive and the scan
    assert any(problem in p for p in scan(build_tar((info, b"")))["problems"])


@pytest.mark.parametrize(
    ("sparse", "size", "ok"),
    [
        ([(0, 10), (100, 5)], 105, True),
        ([(4096, 3), (4099, 0), (0, 0), (0, 0)], 4099, True),  # GNU tar's old-format padding
        ([], 50, True),
        ([(100, 5), (0, 10)], 105, False),
        ([(0, 10), (5, 10)], 105, False),
        ([(100, 10)], 105, False),
        ([(-1, 1)], 105, False),
    ],
)
def test_sparse_maps(sparse, size, ok):
    info = tarfile.TarInfo("./s")
    info.size, info.sparse = size, sparse
    assert (check_member(info) is None) is ok


def test_scan_remembers_the_root_entry_and_what_a_restore_checks():
    root = member(".", "dir", pax=xattr("user.origin", b"r"))[0]
    root.mode, root.uid, root.gid, root.mtime = 0o700, 999, 998, 1_000_000_000
    raw = build_tar((root, b""), member("./f", data=b"x", pax=xattr("user.a", b"1")), member("./g", data=b"y"))
    result = scan(raw)
    assert result["root"] == {
        "mode": 0o700,
        "uid": 999,
        "gid": 998,
        "mtime": 1_000_000_000,
        "xattrs": {"user.origin": b"r"},
    }
    assert result["xattrs"] == [("f", ["user.a"])]


def test_scan_lists_are_bounded(monkeypatch):
    from ansible_collections.ferry.docker.plugins.module_utils import _tarsafe

    monkeypatch.setattr(_tarsafe, "LIST_LIMIT", 2)
    raw = build_tar(*[member(f"./f{i}", data=b"x", pax=xattr("user.a", b"1")) for i in range(5)])
    result = scan(raw)
    assert len(result["xattrs"]) == 2 and result["lists_complete"] is False


# ------------------------------------------------------------------------------------------------
# parser differentials and normalisation (issue 13 F)


def raw_header(name, kind=b"0", size=0, prefix=b"", magic=b"ustar\x0000", linkname=b""):
    """One tar header block written by hand, so fields tarfile would never write together can be set."""
    block = bytearray(tarfile.BLOCKSIZE)
    block[0:100] = name.ljust(100, b"\0")[:100]
    block[100:108] = b"0000644\0"
    block[108:116] = b"0000000\0"
    block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[157:257] = linkname.ljust(100, b"\0")[:100]
    block[257:265] = magic
    block[345:500] = prefix.ljust(155, b"\0")[:155]
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def data_blocks(data):
    return data + bytes(-len(data) % tarfile.BLOCKSIZE)


END = bytes(2 * tarfile.BLOCKSIZE)


def pax_record(key, value):
    body = f" {key}={value}\n".encode()
    length = len(body)
    while len(str(length).encode()) + len(body) != length:
        length = len(str(length).encode()) + len(body)
    return str(length).encode() + body


def test_pax_global_header_is_refused():
    records = pax_record("path", "link")
    raw = raw_header(b"pax_global_header", b"g", len(records)) + data_blocks(records)
    raw += raw_header(b"file", size=3) + data_blocks(b"abc") + END
    result = scan(raw)
    assert any("PAX global header" in p for p in result["problems"])
    with pytest.raises(UnsafeTarError, match="global header"):
        b"".join(normalised_chunks(io.BytesIO(raw)))


def parse(raw):
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as archive:
        return [(m.name, m.type, m.linkname, m.size) for m in archive]


@pytest.mark.parametrize(
    "raw",
    [
        # old-style prefix with GNU magic: Go ignores the field (atime), Python prepends it
        raw_header(b"passwd", size=2, prefix=b"etc", magic=b"ustar  \0") + data_blocks(b"x\n") + END,
        # GNU long name in front of a ustar header that also has a prefix
        raw_header(b"././@LongLink", b"L", 5)
        + data_blocks(b"evil\0")
        + raw_header(b"name", size=2, prefix=b"dir")
        + data_blocks(b"x\n")
        + END,
        # PAX path and GNU long name for the same member: readers disagree which one wins
        raw_header(b"././@PaxHeader", b"x", len(pax_record("path", "a")))
        + data_blocks(pax_record("path", "a"))
        + raw_header(b"././@LongLink", b"L", 2)
        + data_blocks(b"b\0")
        + raw_header(b"c", size=1)
        + data_blocks(b"x")
        + END,
    ],
)
def test_normalised_stream_is_exactly_what_was_checked(raw):
    """Whatever the original's ambiguity, the normalised tar has one reading: the checked members."""
    checked = parse(raw)
    out = b"".join(normalised_chunks(io.BytesIO(raw)))
    assert parse(out) == [(n, tarfile.REGTYPE, link, size) for n, _t, link, size in checked]
    assert b"ustar  \0" not in out and b"@LongLink" not in out  # no GNU extensions, no prefix field
    with tarfile.open(fileobj=io.BytesIO(out), mode="r|") as archive:
        for info in archive:
            assert out[info.offset + 345 : info.offset + 500].strip(b"\0") == b""


def test_prefix_differential_with_symlink_cannot_write_through_it():
    """link -> /etc, then a member Python reads as 'link/passwd' via prefix: refused by the checker."""
    raw = raw_header(b"link", b"2", linkname=b"/etc") + raw_header(b"passwd", size=2, prefix=b"link")
    raw += data_blocks(b"x\n") + END
    assert any("through the symlink" in p for p in scan(raw)["problems"])
    with pytest.raises(UnsafeTarError, match="symlink"):
        b"".join(normalised_chunks(io.BytesIO(raw)))


def test_normalised_stream_keeps_members_and_xattrs():
    raw = build_tar(
        member(".", "dir"),
        member("./d", "dir"),
        member("./d/f", data=b"hello", pax={"SCHILY.xattr.user.k": "v", "comment": "dropped"}),
        member("./d/l", "symlink", "f"),
        member("./d/h", "hardlink", "./d/f"),
        member("./" + "n" * 150, data=b"long"),
    )
    out = b"".join(normalised_chunks(io.BytesIO(raw)))
    with tarfile.open(fileobj=io.BytesIO(out)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert archive.extractfile("./d/f").read() == b"hello"
    assert set(members) == {".", "./d", "./d/f", "./d/l", "./d/h", "./" + "n" * 150}
    assert members["./d/f"].pax_headers == {"SCHILY.xattr.user.k": "v"}
    assert members["./d/l"].linkname == "f" and members["./d/h"].linkname == "./d/f"


def test_normalised_sparse_file_is_written_at_its_apparent_size(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.seek(1024 * 1024)
        f.write(b"end")
    raw = subprocess.run(
        ["tar", "-C", str(tmp_path), "--sparse", "--format=posix", "-cf", "-", "sparse"],
        check=True,
        capture_output=True,
    ).stdout
    out = b"".join(normalised_chunks(io.BytesIO(raw)))
    with tarfile.open(fileobj=io.BytesIO(out)) as archive:
        info = archive.getmember("sparse")
        assert info.sparse is None and info.size == 1024 * 1024 + 3 and "GNU.sparse.map" not in info.pax_headers
        assert archive.extractfile(info).read()[-3:] == b"end"
    with pytest.raises(UnsafeTarError, match="recorded size"):
        b"".join(normalised_chunks(io.BytesIO(raw), max_bytes=1024))


@pytest.mark.parametrize("limit,ok", [(None, True), (5, True), (4, False)])
def test_normalised_stream_is_bounded_before_the_member_is_written(limit, ok):
    raw = build_tar(member("a", data=b"12"), member("b", data=b"345"))
    chunks = normalised_chunks(io.BytesIO(raw), max_bytes=limit, chunk_size=tarfile.BLOCKSIZE)
    if ok:
        assert parse(b"".join(chunks))[1][0] == "b"
        return
    first = next(chunks)  # the header of "a", a chunk of its own at this chunk size
    assert first[:2] == b"a\0"
    with pytest.raises(UnsafeTarError, match="'b'"):
        list(chunks)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.lists(st.text("abc.-/\u00e9", min_size=1, max_size=12), min_size=1, max_size=3),
            st.sampled_from(["file", "dir", "symlink"]),
            st.binary(max_size=600),
        ),
        max_size=6,
    )
)
def test_normalised_output_scans_the_same(entries):
    """Property: normalising never adds a member or a problem; it returns what the scan accepted."""
    members = [member("/".join(parts), kind, "x" if kind == "symlink" else "", data) for parts, kind, data in entries]
    raw = build_tar(*members)
    first = scan(raw)
    try:
        out = b"".join(normalised_chunks(io.BytesIO(raw)))
    except UnsafeTarError:
        assert first["problems"]
        return
    assert not first["problems"]
    second = scan(out)
    assert not second["problems"] and second["members"] == first["members"] and second["bytes"] == first["bytes"]
