# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The plain-block reader and writer against tarfile, which stays the reference for every answer."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils._tarblocks import (
    Batches,
    BlockSource,
    block_sum,
    plain_member,
    ustar_header,
)
from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import (
    PAX_XATTR,
    TarChecker,
    UnsafeTarError,
    copy_info,
    normalised_chunks,
)

FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "chksum", "type", "linkname", "uname", "gname")
FIELDS += ("devmajor", "devminor")
KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}


def header(name="a", kind=tarfile.REGTYPE, fmt=tarfile.USTAR_FORMAT, **fields):
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info.tobuf(fmt, "utf-8", "surrogateescape")


def reference(block):
    """What tarfile reads from one header block, or the exception it raises."""
    try:
        return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        return exc


def same_as_tarfile(block):
    ours, theirs = plain_member(block), reference(block)
    if ours is None:
        return False
    assert isinstance(theirs, tarfile.TarInfo), theirs
    for field in FIELDS:
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.pax_headers == {} and ours.sparse is None
    return True


def with_checksum(block):
    """``block`` with the checksum field recomputed (unsigned), as a writer would after editing it."""
    block = bytearray(block)
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_plain_headers_read_as_tarfile_reads_them(fmt, kind):
    block = header(
        "dir/" + kind,
        KINDS[kind],
        fmt,
        mode=0o4755,
        uid=999,
        gid=70,
        mtime=1700000000,
        uname="pg",
        gname="pg",
        linkname="target" if kind in ("symlink", "hardlink") else "",
        size=5 if kind == "file" else 0,
    )
    assert same_as_tarfile(block)


def test_a_ustar_prefix_is_joined_as_tarfile_joins_it():
    name = "p" * 120 + "/file"
    block = header(name, fmt=tarfile.USTAR_FORMAT, size=3)
    assert block[345:350] == b"p" * 5  # the name went into prefix + name
    assert same_as_tarfile(block) and plain_member(block).name == name


@pytest.mark.parametrize(
    "why,block",
    [
        ("an extension header", header("x" * 200, fmt=tarfile.PAX_FORMAT)[:512]),
        ("a GNU long name", header("x" * 200, fmt=tarfile.GNU_FORMAT)[:512]),
        ("a device", header("d", tarfile.CHRTYPE, devmajor=1, devminor=3)),
        ("a FIFO", header("f", tarfile.FIFOTYPE)),
        ("an old-style regular file", with_checksum(header("a")[:156] + b"\0" + header("a")[157:])),
        ("the end-of-archive block", bytes(512)),
        ("a truncated block", header("a")[:300]),
        ("a bad checksum", header("a")[:148] + b"0000000\0" + header("a")[156:]),
        ("a base-256 number", header("big", uid=8**8, fmt=tarfile.GNU_FORMAT)),
        ("no magic", with_checksum(header("a")[:257] + bytes(8) + header("a")[265:])),
        ("a non-ASCII number", with_checksum(header("a")[:100] + "\u00e9".encode() + header("a")[102:])),
    ],
)
def test_anything_else_is_left_to_tarfile(why, block):
    assert plain_member(block) is None, why


# A plain block with any one byte changed: plain_member either declines it or reads what tarfile reads.
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(KINDS)),
    st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT]),
    st.integers(0, 511),
    st.integers(0, 255),
    st.booleans(),
)
@example("file", tarfile.USTAR_FORMAT, 100, ord(" "), True)  # a space in a number field
@example("file", tarfile.USTAR_FORMAT, 345, ord("p"), True)  # a prefix on a short name
@example("dir", tarfile.GNU_FORMAT, 99, ord("/"), True)  # slashes after a directory's name
@example("file", tarfile.USTAR_FORMAT, 126, ord("_"), True)  # int() accepts underscores
@example("file", tarfile.USTAR_FORMAT, 125, 0x1C, True)  # only str.strip removes the separators 0x1c-0x1f
def test_one_changed_byte_is_read_as_tarfile_reads_it_or_declined(kind, fmt, offset, value, fix_checksum):
    block = bytearray(header("d/n", KINDS[kind], fmt, size=700 if kind == "file" else 0, linkname="t", mtime=5))
    block[offset] = value
    block = with_checksum(block) if fix_checksum else bytes(block)
    same_as_tarfile(block)


def info(name, kind, mode=0o644, uid=0, gid=0, size=0, mtime=1700000000, linkname="", uname="", gname=""):
    member = tarfile.TarInfo(name)
    member.type, member.mode, member.uid, member.gid, member.size, member.mtime = kind, mode, uid, gid, size, mtime
    member.linkname, member.uname, member.gname = linkname, uname, gname
    return member


def written(member):
    return ustar_header(
        member.name,
        member.type,
        member.mode,
        member.uid,
        member.gid,
        member.size,
        member.mtime,
        member.linkname,
        member.uname,
        member.gname,
    )


@pytest.mark.parametrize(
    "member",
    [
        info("a/file", tarfile.REGTYPE, 0o4755, 999, 999, 12345, uname="postgres", gname="postgres"),
        info("a/dir", tarfile.DIRTYPE, 0o1777),
        info("a/link", tarfile.SYMTYPE, 0o777, linkname="../b"),
        info("a/hard", tarfile.LNKTYPE, linkname="a/file"),
        info("n" * 99, tarfile.DIRTYPE),  # 100 bytes with the slash
        info("big", tarfile.REGTYPE, size=8**11 - 1, uid=8**7 - 1, gid=8**7 - 1),
    ],
)
def test_the_header_written_is_the_one_tarfile_writes(member):
    ours = written(member)
    assert ours == copy_info(member).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert plain_member(ours) is not None and same_as_tarfile(ours)


@pytest.mark.parametrize(
    "member",
    [
        info("n" * 101, tarfile.REGTYPE),
        info("n" * 100, tarfile.DIRTYPE),  # 101 bytes with the slash
        info("caf\u00e9", tarfile.REGTYPE),
        info("a", tarfile.SYMTYPE, linkname="l" * 101),
        info("a", tarfile.REGTYPE, uname="u" * 33),
        info("a", tarfile.REGTYPE, uid=8**7),
        info("a", tarfile.REGTYPE, gid=-1),
        info("a", tarfile.REGTYPE, size=8**11),
        info("a", tarfile.REGTYPE, mtime=1.5),
        info("a", tarfile.REGTYPE, mtime=-1),
    ],
)
def test_a_member_that_needs_an_extended_record_is_left_to_tarfile(member):
    assert written(member) is None


OPS = st.lists(st.tuples(st.sampled_from(["read", "peek", "slices", "skip", "seek"]), st.integers(0, 900)), max_size=30)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 5000), st.lists(st.integers(1, 700), min_size=1, max_size=12), OPS)
def test_the_block_source_reads_as_a_file_does_whatever_the_chunks(length, cuts, ops):
    data = bytes(i * 7 % 251 for i in range(length))
    chunks, rest = [], data
    for cut in cuts:
        chunks.append(rest[:cut])
        rest = rest[cut:]
    chunks.append(rest)
    source, plain = BlockSource(iter(chunks), 512), io.BytesIO(data)
    for op, size in [*ops, ("read", length)]:
        assert source.tell() == plain.tell()
        if op == "read":
            assert source.read(size) == plain.read(size)
        elif op == "peek":
            assert source.peek(size) == data[plain.tell() : plain.tell() + size]
        elif op == "slices":
            assert b"".join(source.slices(size)) == plain.read(size)
        elif op == "skip":
            assert source.skip(size) == len(plain.read(size))
        else:
            target = min(plain.tell() + size, len(data))
            assert source.seek(target) == plain.seek(target)
    assert source.read(10) == b"" and source.peek(10) == b""
    assert BlockSource(iter(chunks), 512).read() == data  # read() to the end, through io's readall


@settings(max_examples=300)
@given(st.binary(min_size=512, max_size=512))
@example(b"\xff" * 512)  # the largest sum: each half just below Adler-32's modulus
@example(bytes(512))
@example(b"\xff" * 256 + bytes(256))
def test_the_block_sum_is_the_sum_of_the_bytes(block):
    assert block_sum(block) == sum(block)


def test_the_block_source_never_seeks_back():
    source = BlockSource(io.BytesIO(b"x" * 2000), 512)
    source.read(700)
    with pytest.raises(io.UnsupportedOperation, match="cannot seek back"):
        source.seek(100)


def test_batches_gather_small_pieces_into_one_chunk():
    batches = Batches(1000)
    assert [batches.add(b"a" * 300), batches.add(b"b" * 300), batches.add(b"c" * 300)] == [None, None, None]
    assert batches.add(memoryview(b"d" * 200)) == b"a" * 300 + b"b" * 300 + b"c" * 300 + b"d" * 200
    assert batches.take() is None
    batches.add(b"e")
    assert batches.take() == b"e"


# ---------------------------------------------------------------------------------------------------------
# normalised_chunks: tarfile in streaming mode, every member rewritten by copy_info, is the reference


def reference_normalised(raw, allow_devices=False):
    checker, out = TarChecker(allow_devices), []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as archive:
        for member in archive:
            checker(member)
            copy = copy_info(member)
            out.append(copy.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            if copy.size:
                data = archive.extractfile(member).read()
                out.append(data + bytes(-len(data) % 512))
        assert not archive.pax_headers
    return b"".join(out) + bytes(1024)


ENTRY = st.tuples(
    st.lists(st.text("ab\u00e9", min_size=1, max_size=60), min_size=1, max_size=3),
    st.sampled_from(["file", "dir", "symlink"]),
    st.binary(max_size=1500),
    st.sampled_from([None, {"user.note": "x"}, {"comment": "c"}]),
    st.integers(0, 8**7 + 5),
)


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(ENTRY, max_size=8),
    st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]),
    st.integers(1, 3000),
)
def test_normalised_output_is_the_reference_whatever_the_chunks(entries, fmt, chunk):
    members = []
    for parts, kind, data, pax, uid in entries:
        member = tarfile.TarInfo("/".join(parts))
        member.type, member.uid, member.mode = KINDS[kind], uid % 8**7 if fmt == tarfile.USTAR_FORMAT else uid, 0o640
        member.linkname = "t" if kind == "symlink" else ""
        member.size = len(data) if kind == "file" else 0
        if pax and fmt == tarfile.PAX_FORMAT:
            member.pax_headers = {(PAX_XATTR + k if k.startswith("user.") else k): v for k, v in pax.items()}
        members.append((member, data))
    buf = io.BytesIO()
    try:
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
            for member, data in members:
                archive.addfile(member, io.BytesIO(data) if member.isreg() else None)
    except ValueError:  # a name this format cannot hold
        return
    raw = buf.getvalue()
    try:
        expected = reference_normalised(raw)
    except UnsafeTarError:
        with pytest.raises(UnsafeTarError):
            b"".join(normalised_chunks(io.BytesIO(raw), chunk_size=chunk))
        return
    chunks = list(normalised_chunks(iter([raw[i : i + chunk] for i in range(0, len(raw), chunk)]), chunk_size=chunk))
    assert b"".join(chunks) == expected
    assert all(len(c) >= chunk for c in chunks[:-1])


def test_gnu_tar_extracts_the_normalised_stream_of_a_gnu_tar_archive(tmp_path):
    """A real archive, GNU tar's own (long names, symlinks, a sparse file, PAX format), through and back."""
    tree = tmp_path / "tree"
    (tree / ("d" * 120)).mkdir(parents=True)
    (tree / ("d" * 120) / "f").write_bytes(b"data" * 1000)
    (tree / "link").symlink_to("d" * 120)
    with open(tree / "sparse", "wb") as f:
        f.seek(1 << 20)
        f.write(b"end")
    os.chmod(tree / "sparse", 0o600)
    for fmt in ("posix", "gnu"):
        raw = subprocess.run(
            ["tar", f"--format={fmt}", "--sparse", "-C", str(tree), "-cf", "-", "."], check=True, capture_output=True
        ).stdout
        out = b"".join(normalised_chunks(io.BytesIO(raw), chunk_size=4096))
        assert out == reference_normalised(raw)
        dest = tmp_path / f"out-{fmt}"
        dest.mkdir()
        subprocess.run(["tar", "-C", str(dest), "-xf", "-"], input=out, check=True)
        assert (dest / ("d" * 120) / "f").read_bytes() == b"data" * 1000
        assert os.readlink(dest / "link") == "d" * 120
        assert (dest / "sparse").read_bytes() == bytes(1 << 20) + b"end"
        assert (dest / "sparse").stat().st_mode & 0o777 == 0o600


def test_plain_members_follow_each_other_and_a_short_one_is_refused():
    raw = header("a", size=1024) + b"x" * 1024 + header("b", size=3) + b"abc" + bytes(509) + bytes(1024)
    out = b"".join(normalised_chunks(io.BytesIO(raw)))
    assert [m.name for m in tarfile.open(fileobj=io.BytesIO(out))] == ["a", "b"]
    with pytest.raises(UnsafeTarError, match="ends before its recorded size"):
        b"".join(normalised_chunks(io.BytesIO(header("a", size=4096) + b"x" * 100)))


# ---------------------------------------------------------------------------------------------------------
# scan_stream: tarfile in streaming mode over the whole archive is the reference


def reference_scan(raw, allow_devices=False):
    from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import _remember, new_summary

    checker, summary, problems = TarChecker(allow_devices), new_summary(), []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as archive:
            for member in archive:
                summary["members"] += 1
                summary["bytes"] += member.size if member.isreg() else 0
                problem, name = checker.judge(member)
                if problem:
                    problems.append(problem)
                    continue
                _remember(summary, member, name)
            if archive.pax_headers:
                problems.append("global")
    except tarfile.TarError:
        problems.append("stream")
    summary.update(problem_count=len(problems), problems=problems)
    return summary


HOSTILE_ENTRY = st.tuples(
    st.lists(st.sampled_from(["a", "b", "..", ".", "", "\u00e9" * 30]), min_size=1, max_size=4),
    st.sampled_from(["file", "dir", "symlink", "hardlink"]),
    st.binary(max_size=700),
    st.sampled_from(["t", "/etc", "../x", "a", "a/b"]),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(HOSTILE_ENTRY, max_size=8),
    st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]),
    st.one_of(st.none(), st.integers(0, 6000)),
)
def test_the_scan_finds_what_tarfile_finds(entries, fmt, cut):
    """Every member, byte count, problem and note of tarfile's own streaming read; a cut archive is incomplete."""
    from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import scan_stream

    buf = io.BytesIO()
    try:
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
            for parts, kind, data, target in entries:
                member = tarfile.TarInfo("/".join(parts))
                member.type = KINDS[kind]
                member.linkname = target if kind in ("symlink", "hardlink") else ""
                member.size = len(data) if kind == "file" else 0
                archive.addfile(member, io.BytesIO(data) if member.isreg() else None)
    except ValueError:
        return
    raw = buf.getvalue() if cut is None else buf.getvalue()[:cut]
    ours, theirs = scan_stream(io.BytesIO(raw)), reference_scan(raw)
    if cut is not None and not ours["complete"]:  # cut before the end-of-archive marker
        assert ours["problems"][-1].startswith(("the archive ends without", "the stream is not a readable"))
        return
    assert ours["complete"] and "stream" not in theirs["problems"]
    for key in ("members", "bytes", "root", "sparse", "xattrs", "has_sparse", "has_xattrs", "problems"):
        assert ours[key] == theirs[key], key
