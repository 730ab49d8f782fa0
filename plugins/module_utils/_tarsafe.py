# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Safety checks for tar members, so a hostile archive is refused before anything is restored.

The rules, and why:

* Names are relative to the extraction root: no absolute names, no ``..``, ``.`` or empty
  component (beyond the leading ``./`` and trailing ``/`` tar writes), no NUL byte, and only a
  directory may be the root (``.``) itself.
* Symlink targets are data: they are interpreted inside the container, where ``/etc/passwd`` is
  legitimate. They follow Docker's own rule (moby ``pkg/archive``, applied by ``put_archive``
  and image import): the target joined to the link's directory must stay inside the root, so
  ``/etc/passwd`` passes and ``../../etc`` from the top level is refused here instead of by
  Docker half-way through a restore.
* No member is ever written through a symlink: a member below an earlier symlink
  (``link -> /etc`` then ``link/passwd``), or replacing an earlier symlink with a file or a
  directory, is refused, whatever the link points to. Replacing a directory (one of the archive
  or one its members imply) with a non-directory is refused too, so a path checked once cannot
  later turn into a link.
* A hard link must name an earlier regular file (or hard link) of the same archive, so it can
  never give a name inside the root to a file outside it.
* Device and FIFO nodes are refused unless explicitly allowed.
* Extended attributes (PAX ``SCHILY.xattr.<name>`` records, as GNU tar and Docker write them) are
  accepted only in the namespaces ferry.docker keeps: ``user.*``, ``security.capability`` (regular
  files only) and the POSIX ACLs ``system.posix_acl_access`` and ``system.posix_acl_default``
  (directories only), each with a well-formed value of at most 64 KiB. Any other attribute
  (``trusted.*``, ``security.selinux``...) and libarchive's ``LIBARCHIVE.xattr.*`` records are
  refused: the engine would apply them as root.
* A sparse member's map must be ordered, non-overlapping and inside the file's apparent size.
* PAX global headers (type ``g``) are refused: Python's tarfile folds them into every later member
  while other readers (Go's archive/tar, used by the engine) ignore or apply them differently.

Parser differentials (old-style ``prefix`` fields, GNU long names, PAX ``path`` records, star
trailers, repeated extension headers: each tar reader resolves some of them differently) are closed
by never handing the engine the archive as stored. ``normalised_chunks`` parses the archive as the
scan's reader (tarfile) does, checks every member again with a fresh TarChecker, and writes a new POSIX
PAX archive of exactly those members: a ustar header without prefix (names longer than 100 bytes
get a PAX ``path`` record, which every reader applies the same way), no global header, no GNU
extension, only the kept ``SCHILY.xattr`` records, sparse files written in full at their apparent
size. The engine therefore extracts the very names, types and link targets that were checked; the
proof does not depend on knowing how the engine would have read the original. For speed, a member
with a plain ustar header (most of a volume's) is read and written by ``_tarblocks``, whose answers
the unit tests hold to tarfile's; every other member is read by tarfile itself.

``scan_stream`` reads a whole tar stream once, in streaming mode, and reports every problem
plus a summary, without extracting anything. Its memory grows with the number of members (their
names), never with the size of the data. The summary also carries what a restore needs after
Docker's extraction: the root entry's metadata, and (up to ``LIST_LIMIT`` entries each) the sparse
members with their maps and the members with extended attributes.
"""

from __future__ import annotations

import posixpath
import struct
import tarfile

from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    CHUNK_SIZE,
    FerryError,
)
from ansible_collections.ferry.docker.plugins.module_utils._tarblocks import (
    Batches,
    BlockSource,
    plain_member,
    ustar_header,
)

PAX_XATTR = "SCHILY.xattr."
_LIBARCHIVE_XATTR = "LIBARCHIVE.xattr."
XATTR_USER = "user."
XATTR_CAPABILITY = "security.capability"
XATTR_ACL_ACCESS = "system.posix_acl_access"
XATTR_ACL_DEFAULT = "system.posix_acl_default"
XATTR_NAME_MAX = 255  # Linux XATTR_NAME_MAX
XATTR_SIZE_MAX = 65536  # Linux XATTR_SIZE_MAX
_ACL_VERSION = 2
_ACL_HEADER, _ACL_ENTRY = 4, 8
LIST_LIMIT = 100_000  # sparse members and members with xattrs remembered by scan_stream
_REGULAR, _DIRECTORY, _SYMLINK, _OTHER = "f", "d", "l", "o"


class UnsafeTarError(FerryError):
    """A tar member would be extracted outside the root or through a link."""


def _components(name):
    """Path components of a member name, without the leading ``./`` and trailing ``/`` tar writes."""
    if name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    return [] if name in ("", ".") else name.split("/")


def _path(name):
    """The canonical form of a checked member name; ``.`` is the extraction root."""
    return "/".join(_components(name)) or "."


def xattr_kept(name):
    """Whether ferry.docker captures and restores the extended attribute ``name``."""
    if name.startswith(XATTR_USER):
        return len(name) > len(XATTR_USER)
    return name in (XATTR_CAPABILITY, XATTR_ACL_ACCESS, XATTR_ACL_DEFAULT)


def xattr_value(text):
    """The bytes of a PAX xattr record value as tarfile decoded it (utf-8, surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def xattr_text(value):
    """The PAX record text tarfile writes back as exactly the bytes ``value``."""
    return value.decode("utf-8", "surrogateescape")


def member_xattrs(member):
    """``{name: bytes}`` of the extended attributes a member carries in ``SCHILY.xattr.*`` records."""
    return {
        key[len(PAX_XATTR) :]: xattr_value(value)
        for key, value in member.pax_headers.items()
        if key.startswith(PAX_XATTR)
    }


def _acl_problem(value):
    if len(value) < _ACL_HEADER or (len(value) - _ACL_HEADER) % _ACL_ENTRY:
        return "is not a POSIX ACL (wrong length)"
    if struct.unpack_from("<I", value)[0] != _ACL_VERSION:
        return "is not a version 2 POSIX ACL"
    return None


def check_xattrs(member):
    """Return a problem with the extended attribute records of ``member``, or None."""
    for key, text in member.pax_headers.items():
        if key.startswith(_LIBARCHIVE_XATTR):
            return (
                f"member {member.name!r} carries a libarchive xattr record {key!r}; ferry.docker reads only "
                "SCHILY.xattr records"
            )
        if not key.startswith(PAX_XATTR):
            continue
        name = key[len(PAX_XATTR) :]
        if not xattr_kept(name):
            return (
                f"member {member.name!r} carries the extended attribute {name!r}; only user.*, "
                f"{XATTR_CAPABILITY} and POSIX ACLs are restored"
            )
        if len(name.encode("utf-8", "surrogateescape")) > XATTR_NAME_MAX or "\0" in name:
            return f"member {member.name!r} has an extended attribute with an invalid name {name!r}"
        value = xattr_value(text)
        if len(value) > XATTR_SIZE_MAX:
            return f"extended attribute {name!r} of member {member.name!r} is larger than {XATTR_SIZE_MAX} bytes"
        if name == XATTR_CAPABILITY and not (member.isreg() or member.islnk()):
            return f"member {member.name!r} is not a regular file but carries {XATTR_CAPABILITY}"
        if name == XATTR_ACL_DEFAULT and not member.isdir():
            return f"member {member.name!r} is not a directory but carries {XATTR_ACL_DEFAULT}"
        if name in (XATTR_ACL_ACCESS, XATTR_ACL_DEFAULT):
            if member.issym():
                return f"symlink {member.name!r} carries {name}"
            problem = _acl_problem(value)
            if problem:
                return f"extended attribute {name!r} of member {member.name!r} {problem}"
        if name.startswith(XATTR_USER) and not (member.isreg() or member.islnk() or member.isdir()):
            return f"member {member.name!r} carries {name!r}, but user.* attributes exist only on files and directories"
    return None


def check_sparse(member):
    """Return a problem with the sparse map of ``member``, or None (also for a member that is not sparse)."""
    if member.sparse is None:
        return None
    end = 0
    for offset, length in member.sparse:
        if offset < 0 or length < 0 or offset + length > member.size:
            return f"sparse member {member.name!r} has a map entry outside the file"
        if not length:  # GNU tar pads its old-format maps with (0, 0) and ends them with (size, 0)
            continue
        if offset < end:
            return f"sparse member {member.name!r} has an unordered or overlapping map"
        end = offset + length
    return None


def check_member(member, allow_devices=False):
    """Return a problem (str) with one ``tarfile.TarInfo`` judged on its own, or None if it is fine.

    This covers everything that does not depend on earlier members; TarChecker adds the rest.
    """
    return _member_problem(member, _components(member.name), allow_devices)


def _member_problem(member, parts, allow_devices):
    """``check_member`` for a member whose name has the components ``parts`` (``_components``)."""
    name, linkname = member.name, member.linkname
    if "\0" in name or "\0" in linkname:
        return f"member {name!r} has a NUL byte in its name or link target"
    if name.startswith("/"):
        return f"member {name!r} has an absolute name"
    if ".." in parts:
        return f"member {name!r} has a '..' component"
    if "" in parts or "." in parts:
        # harmless to the kernel, but an extractor may resolve "link/." through the link while
        # a normalised name would not show it
        return f"member {name!r} has an empty or '.' path component"
    if not parts and not member.isdir():
        return f"member {name!r} would replace the extraction root"
    if member.issym():
        if not linkname:
            return f"symlink {name!r} has an empty target"
        target = posixpath.normpath(posixpath.join(*parts[:-1], linkname.lstrip("/")))
        if target == ".." or target.startswith("../"):
            return f"symlink {name!r} points to {linkname!r}, outside the extraction root"
    elif member.islnk():
        target = _components(linkname)
        if linkname.startswith("/") or not target or {"", ".", ".."} & set(target):
            return f"hard link {name!r} points to {linkname!r}, which is not a member name inside the archive"
    elif member.ischr() or member.isblk() or member.isfifo():
        if not allow_devices:
            return f"member {name!r} is a device or FIFO node, which is not allowed here"
    elif not (member.isreg() or member.isdir()):
        return f"member {name!r} has an unsupported type {member.type!r}"
    if not member.pax_headers and member.sparse is None:  # most members: nothing more to check
        return None
    return check_xattrs(member) or check_sparse(member)


class TarChecker:
    """Check the members of one archive in order; remembers what earlier members created.

    ``check(member)`` returns a problem or None; ``judge(member)`` returns ``(problem, name)``, the
    member's normalised name when there is no problem; ``admit(member)`` returns that name or raises
    UnsafeTarError. An instance is also usable as a ``tarfile`` extraction filter
    (``filter=TarChecker()``): it returns the member or raises UnsafeTarError.
    """

    def __init__(self, allow_devices=False):
        self.allow_devices = allow_devices
        # normalised member name -> _REGULAR, _DIRECTORY, _SYMLINK or _OTHER. A _DIRECTORY entry never changes
        # (a member replacing it must be a directory) and is only made with all its ancestors, which are
        # _DIRECTORY too: a name whose parent is _DIRECTORY has nothing but directories above it.
        self._kinds = {}

    def check(self, member):
        return self.judge(member)[0]

    def judge(self, member):
        parts = _components(member.name)
        problem = _member_problem(member, parts, self.allow_devices)
        if problem:
            return problem, None
        kinds = self._kinds
        name = "/".join(parts) or "."
        parent = name.rpartition("/")[0]
        parents = ()
        if parent and kinds.get(parent) != _DIRECTORY:  # else every ancestor is a directory already (see above)
            parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
            for parent in parents:
                kind = kinds.get(parent)
                if kind == _SYMLINK:
                    return f"member {member.name!r} would be written through the symlink {parent!r}", None
                if kind in (_REGULAR, _OTHER):
                    return f"member {member.name!r} would be written below {parent!r}, which is not a directory", None
        previous = kinds.get(name)
        if previous == _SYMLINK and not member.issym():
            return f"member {member.name!r} would be written through the symlink of the same name", None
        if previous == _DIRECTORY and not member.isdir():
            return f"member {member.name!r} would replace the directory of the same name", None
        if member.islnk() and kinds.get(_path(member.linkname)) != _REGULAR:
            return (
                f"hard link {member.name!r} points to {member.linkname!r}, "
                "which is not an earlier regular file of the archive"
            ), None
        for parent in parents:  # extraction creates missing parent directories
            kinds[parent] = _DIRECTORY
        if member.isreg() or member.islnk():
            kinds[name] = _REGULAR
        elif member.isdir():
            kinds[name] = _DIRECTORY
        elif member.issym():
            kinds[name] = _SYMLINK
        else:
            kinds[name] = _OTHER
        return None, name

    def admit(self, member):
        """The normalised name of ``member``; UnsafeTarError if it has a problem."""
        problem, name = self.judge(member)
        if problem:
            raise UnsafeTarError(problem)
        return name

    def __call__(self, member, path=None):
        self.admit(member)
        return member


def _end_marker_tarinfo(state):
    """A TarInfo class noting whether reading stopped at the end-of-archive (zero) block.

    In streaming mode tarfile stops silently at a truncated or garbled header as it does at the
    end of the archive; this tells them apart. A zero header block raises EOFHeaderError in every
    Python version (some builds parse headers in a private ``_frombuf``, so the public entry point
    ``fromtarfile`` is the one to watch).
    """

    class _TarInfo(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, *args, **kwargs):  # the base's signature, whatever it calls its argument
            state["end_marker"] = False
            try:
                return super().fromtarfile(*args, **kwargs)
            except tarfile.EOFHeaderError:
                state["end_marker"] = True
                raise

    return _TarInfo


def _remember(summary, member, name):
    """Note in ``summary`` what a restore applies itself: the root entry, sparse maps, xattr names.

    ``name`` is the member's normalised name (``TarChecker.judge``)."""
    if member.sparse is None and not member.pax_headers and name != ".":  # most members: nothing to note
        return
    xattrs = member_xattrs(member)
    summary["has_sparse"] |= member.sparse is not None
    summary["has_xattrs"] |= bool(xattrs)
    if name == ".":
        summary["root"] = dict(
            mode=member.mode & 0o7777, uid=member.uid, gid=member.gid, mtime=member.mtime, xattrs=xattrs
        )
        return
    for key, entry in (("sparse", member.sparse is not None), ("xattrs", bool(xattrs))):
        if not entry:
            continue
        if len(summary[key]) >= LIST_LIMIT:
            summary["lists_complete"] = False
        elif key == "sparse":
            summary["sparse"].append((name, member.size, [(o, n) for o, n in member.sparse if n]))
        else:
            summary["xattrs"].append((name, sorted(xattrs)))


def new_summary():
    """An empty summary of the members of an archive, as ``scan_stream`` returns it (see there)."""
    summary = {"members": 0, "bytes": 0, "has_sparse": False, "has_xattrs": False, "problem_count": 0}
    summary.update(root=None, sparse=[], xattrs=[], lists_complete=True, problems=[], complete=False)
    return summary


def scan_stream(source, allow_devices=False, max_problems=100):
    """Read a tar stream once (file object or iterable of byte chunks) and check every member.

    Returns ``{"members", "bytes", "has_sparse", "has_xattrs", "complete", "problems",
    "problem_count", "root", "sparse", "xattrs", "lists_complete"}``: ``bytes`` is the apparent size
    of the regular files (a sparse file counts with its holes), ``complete`` says the
    end-of-archive marker was reached, ``problems`` holds the first ``max_problems`` member problems
    plus any problem of the stream itself, ``problem_count`` counts them all. ``root`` is
    ``{"mode", "uid", "gid", "mtime", "xattrs"}`` of the member ``.`` (None without one),
    ``sparse`` lists ``(name, size, map)`` of sparse regular files, ``xattrs`` lists ``(name,
    sorted attribute names)``; both hold at most LIST_LIMIT entries (``lists_complete`` is False
    when more were left out). Names are normalised (``dir/file``).
    The source is read to its end, so a decompressor or hashing reader behind it completes its
    own checks. Errors raised by the source itself (e.g. ArtifactError) propagate.
    """
    blocks = BlockSource(source, CHUNK_SIZE)
    checker = TarChecker(allow_devices)
    state = {"end_marker": False}
    tarinfo = _end_marker_tarinfo(state)
    summary = new_summary()
    problems = []
    global_header = False
    try:
        while True:
            member, data = _next_member(blocks, tarinfo)
            if member is None:
                break
            data.finish()  # the scan reads no data
            global_header |= data.global_header
            summary["members"] += 1
            if member.isreg():
                summary["bytes"] += member.size
            problem, name = checker.judge(member)
            if problem:
                summary["problem_count"] += 1
                if len(problems) < max_problems:  # a hostile archive may have millions
                    problems.append(problem)
                continue
            _remember(summary, member, name)
        if global_header:
            summary["problem_count"] += 1
            problems.append(
                "the archive has a PAX global header, which tar readers apply differently; "
                "ferry.docker archives never have one"
            )
        stream_problem = None
        if not state["end_marker"]:
            stream_problem = "the archive ends without an end-of-archive marker: it is truncated or damaged"
    except tarfile.TarError as exc:
        stream_problem = f"the stream is not a readable tar archive: {exc}"
    if stream_problem:
        problems.append(stream_problem)
        summary["problem_count"] += 1
    while blocks.skip(CHUNK_SIZE):  # the padding after the end marker, and anything else left over
        pass
    summary.update(complete=stream_problem is None, problems=problems)
    return summary


def member_chunks(info, data, chunk_size, short):
    """One member of a new PAX tar: the header of ``info``, then ``info.size`` bytes read from ``data``
    in chunks of at most ``chunk_size``, padded to a whole block. Raises ``short`` (an exception) if
    ``data`` ends first."""
    yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    left = info.size
    while left:
        chunk = data.read(min(chunk_size, left))
        if not chunk:
            raise short
        left -= len(chunk)
        yield chunk
    if info.size % tarfile.BLOCKSIZE:
        yield bytes(tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)


def copy_info(member):
    """A fresh TarInfo with only what ferry.docker restores of ``member``: no GNU or global extensions."""
    info = tarfile.TarInfo(member.name)
    info.type = tarfile.REGTYPE if member.isreg() else member.type
    for field in ("mode", "uid", "gid", "mtime", "uname", "gname", "devmajor", "devminor"):
        setattr(info, field, getattr(member, field))
    info.linkname = member.linkname if (member.issym() or member.islnk()) else ""
    info.size = member.size if member.isreg() else 0
    info.pax_headers = {key: value for key, value in member.pax_headers.items() if key.startswith(PAX_XATTR)}
    return info


def _next_member(blocks, tarinfo):
    """The next member of the stream at ``blocks`` and a reader of its data, or ``(None, None)`` at its end.

    A plain header block is read by ``_tarblocks.plain_member``; any other by tarfile itself, one member
    at a time over the same stream (extension headers, GNU types, sparse maps, the end...), with the
    ``tarinfo`` class of ``_end_marker_tarinfo``. Either way the stream is left at the member's data.
    """
    member = plain_member(blocks.peek(tarfile.BLOCKSIZE))
    if member is not None:
        start = blocks.tell()
        blocks.advance(tarfile.BLOCKSIZE)
        return member, _PlainData(blocks, member.size if member.isreg() else 0, start + tarfile.BLOCKSIZE)
    archive = tarfile.TarFile(fileobj=blocks, mode="r", tarinfo=tarinfo)
    member = archive.firstmember
    if member is None:
        return None, None
    return member, _TarfileData(archive, member)


class _PlainData:
    """The data of a plain member: ``size`` bytes right after its header, padded to a whole block."""

    global_header = False

    def __init__(self, blocks, size, offset):
        self.blocks, self.end = blocks, offset + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE

    def slices(self, size):
        return self.blocks.slices(size)

    def finish(self):
        """Move the stream to the next header."""
        _skip_to(self.blocks, self.end)


class _TarfileData:
    """The data of a member tarfile read (a sparse one at its apparent size, holes as zeros)."""

    def __init__(self, archive, member):
        self.blocks, self.archive = archive.fileobj, archive
        self.global_header = bool(archive.pax_headers)  # a PAX global header came before the member
        self.file = archive.extractfile(member) if member.isreg() and member.size else None

    def slices(self, size):
        while size > 0:
            piece = self.file.read(min(size, CHUNK_SIZE))
            if not piece:
                return
            size -= len(piece)
            yield piece

    def finish(self):
        _skip_to(self.blocks, self.archive.offset)


def _skip_to(blocks, offset):
    """Move the stream forward to ``offset`` (the next header); at the end of the stream it stays there."""
    if offset < blocks.tell():
        raise UnsafeTarError(f"the archive's next header at byte {offset} lies inside the member before it")
    blocks.skip(offset - blocks.tell())


def normalised_chunks(source, allow_devices=False, max_bytes=None, chunk_size=CHUNK_SIZE, summary=None):
    """Yield a new PAX tar stream of the checked members of ``source`` (file object or iterable of chunks).

    Every member is checked with a fresh TarChecker as it is read; a problem raises UnsafeTarError
    before that member is written. ``max_bytes`` bounds the apparent size of all regular files
    (sparse files count at their apparent size): the member that would exceed it raises
    UnsafeTarError before its header is written, so a consumer never receives more. ``summary`` (from
    ``new_summary``), when given, is filled as ``scan_stream`` fills its own (what a restore applies
    after the extraction: the root entry, sparse maps, xattr names), and the source is read to its end,
    so that a hashing reader behind it sees every byte. The output comes in chunks of about
    ``chunk_size`` bytes (many small members to a chunk); the end-of-archive marker is in the last one.
    """
    blocks = BlockSource(source, chunk_size)
    checker = TarChecker(allow_devices)
    state = {"end_marker": False}
    tarinfo = _end_marker_tarinfo(state)
    out = Batches(chunk_size)
    total = 0
    try:
        while True:
            # a plain member (most of a volume's) is read here, its data taken as slices of the stream's chunks;
            # any other by tarfile (_next_member). This loop runs once per member of every volume restored.
            member = plain_member(blocks.peek(tarfile.BLOCKSIZE))
            if member is not None:
                blocks.advance(tarfile.BLOCKSIZE)
                data = None
            else:
                member, data = _next_member(blocks, tarinfo)
                if member is None:
                    break
                if data.global_header:
                    raise UnsafeTarError("the archive has a PAX global header, which tar readers apply differently")
            name = checker.admit(member)
            size = member.size if member.isreg() else 0
            total += size
            if max_bytes is not None and total > max_bytes:
                raise UnsafeTarError(
                    f"member {member.name!r} takes the archive's files beyond the recorded size of "
                    f"{max_bytes} bytes (sparse files at their apparent size: {total} bytes so far)"
                )
            if summary is not None:
                summary["members"] += 1
                summary["bytes"] += size
                _remember(summary, member, name)
            chunk = out.add(_normalised_header(member, size))
            if chunk is not None:
                yield chunk
            left = size
            for piece in blocks.slices(size) if data is None else data.slices(size):
                left -= len(piece)
                chunk = out.add(piece)
                if chunk is not None:
                    yield chunk
            if left:
                raise UnsafeTarError(f"member {member.name!r} ends before its recorded size")
            if size % tarfile.BLOCKSIZE:
                chunk = out.add(_ZEROS[tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE])
                if chunk is not None:
                    yield chunk
            if data is None:
                blocks.skip(-size % tarfile.BLOCKSIZE)  # the padding of the member's data
            else:
                data.finish()
    except tarfile.TarError as exc:
        raise UnsafeTarError(f"the stream is not a readable tar archive: {exc}") from exc
    if summary is not None:
        if not state["end_marker"]:
            raise UnsafeTarError("the archive ends without an end-of-archive marker: it is truncated or damaged")
        while blocks.skip(CHUNK_SIZE):  # the padding after the end marker: a hashing reader sees it all
            pass
        summary["complete"] = True
    last = out.add(bytes(2 * tarfile.BLOCKSIZE))
    yield last if last is not None else out.take()


def _normalised_header(member, size):
    """The header of ``member`` in the normalised stream (as ``copy_info`` keeps it), for ``size`` bytes of data."""
    if not member.pax_headers and member.sparse is None:  # nothing for copy_info to drop: the fields as they are
        header = ustar_header(
            member.name,
            tarfile.REGTYPE if member.isreg() else member.type,
            member.mode,
            member.uid,
            member.gid,
            size,
            member.mtime,
            member.linkname if (member.issym() or member.islnk()) else "",
            member.uname,
            member.gname,
        )
        if header is not None:
            return header
    return copy_info(member).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_ZEROS = [bytes(n) for n in range(tarfile.BLOCKSIZE)]
