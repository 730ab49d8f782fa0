# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Volume metadata that Docker's archive API loses, and the content digest that shows a loss.

What the engine keeps and loses (measured on Docker 20.10, the behaviour of moby ``pkg/archive``):

* ``GET /containers/{id}/archive`` (get_archive) writes the root entry ``.`` with its mode, owner
  and mtime, but of all extended attributes only ``security.capability``; ``user.*`` attributes
  and POSIX ACLs are never read, and sparse files come out as plain files full of zeros.
* ``PUT /containers/{id}/archive`` (put_archive) applies ``SCHILY.xattr.*`` records (ignoring
  ENOTSUP and EPERM without a word), writes every file in full (holes become allocated zeros),
  and skips the member ``.`` when the target directory exists, so a volume root kept Docker's
  ``0755 root:root``.

So a volume is captured here, when its directory is reachable on this host (see
``local_reason``), by walking the directory itself: ``TreeTar`` writes the same archive layout
Docker does (``.`` then ``./path`` members, one pass, streamed in chunks) and adds the kept
extended attributes as ``SCHILY.xattr.<name>`` PAX records and sparse files as GNU sparse 1.0
members (a map of data segments, then only the data). The walk never follows a symlink: every
directory is opened with ``O_NOFOLLOW`` relative to its parent's descriptor, every file with
``O_NOFOLLOW``, and the attributes of entries that are not opened are read through
``/proc/self/fd/<dir>/<name>``. Otherwise Docker's archive API is used and the module says what
it could not keep.

On restore the engine still extracts the archive (chrooted, with its own checks), and then:
the root's metadata is applied by a second, one-member ``put_archive`` into the parent of the
mount point (``vol/`` there is the volume's root, which Docker does not skip); when the volume's
directory is reachable, holes are punched back into sparse files (``fallocate``) and every
extended attribute the archive carried is checked on disk. Whatever could not be kept is named,
attribute and file, in the module's result and warnings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import socket
import stat
import tarfile
import time

from ansible_collections.ferry.docker.plugins.module_utils._neighbour import LOCAL_BASE_URLS
from ansible_collections.ferry.docker.plugins.module_utils._stream import CHUNK_SIZE, TAR_BUFSIZE, IterReader
from ansible_collections.ferry.docker.plugins.module_utils._tarblocks import small_sum
from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import (
    PAX_XATTR,
    XATTR_CAPABILITY,
    member_xattrs,
    xattr_kept,
    xattr_text,
)

# Version of the volume archive's metadata, recorded as ``metadata`` in the manifest's volume artifacts:
# 1 (or absent): Docker's archive API (root entry, security.capability; no other xattrs, no sparse maps)
# 2: also user.* and POSIX ACL xattrs and GNU sparse members, when the volume was read from its directory
METADATA_VERSION = 2
METADATA_API = 1

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NO_XATTRS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
NOTE_EXAMPLES = 5


class Notes:
    """What could not be kept, by attribute: ``{attribute: {"count", "paths", "reason"}}`` (a few paths each)."""

    def __init__(self):
        self.items = {}

    def add(self, attribute, path, reason):
        item = self.items.setdefault(attribute, {"attribute": attribute, "count": 0, "paths": [], "reason": reason})
        item["count"] += 1
        if len(item["paths"]) < NOTE_EXAMPLES:
            item["paths"].append(path)

    def extend(self, other):
        for item in other.items.values():
            mine = self.items.setdefault(item["attribute"], dict(item, count=0, paths=[]))
            mine["count"] += item["count"]
            mine["paths"] = (mine["paths"] + item["paths"])[:NOTE_EXAMPLES]

    def as_list(self):
        return [dict(item) for _key, item in sorted(self.items.items())]

    def messages(self, what):
        """One sentence per attribute, naming the files (``what``: e.g. ``volume pgdata``)."""
        out = []
        for item in self.as_list():
            more = item["count"] - len(item["paths"])
            paths = ", ".join(item["paths"]) + (f" and {more} more" if more > 0 else "")
            out.append(f"{what}: {item['attribute']} not kept on {paths}: {item['reason']}")
        return out

    def __bool__(self):
        return bool(self.items)


# ------------------------------------------------------------------------------------------------
# may this host read the volume's directory itself?


def local_reason(base_url, engine_name, security_options, mount_type, driver=None, options=None, path=None):
    """None if the volume (or bind) directory ``path`` on this host is the one the engine uses, else why not.

    Pure decision: the engine must answer on a local unix socket and call itself by this host's
    name (so a forwarded socket of another machine is not mistaken for it), without user
    namespaces or rootless mode (files on disk then carry shifted owners), and a volume must use
    the ``local`` driver without options (a volume with mount options is only mounted while a
    container uses it).
    """
    if base_url not in LOCAL_BASE_URLS:
        return "the Docker engine is not reached over a local unix socket"
    if engine_name != socket.gethostname():
        return f"the Docker engine runs on {engine_name or 'another host'}, not on {socket.gethostname()}"
    for option in security_options or []:
        if "name=userns" in option or "name=rootless" in option:
            return "the engine remaps user IDs (userns-remap or rootless), so owners on disk differ"
    if mount_type == "volume" and (driver != "local" or options):
        return f"the volume uses driver {driver} with options, so it is mounted only while in use"
    if not path or not os.path.isdir(path):
        return f"its directory {path} is not a directory on this host"
    if not os.path.isdir("/proc/self/fd"):
        return "/proc is not mounted, so the directory cannot be read without following symlinks"
    return None


# ------------------------------------------------------------------------------------------------
# reading a directory tree into a tar stream


def volume_local_reason(base_url, info, volume):
    """local_reason for a named volume, from the engine's ``info`` and the volume's inspect document."""
    return local_reason(
        base_url,
        info.get("Name"),
        info.get("SecurityOptions"),
        "volume",
        volume.get("Driver"),
        volume.get("Options"),
        volume.get("Mountpoint"),
    )


def read_xattrs(target, follow=True):
    """``(kept {name: bytes}, other names)`` of a path or file descriptor; ``({}, [])`` where unsupported."""
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return {}, []
        raise
    kept, other = {}, []
    for name in sorted(names):
        if not xattr_kept(name):
            other.append(name)
            continue
        try:
            kept[name] = os.getxattr(target, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno not in _NO_XATTRS:
                raise
    return kept, other


def data_segments(fd, size):
    """The data segments ``[(offset, length)]`` of an open file, from SEEK_DATA/SEEK_HOLE (all data if unsupported)."""
    segments = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            segments.append((start, end - start))
            pos = end
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            return [(0, size)] if size else []
        raise
    return segments


def sparse_map_block(segments, size):
    """The GNU sparse 1.0 map that precedes the data: count, then offset and length per segment, padded."""
    entries = list(segments)
    if not entries or entries[-1][0] + entries[-1][1] < size:
        entries.append((size, 0))  # as GNU tar writes it: the apparent size is the end of the last entry
    text = "".join(f"{o}\n{n}\n" for o, n in entries)
    data = f"{len(entries)}\n{text}".encode("ascii")
    return data + b"\0" * (-len(data) % _BLOCK), entries


def _entry_type(mode):
    if stat.S_ISDIR(mode):
        return tarfile.DIRTYPE
    if stat.S_ISREG(mode):
        return tarfile.REGTYPE
    if stat.S_ISLNK(mode):
        return tarfile.SYMTYPE
    if stat.S_ISCHR(mode):
        return tarfile.CHRTYPE
    if stat.S_ISBLK(mode):
        return tarfile.BLKTYPE
    if stat.S_ISFIFO(mode):
        return tarfile.FIFOTYPE
    return None  # a socket: tar has no type for it


_USTAR_ID = 8**7  # uid, gid, device numbers: 7 octal digits
_USTAR_NUMBER = 8**11  # size, mtime: 11 octal digits
_NUL = b"\0"
_NO_DEVICES = _NUL * 16
_MAGIC_AND_NAMES = tarfile.POSIX_MAGIC + _NUL * 64  # "ustar\000", then empty user and group names
_PREFIX_AND_PAD = _NUL * (_BLOCK - 345)  # the ustar prefix field (unused) and the block's padding
_ZEROS = bytes(_RECORD)


def _ustar_block(name, link, kind, mode, uid, gid, size, mtime, devices=_NO_DEVICES):
    """The ustar header block ``tarfile`` writes for these fields: ``name`` and ``link`` ASCII bytes of at most
    100, the numbers within their fields, ``devices`` the 16 bytes of the device numbers (the caller checks)."""
    head = b"%s%07o\0%07o\0%07o\0%011o\0%011o\0" % (name.ljust(100, _NUL), mode & 0o7777, uid, gid, size, mtime)
    tail = kind + link.ljust(100, _NUL) + _MAGIC_AND_NAMES + devices
    # the checksum is the sum of the block's bytes, its own field counted as eight spaces (256); head (148 bytes)
    # and tail (189) are each within small_sum's 256
    checksum = small_sum(head) + small_sum(tail) + 256
    return b"%s%06o\0 %s%s" % (head, checksum, tail, _PREFIX_AND_PAD)


def _ustar_header(info):
    """The one ustar block ``tarfile`` writes in PAX format for an entry that needs no extended header, built
    without it (a tenth of the time, for a volume of 40,000 small files about a second); None when the entry
    needs one (xattrs, a long or non-ASCII name, a number beyond its field, a user or group name)."""
    if info.pax_headers or info.uname or info.gname:
        return None
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else info.name
    try:
        name, link = name.encode("ascii"), info.linkname.encode("ascii")
    except UnicodeEncodeError:
        return None
    uid, gid, size, mtime = info.uid, info.gid, info.size, info.mtime
    numbers = (uid, gid, size, mtime)
    if len(name) > 100 or len(link) > 100 or any(not isinstance(n, int) or isinstance(n, bool) for n in numbers):
        return None
    if not (0 <= uid < _USTAR_ID and 0 <= gid < _USTAR_ID and 0 <= size < _USTAR_NUMBER and 0 <= mtime < _USTAR_NUMBER):
        return None
    devices = _NO_DEVICES
    if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        if not (0 <= info.devmajor < _USTAR_ID and 0 <= info.devminor < _USTAR_ID):
            return None
        devices = b"%07o\0%07o\0" % (info.devmajor, info.devminor)
    return _ustar_block(name, link, info.type, info.mode, uid, gid, size, mtime, devices)


def _file_header(name, st, size):
    """``_ustar_header`` of a regular file without xattrs whose metadata is ``st``, without a TarInfo; None when
    it needs an extended header."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        return None
    uid, gid, mtime = st.st_uid, st.st_gid, int(st.st_mtime)
    if len(raw) > 100 or not (0 <= uid < _USTAR_ID and 0 <= gid < _USTAR_ID):
        return None
    if not (0 <= size < _USTAR_NUMBER and 0 <= mtime < _USTAR_NUMBER):
        return None
    return _ustar_block(raw, b"", tarfile.REGTYPE, st.st_mode, uid, gid, size, mtime)


def _header(info):
    return _ustar_header(info) or info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class TreeTar:
    """A PAX tar stream of a directory (``.`` first, then ``./path``), read without following symlinks.

    ``chunks()`` yields the archive in pieces of about CHUNK_SIZE (``bytes``; a piece is at most two
    chunks and an entry's headers); the memory used is about two chunks plus the names of the
    directories on the current path and the (device, inode) of files with several links. After the
    stream ends, ``notes`` says what could not be put in the archive (other xattrs, sockets, entries
    that changed or vanished while read) and ``sparse_files``, ``xattr_files`` count what was kept,
    ``apparent_bytes`` the size of the regular files.

    The pieces of the next chunk (headers, small files, padding) are kept in a list and joined once;
    a file larger than a chunk goes out in reads of a whole chunk, not copied again.
    """

    def __init__(self, path, chunk_size=CHUNK_SIZE):
        self.path = path
        self.chunk_size = chunk_size
        self.notes = Notes()
        self.sparse_files = 0
        self.xattr_files = 0
        self.apparent_bytes = 0  # of the regular files, sparse files at their apparent size
        self._parts = []  # the pieces of the next chunk
        self._pending = 0  # their length
        self._links = {}

    # -- output ---------------------------------------------------------------------------------

    def _add(self, data):
        self._parts.append(data)
        self._pending += len(data)

    def _take(self):
        parts = self._parts
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts, self._pending = [], 0
        return out

    # -- entries --------------------------------------------------------------------------------

    def _info(self, name, st, kind, xattrs):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        info.pax_headers = {PAX_XATTR + k: xattr_text(v) for k, v in xattrs.items()}
        if xattrs:
            self.xattr_files += 1
        return info

    def _xattrs(self, target, name, follow=True):
        try:
            if not os.listxattr(target, follow_symlinks=follow):
                return {}  # most entries: one system call, as read_xattrs would make
        except OSError as exc:
            if exc.errno in _NO_XATTRS:
                return {}
            raise
        kept, other = read_xattrs(target, follow)
        for attribute in other:
            self.notes.add(f"xattr {attribute}", name, "only user.*, security.capability and POSIX ACLs are captured")
        return kept

    def _file(self, dirfd, entry, name, st):
        """Add the header and data of a regular file (or a hard link to an earlier one); yield whole chunks."""
        if st.st_nlink > 1:
            first = self._links.get((st.st_dev, st.st_ino))
            if first is not None:
                info = self._info(name, st, tarfile.LNKTYPE, {})
                info.linkname = first
                self._add(_header(info))
                return
        try:
            fd = os.open(entry, _FILE_FLAGS, dir_fd=dirfd)
        except OSError as exc:
            self.notes.add("file", name, f"it changed or vanished while read ({exc.strerror})")
            return
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                self.notes.add("file", name, "it was replaced while read")
                return
            if st.st_nlink > 1:
                self._links[(st.st_dev, st.st_ino)] = name
            size = now.st_size
            self.apparent_bytes += size
            xattrs = self._xattrs(fd, name)
            segments = data_segments(fd, size) if now.st_blocks * 512 < size else [(0, size)] if size else []
            stored = sum(n for _o, n in segments) if len(segments) != 1 else segments[0][1]
            header = None if xattrs or stored < size else _file_header(name, now, size)
            if header is not None:
                self._add(header)
            elif stored < size:
                self.sparse_files += 1
                info = self._info(name, now, tarfile.REGTYPE, xattrs)
                block, entries = sparse_map_block(segments, size)
                real = info.name
                directory, _sep, base = real.rpartition("/")
                info.name = f"{directory}/GNUSparseFile.0/{base}"
                info.pax_headers.update(
                    {
                        "path": info.name,
                        "GNU.sparse.major": "1",
                        "GNU.sparse.minor": "0",
                        "GNU.sparse.name": real,
                        "GNU.sparse.realsize": str(size),
                    }
                )
                info.size = len(block) + sum(n for _o, n in entries)
                self._add(_header(info))
                self._add(block)
            else:
                info = self._info(name, now, tarfile.REGTYPE, xattrs)
                info.size = size
                self._add(_header(info))
            for offset, length in segments:
                if length <= self.chunk_size:
                    data = os.pread(fd, length, offset)  # a small file: one read, joined to the next chunk
                    self._add(data)
                    if len(data) < length:  # it shrank while read
                        yield from self._copy(fd, offset + len(data), length - len(data), name)
                else:
                    yield from self._copy(fd, offset, length, name)
                if self._pending >= self.chunk_size:  # a sparse file of many small segments
                    yield self._take()
            if stored % _BLOCK:
                self._add(_ZEROS[: _BLOCK - stored % _BLOCK])
        finally:
            os.close(fd)

    def _copy(self, fd, offset, length, name):
        """Add ``length`` bytes of ``fd`` from ``offset``, yielding whole chunks; zeros for what is gone."""
        end = offset + length
        size = self.chunk_size
        if length > size and self._parts:
            yield self._take()  # the reads that follow are whole chunks of their own
        while offset < end:
            data = os.pread(fd, min(size, end - offset), offset)
            if not data:  # the file shrank while read: keep the announced size, say so
                self.notes.add("file", name, "it shrank while read; the missing end was stored as zeros")
                while offset < end:
                    step = min(size, end - offset)
                    self._add(bytes(step))
                    offset += step
                    if self._pending >= size:
                        yield self._take()
                return
            offset += len(data)
            if len(data) >= size and not self._parts:
                yield data
                continue
            self._add(data)
            if self._pending >= size:
                yield self._take()

    def _entries(self):
        """Yield the raw tar bytes (headers, data, padding) of the whole tree, in chunks of about chunk_size."""
        root = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        stack = []
        size = self.chunk_size
        try:
            st = os.fstat(root)
            self._add(_header(self._info(".", st, tarfile.DIRTYPE, self._xattrs(root, "."))))
            stack.append((root, "./", iter(sorted(os.listdir(root)))))
            while stack:
                if self._pending >= size:
                    yield self._take()
                dirfd, prefix, names = stack[-1]
                entry = next(names, None)
                if entry is None:
                    stack.pop()
                    if dirfd != root:
                        os.close(dirfd)
                    continue
                name = prefix + entry
                try:
                    st = os.stat(entry, dir_fd=dirfd, follow_symlinks=False)
                except FileNotFoundError:
                    self.notes.add("file", name, "it vanished while read")
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield from self._file(dirfd, entry, name, st)
                    continue
                kind = _entry_type(st.st_mode)
                if kind is None:
                    self.notes.add("socket", name, "tar archives cannot hold sockets (the service recreates them)")
                elif kind == tarfile.DIRTYPE:
                    try:
                        child = os.open(entry, _DIR_FLAGS, dir_fd=dirfd)
                    except OSError as exc:
                        self.notes.add("directory", name, f"it changed or vanished while read ({exc.strerror})")
                        continue
                    now = os.fstat(child)
                    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                        os.close(child)
                        self.notes.add("directory", name, "it was replaced while read")
                        continue
                    self._add(_header(self._info(name, now, kind, self._xattrs(child, name))))
                    stack.append((child, name + "/", iter(sorted(os.listdir(child)))))
                else:
                    proc = f"/proc/self/fd/{dirfd}/{entry}"
                    info = self._info(name, st, kind, self._xattrs(proc, name, follow=False))
                    if kind == tarfile.SYMTYPE:
                        info.linkname = os.readlink(entry, dir_fd=dirfd)
                    self._add(_header(info))
        finally:
            for dirfd, _prefix, _names in stack:
                if dirfd != root:
                    os.close(dirfd)
            os.close(root)
        self._add(_ZEROS[: 2 * _BLOCK])

    def chunks(self):
        """The archive as byte chunks of about ``chunk_size``, padded to whole tar records at the end."""
        total = 0
        for data in self._entries():
            total += len(data)
            yield data
        self._add(_ZEROS[: -(total + self._pending) % _RECORD])
        tail = self._take()
        if tail:
            yield tail


# ------------------------------------------------------------------------------------------------
# the content digest


def _entry_name(name, strip):
    name = name.lstrip("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if strip and parts:
        parts = parts[1:]
    return "/".join(parts) or "."


def tar_fingerprint(fileobj, strip_first=False, stop_after_first=False, xattrs="all"):
    """``(sha256, count)`` over the members of a tar stream, the root entry included.

    Each entry contributes its path, type, mode, uid, gid, size (apparent size for sparse files),
    the sha256 of its content or its link target, and its kept extended attributes (names and
    values; ``xattrs="capability"`` keeps only ``security.capability``, the one attribute
    Docker's get_archive shows, ``"none"`` none). A hard link counts as the regular file it names,
    since which name comes first depends on the walk. mtimes are left out on purpose (a
    directory's mtime moves whenever something is added to it). The root (``.``) is an entry like
    the others, so a lost root owner or mode changes the digest. With ``strip_first`` the first
    path component (the archived directory's own name) is dropped. With ``stop_after_first``
    reading stops at the first member below the root (count is then 0 or 1): an emptiness check.
    ``count`` is the number of entries below the root.
    """
    digest = hashlib.sha256()
    entries = []
    files = {}  # name -> (size, content sha256) of regular files, for hard links
    count = 0
    with tarfile.open(fileobj=fileobj, mode="r|", bufsize=TAR_BUFSIZE) as archive:
        for member in iter(archive.next, None):
            del archive.members[:]
            name = _entry_name(member.name, strip_first)
            if name != ".":
                if stop_after_first:
                    return None, 1
                count += 1
            kind, mode, size, link, content = member.type, member.mode & 0o7777, 0, member.linkname, ""
            if member.isreg():
                data = archive.extractfile(member)
                file_digest = hashlib.sha256()
                while True:
                    block = data.read(CHUNK_SIZE)
                    if not block:
                        break
                    file_digest.update(block)
                size, content = member.size, file_digest.hexdigest()
                files[name] = (size, content)
                kind, link = tarfile.REGTYPE, ""
            elif member.islnk():
                kind, link = tarfile.REGTYPE, ""
                size, content = files.get(_entry_name(member.linkname, strip_first), (0, ""))
            elif member.issym():
                mode = 0  # a symlink's mode means nothing on Linux (always 0777 once extracted)
            found = member_xattrs(member)
            if xattrs == "capability":
                found = {k: v for k, v in found.items() if k == XATTR_CAPABILITY}
            elif xattrs == "none":
                found = {}
            attrs = ",".join(f"{k}={v.hex()}" for k, v in sorted(found.items()))
            fields = (name, kind.decode("latin-1"), mode, member.uid, member.gid, size, link, content, attrs)
            entries.append("\0".join(str(v) for v in fields))
    for entry in sorted(entries):
        digest.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest(), count


def tree_digest(path, xattrs="all"):
    """``(sha256, count)`` of a directory on this host, the same digest as ``tar_fingerprint`` of its archive."""
    tree = TreeTar(path)
    return tar_fingerprint(IterReader(tree.chunks()), xattrs=xattrs)


def _fields(name, kind, st, link, size, content, xattrs):
    mode = 0 if kind == tarfile.SYMTYPE else stat.S_IMODE(st.st_mode)
    attrs = ",".join(f"{k}={v.hex()}" for k, v in sorted(xattrs.items()))
    fields = (name, kind.decode("latin-1"), mode, st.st_uid, st.st_gid, size, link, content, attrs)
    return "\0".join(str(v) for v in fields)


# A cached content digest is used only for a file whose inode change time is older than this (seconds) when it
# was hashed: a write in the same clock tick as the hash could otherwise leave the file's times unchanged.
RACY_SECONDS = 1.0


def _file_sha256(path):
    fd = os.open(path, _FILE_FLAGS)  # never through a symlink swapped in since the lstat
    digest, read = hashlib.sha256(), 0
    try:
        while True:
            block = os.read(fd, CHUNK_SIZE)
            if not block:
                return digest.hexdigest(), read
            digest.update(block)
            read += len(block)
    finally:
        os.close(fd)


def walk_digest(path, cache=None, now=None, stats=None, tree=None):
    """``(sha256, count, hashed_bytes)``: the same digest as ``tree_digest(path)``, from the directory itself.

    With ``cache`` (a dict, updated in place: relative path -> [inode, size, mtime_ns, ctime_ns, sha256, entry])
    a regular file with one link whose inode, size and times are unchanged since it was hashed, and whose
    change time was older than RACY_SECONDS then, is neither read nor asked for its attributes again: its
    entry (mode, owner, xattrs and content digest) is the cached one. A change of any of those sets the
    change time, so a second digest of a tree costs one ``stat`` per entry plus the bytes that changed.
    ``hashed_bytes`` says how many bytes were read this time. ``stats`` (a dict) gets ``racy``: how many
    files were too recent to cache. ``tree`` (a dict) gets every entry the digest covers, the top directory as
    ``.``: relative path -> ``(mtime_ns, entry, links)``, ``links`` true for a file with several names (what a
    listed copy compares, see ``_precopy.listed_delta``).
    """
    now = time.time() if now is None else now
    entries = []
    firsts = {}  # (dev, inode) -> (size, content) of the first name of a file with several links
    fresh = {}
    cached = cache or {}
    root = os.lstat(path)
    entries.append(_fields(".", tarfile.DIRTYPE, root, "", 0, "", read_xattrs(path, follow=False)[0]))
    if tree is not None:
        tree["."] = (root.st_mtime_ns, entries[-1], False)
    # each directory is open while its entries are read: an entry's lstat is relative to it (no path lookup from
    # the top for each of them, a third of the walk's time on overlay2), and a directory swapped for a symlink
    # meanwhile is not followed
    top = os.open(path, _DIRECTORY_FLAGS)
    stack = [(path, "", iter(sorted(os.listdir(top))), top)]
    try:
        hashed = _walk(stack, entries, firsts, fresh, cached, cache, now, stats, tree)
    finally:
        for frame in stack:
            os.close(frame[3])
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return _entries_digest(entries), len(entries) - 1, hashed  # every entry but the top one


def _entries_digest(entries):
    """The sha256 of the digest entries (a list, sorted in place): one line each, each ending with a newline."""
    entries.sort()
    digest = hashlib.sha256()
    for start in range(0, len(entries), 4096):  # joined a few thousand at a time
        digest.update(("\n".join(entries[start : start + 4096]) + "\n").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


class NotListed(Exception):
    """``listed_digest`` cannot give the digest from the listed paths alone; the message says why (the whole
    tree is then walked)."""


def listed_digest(path, lines, send, remove, cache=None, now=None):
    """``(sha256, count, hashed_bytes)`` as ``walk_digest(path, cache)`` gives them, for a tree whose digest
    entries were ``lines`` (relative path -> entry, from ``walk_digest``'s ``tree``) and in which only the paths
    ``send`` and ``remove`` (relative, as ``_precopy.listed_delta`` gives them) have changed since: what is
    listed is read again, nothing else is. ``lines`` is updated in place.

    ``remove``: each path and everything below it are gone. ``send``: each path is read again (its ``lstat``
    through directories opened one by one, never through a symlink); one that is no longer there goes with what
    was below it, one that is no longer a directory loses what was below it, and a directory that was not one
    before is walked whole. Raises NotListed for a file with several names (which of its names comes first
    decides whose attributes its entry carries, as in the walk) and for a listed path that is not plainly
    inside the tree."""
    now = time.time() if now is None else now
    cached = cache or {}
    hashed = 0
    _drop_below(lines, [name + "/" for name in sorted(set(remove)) if _is_directory(lines.pop(name, None))])
    emptied = []  # the directories listed that are gone or no longer directories: what was below them goes
    walked = ()  # the directories walked whole: what is listed below them is in lines already
    for name in sorted(set(send)):  # a directory before what is below it
        if name == ".":
            lines["."] = _directory_entry(path, ".", os.lstat(path))
            continue
        if not name or name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
            raise NotListed(f"the listed path {name!r} is not inside the tree")
        if name.startswith(walked):
            continue
        before = lines.pop(name, None)
        fd, st = _lstat_below(path, name)
        if fd is None:  # not there (or below something that is not a directory)
            if _is_directory(before):
                emptied.append(name + "/")
            continue
        try:
            full = f"/proc/self/fd/{fd}/{name.rsplit('/', 1)[-1]}"  # through the directory opened above
            if stat.S_ISDIR(st.st_mode):
                lines[name] = _directory_entry(full, name, st)
                if not _is_directory(before):  # a directory that was not one: walked whole
                    hashed += _walk_below(full, name, lines, cached, now)
                    walked = (*walked, name + "/")
                continue
            if _is_directory(before):
                emptied.append(name + "/")
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                raise NotListed(f"{name} has several names")
            found = []
            hashed += _walk_entry(full, name, st, found, {}, {}, cached, None, now, None, None)
            if found:  # (a socket has no entry, as in the walk)
                lines[name] = found[0]
        finally:
            os.close(fd)
    _drop_below(lines, emptied)
    entries = list(lines.values())
    return _entries_digest(entries), len(entries) - 1, hashed


def _drop_below(lines, prefixes):
    """Remove from ``lines`` every path that starts with one of ``prefixes`` (one pass over them all)."""
    if prefixes:
        prefixes = tuple(prefixes)
        for other in [other for other in lines if other.startswith(prefixes)]:
            del lines[other]


def _is_directory(entry):
    return entry is not None and entry.split("\0", 2)[1] == "5"


def _directory_entry(full, name, st):
    return _fields(name, tarfile.DIRTYPE, st, "", 0, "", read_xattrs(full, follow=False)[0])


def _lstat_below(path, name):
    """``(fd, lstat)`` of ``name`` (relative) below ``path``: ``fd`` is its directory, opened one part at a time
    without following a symlink (the caller closes it); ``(None, None)`` when a part is missing or not a
    directory, or the entry itself is missing."""
    parts = name.split("/")
    fd = os.open(path, _DIRECTORY_FLAGS)
    try:
        for part in parts[:-1]:
            sub = os.open(part, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
        st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        os.close(fd)
        return None, None
    except OSError as exc:
        os.close(fd)
        if exc.errno == errno.ELOOP:  # a symlink where a directory was: what it points to is not below
            return None, None
        raise
    return fd, st


def _walk_below(full, name, lines, cached, now):
    """Walk the directory ``full`` (relative path ``name``) whole into ``lines``; the bytes read."""
    tree, entries = {}, []
    sub = os.open(full, _DIRECTORY_FLAGS | os.O_NOFOLLOW)
    stack = [(full, name + "/", iter(()), sub)]
    try:
        stack[-1] = (full, name + "/", iter(sorted(os.listdir(sub))), sub)
        hashed = _walk(stack, entries, {}, {}, cached, None, now, None, tree)
    finally:
        for frame in stack:
            os.close(frame[3])
    for below, (_mtime, entry, links) in tree.items():
        if links:
            raise NotListed(f"{below} has several names")
        lines[below] = entry
    return hashed


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


def _walk(stack, entries, firsts, fresh, cached, cache, now, stats, tree):
    """``walk_digest``'s loop over ``stack`` (each frame: directory, relative prefix, its sorted names, its open
    descriptor, closed once its names are done); the bytes it read.

    Most entries of a second digest are files with one name whose cached stamp still holds: those take the short
    path here (one ``stat``, one lookup, four comparisons), everything else goes through ``_walk_entry``. The
    frame's names are an iterator: a subdirectory goes on the stack and the loop resumes its parent's names where
    it left them once the subdirectory is done."""
    hashed = 0
    append = entries.append
    lstat, is_reg, is_dir = os.stat, stat.S_ISREG, stat.S_ISDIR
    while stack:
        directory, prefix, names, fd = stack[-1]
        for entry in names:
            name = prefix + entry
            try:
                st = lstat(entry, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            mode = st.st_mode
            if is_reg(mode) and st.st_nlink == 1:
                known = cached.get(name)
                if (
                    known is not None
                    and len(known) == 6
                    and known[0] == st.st_ino
                    and known[1] == st.st_size
                    and known[2] == st.st_mtime_ns
                    and known[3] == st.st_ctime_ns
                ):
                    # it passed the RACY_SECONDS test when cached, and its times are the same
                    append(known[5])
                    fresh[name] = known
                    if tree is not None:
                        tree[name] = (st.st_mtime_ns, known[5], False)
                    continue
            full = directory + "/" + entry
            if is_dir(mode):
                append(_fields(name, tarfile.DIRTYPE, st, "", 0, "", read_xattrs(full, follow=False)[0]))
                if tree is not None:
                    tree[name] = (st.st_mtime_ns, entries[-1], False)
                sub = os.open(entry, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                stack.append((full, name + "/", iter(()), sub))  # on the stack before listing: closed if that fails
                stack[-1] = (full, name + "/", iter(sorted(os.listdir(sub))), sub)
                break  # the subdirectory first; this directory's names go on where they stopped
            hashed += _walk_entry(full, name, st, entries, firsts, fresh, cached, cache, now, stats, tree)
        else:
            stack.pop()
            os.close(fd)
    return hashed


def _walk_entry(full, name, st, entries, firsts, fresh, cached, cache, now, stats, tree):
    """One entry that is not a directory and not a cached file with one name; the bytes read for it."""
    kind = _entry_type(st.st_mode)
    if kind is None:
        return 0  # a socket, as in TreeTar
    hashed = 0
    if kind == tarfile.REGTYPE:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in firsts:
            size, content = firsts[key]
            entries.append(_fields(name, kind, st, "", size, content, {}))
            if tree is not None:
                tree[name] = (st.st_mtime_ns, entries[-1], True)
            return 0
        known = cached.get(name)
        stamp = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        if known and known[:4] == stamp:
            content = known[4]  # several names, or an older entry: the content only
        else:
            content, hashed = _file_sha256(full)
        line = _fields(name, kind, st, "", st.st_size, content, read_xattrs(full, follow=False)[0])
        if cache is not None and now - st.st_ctime > RACY_SECONDS:
            fresh[name] = [*stamp, content, line]
        elif stats is not None:
            stats["racy"] = stats.get("racy", 0) + 1
        if st.st_nlink > 1:
            firsts[key] = (st.st_size, content)
        entries.append(line)
    else:
        link = os.readlink(full) if kind == tarfile.SYMTYPE else ""
        entries.append(_fields(name, kind, st, link, 0, "", read_xattrs(full, follow=False)[0]))
    if tree is not None:
        tree[name] = (st.st_mtime_ns, entries[-1], kind == tarfile.REGTYPE and st.st_nlink > 1)
    return hashed


# ------------------------------------------------------------------------------------------------
# after Docker's extraction: holes and attributes


def root_member(root, name="vol"):
    """A one-member tar (bytes) that, put into the mount point's parent, gives the volume root ``root``.

    ``root`` is the ``root`` of a ``_tarsafe.scan_stream`` summary. Docker skips the member ``.``
    of an archive when the directory exists, but applies a named directory member to an existing
    directory: mode, owner, xattrs and (after the walk) mtime.
    """
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = root["mode"]
    info.uid, info.gid, info.mtime = root["uid"], root["gid"], root["mtime"]
    info.uname = info.gname = ""
    info.pax_headers = {PAX_XATTR + k: xattr_text(v) for k, v in sorted(root["xattrs"].items())}
    data = _header(info) + b"\0" * (2 * _BLOCK)
    return data + b"\0" * (-len(data) % _RECORD)


def holes(sparse_map, size, block_size):
    """The ranges ``[(offset, length)]`` between the data segments of a map, shrunk to whole ``block_size`` blocks.

    Only whole blocks can be deallocated; the partial blocks at the ends of a hole hold zeros
    either way.
    """
    out = []
    pos = 0
    for offset, length in [*sorted((o, n) for o, n in sparse_map if n), (size, 0)]:
        start = -(-pos // block_size) * block_size
        end = min(offset, size) // block_size * block_size
        if end > start:
            out.append((start, end - start))
        pos = max(pos, offset + length)
    return out


def _fallocate():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    func = libc.fallocate
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    func.restype = ctypes.c_int
    return func


def open_below(root, name, flags):
    """Open ``name`` (``dir/file``) below the directory ``root`` without following any symlink."""
    parts = name.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def punch_holes(root, sparse, notes):
    """Deallocate the holes of the sparse files ``[(name, size, map)]`` restored below ``root``; note failures."""
    if not sparse:
        return 0
    fallocate = _fallocate()
    done = 0
    for name, size, sparse_map in sparse:
        try:
            fd = open_below(root, name, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            notes.add("sparse", name, f"it cannot be opened in the restored volume ({exc.strerror})")
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                notes.add("sparse", name, "the restored file is not the archived one")
                continue
            for offset, length in holes(sparse_map, size, st.st_blksize or 4096):
                if fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
                    err = ctypes.get_errno()
                    reason = f"the filesystem cannot punch holes ({os.strerror(err)}); it stays fully allocated"
                    notes.add("sparse", name, reason)
                    break
            else:
                done += 1
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))  # punching holes moves the mtime
        finally:
            os.close(fd)
    return done


def verify_xattrs(root, expected, root_xattrs, notes):
    """Check that the restored entries below ``root`` carry the attributes ``[(name, [attributes])]`` listed."""
    checks = [(".", sorted(root_xattrs))] if root_xattrs else []
    for name, attributes in checks + list(expected):
        target = root if name == "." else None
        if target is None:
            parent, _sep, base = name.rpartition("/")
            try:
                dirfd = open_below(root, parent, os.O_RDONLY | os.O_DIRECTORY) if parent else None
            except OSError as exc:
                for attribute in attributes:
                    notes.add(f"xattr {attribute}", name, f"its directory cannot be opened ({exc.strerror})")
                continue
            fd = dirfd if dirfd is not None else os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            target = f"/proc/self/fd/{fd}/{base}"
        try:
            try:
                present = set(os.listxattr(target, follow_symlinks=False))
            except OSError as exc:
                present = set()
                if exc.errno not in _NO_XATTRS and exc.errno != errno.ENOENT:
                    raise
            for attribute in attributes:
                if attribute not in present:
                    notes.add(
                        f"xattr {attribute}",
                        name,
                        "the engine or the volume's filesystem did not keep it (Docker ignores ENOTSUP and EPERM)",
                    )
        finally:
            if name != ".":
                os.close(fd)
    return notes
