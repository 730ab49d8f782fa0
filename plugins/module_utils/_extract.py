# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The mountpoint fast path of a volume restore: a volume archive written straight into a new volume's
directory on this host, in one pass over the bundle file.

The pass hashes the file as it is read (size and sha256 against the manifest), decompresses it (bounded
by ``raw_size``), checks every member with the same rules as the scan a restore through the engine runs
first (``_tarsafe.TarChecker``: no absolute path, no ``..``, nothing written through a symlink, hard links
to earlier regular files only, device nodes only when allowed) before anything of that member is written,
and notes what the engine path applies afterwards (the root entry, sparse maps, xattr names). Each entry
is made below the volume's directory through directory file descriptors, never following a symlink.

Only a volume the restore has just created takes this path: when the file's digest does not match, the
archive is truncated or a member is refused, the caller removes the volume with everything written into
it, as it would after a failed extraction by the engine.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile

from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    CHUNK_SIZE,
    TAR_BUFSIZE,
    IterReader,
    decompressed_chunks,
)
from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import (
    TarChecker,
    UnsafeTarError,
    _end_marker_tarinfo,
    _path,
    _remember,
    member_xattrs,
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class ExtractError(Exception):
    """The archive cannot be written into the volume; the message says why."""


class HashingFile:
    """A binary file whose reads are counted and hashed (sha256): the bundle file as the manifest records it."""

    def __init__(self, handle):
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size=-1):
        data = self.handle.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer):
        count = self.handle.readinto(buffer)
        if count:
            self.sha256.update(memoryview(buffer)[:count])
            self.size += count
        return count

    def close(self):
        self.handle.close()


def verified_chunks(handle, artifact, what, decrypt=None, chunk_size=CHUNK_SIZE):
    """The decompressed chunks of an artifact file (``handle``, open), bounded by its ``raw_size``; at the end
    its size and sha256 must be the manifest's. Raises UnsafeTarError when they are not."""
    hashed = HashingFile(handle)
    source = decrypt(hashed) if decrypt is not None else hashed
    total = 0
    for chunk in decompressed_chunks(source, artifact["compression"], chunk_size, what):
        total += len(chunk)
        if total > artifact["raw_size"]:
            raise UnsafeTarError(
                f"{what} decompresses to more than its recorded raw_size of {artifact['raw_size']} bytes"
            )
        yield chunk
    while hashed.read(chunk_size):  # what a decompressor left unread still counts
        pass
    if hashed.size != artifact["size"] or hashed.sha256.hexdigest() != artifact["sha256"]:
        raise UnsafeTarError(
            f"{what} does not match the manifest (size {hashed.size}, sha256 {hashed.sha256.hexdigest()[:16]}; "
            f"recorded {artifact['size']}, {str(artifact['sha256'])[:16]}): the archive is corrupt or was changed"
        )


def new_summary():
    return {
        "members": 0,
        "bytes": 0,
        "has_sparse": False,
        "has_xattrs": False,
        "problem_count": 0,
        "root": None,
        "sparse": [],
        "xattrs": [],
        "lists_complete": True,
        "problems": [],
        "complete": False,
    }


class Extractor:
    """Write checked tar members below ``root`` (an existing, empty directory)."""

    def __init__(self, root, allow_devices=False):
        self.root = root
        self.checker = TarChecker(allow_devices)
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.directories = []  # (relative name, mode, uid, gid, mtime), applied last (deepest first)
        self.bytes_written = 0

    def close(self):
        os.close(self.root_fd)

    def _parent(self, name):
        """A descriptor of the directory that holds ``name``, making missing directories on the way (0700 until
        their own member, if any, sets them)."""
        parts = name.split("/")[:-1]
        fd = os.dup(self.root_fd)
        try:
            for part in parts:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _attributes(self, fd_or_name, member, dir_fd=None, symlink=False):
        xattrs = member_xattrs(member)
        if symlink:
            os.chown(fd_or_name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
            for key, value in xattrs.items():
                os.setxattr(f"/proc/self/fd/{dir_fd}/{fd_or_name}", key, value, follow_symlinks=False)
            os.utime(fd_or_name, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)
            return
        os.chown(fd_or_name, member.uid, member.gid)
        os.chmod(fd_or_name, member.mode & 0o7777)  # after chown, which clears set-id bits
        for key, value in xattrs.items():
            os.setxattr(fd_or_name, key, value)
        os.utime(fd_or_name, (member.mtime, member.mtime))

    def add(self, member, data):
        """Write one member (``data``: its file object, for a regular file)."""
        self.checker(member)  # raises UnsafeTarError before anything of this member is written
        name = _path(member.name)
        if name == ".":
            return  # the root entry: applied by restore_metadata, as on the engine path
        base = name.rsplit("/", 1)[-1]
        parent = self._parent(name)
        try:
            if member.isreg():
                fd = os.open(base, _NEW_FILE, 0o600, dir_fd=parent)
                try:
                    left = member.size
                    while left:
                        block = data.read(min(CHUNK_SIZE, left))
                        if not block:
                            raise ExtractError(f"member {member.name!r} ends before its recorded size")
                        _write_all(fd, block)
                        left -= len(block)
                        self.bytes_written += len(block)
                    self._attributes(fd, member)
                finally:
                    os.close(fd)
            elif member.isdir():
                try:
                    os.mkdir(base, 0o700, dir_fd=parent)
                except FileExistsError:
                    pass
                fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
                try:
                    os.chown(fd, member.uid, member.gid)
                    for key, value in member_xattrs(member).items():
                        os.setxattr(fd, key, value)
                finally:
                    os.close(fd)
                self.directories.append((name, member.mode & 0o7777, member.mtime))
            elif member.issym():
                os.symlink(member.linkname, base, dir_fd=parent)
                self._attributes(base, member, dir_fd=parent, symlink=True)
            elif member.islnk():
                target = _path(member.linkname)
                source = self._parent(target)
                try:
                    os.link(
                        target.rsplit("/", 1)[-1], base, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False
                    )
                finally:
                    os.close(source)
            else:
                kind = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO}
                os.mknod(base, 0o600 | kind[member.type], os.makedev(member.devmajor, member.devminor), dir_fd=parent)
                fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                try:
                    path = f"/proc/self/fd/{fd}"
                    os.chown(path, member.uid, member.gid)
                    os.chmod(path, member.mode & 0o7777)
                    for key, value in member_xattrs(member).items():
                        os.setxattr(path, key, value)
                    os.utime(path, (member.mtime, member.mtime))
                finally:
                    os.close(fd)
        finally:
            os.close(parent)

    def finish(self):
        """Directory modes and mtimes, deepest first (writing into a directory moves its mtime)."""
        for name, mode, mtime in sorted(self.directories, key=lambda d: d[0].count("/"), reverse=True):
            parent = self._parent(name)
            try:
                fd = os.open(name.rsplit("/", 1)[-1], _DIR_FLAGS, dir_fd=parent)
            finally:
                os.close(parent)
            try:
                os.chmod(fd, mode)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


def _write_all(fd, block):
    view = memoryview(block)
    while view:
        done = os.write(fd, view)
        view = view[done:]


def extract(chunks, root, allow_devices=False, max_bytes=None):
    """Write the tar stream ``chunks`` below ``root``; the scan summary (as ``_tarsafe.scan_stream``'s) and the
    bytes written. Raises UnsafeTarError (a refused member, a truncated or unreadable stream, more file data
    than ``max_bytes``) or OSError; what was written stays for the caller to remove."""
    fileobj = IterReader(iter(chunks))
    summary = new_summary()
    state = {"end_marker": False}
    extractor = Extractor(root, allow_devices)
    try:
        try:
            with tarfile.open(
                fileobj=fileobj, mode="r|", bufsize=TAR_BUFSIZE, tarinfo=_end_marker_tarinfo(state)
            ) as archive:
                for member in iter(archive.next, None):
                    del archive.members[:]
                    if archive.pax_headers:
                        raise UnsafeTarError("the archive has a PAX global header, which tar readers apply differently")
                    summary["members"] += 1
                    if member.isreg():
                        summary["bytes"] += member.size
                        if max_bytes is not None and summary["bytes"] > max_bytes:
                            raise UnsafeTarError(
                                f"its files hold at least {summary['bytes']} bytes (sparse files at their apparent "
                                f"size), more than the recorded {max_bytes} bytes (member {member.name!r})"
                            )
                    data = archive.extractfile(member) if member.isreg() and member.size else None
                    try:
                        extractor.add(member, data)
                    except ExtractError as exc:
                        raise UnsafeTarError(str(exc)) from None
                    _remember(summary, member)
        except tarfile.TarError as exc:
            raise UnsafeTarError(f"the stream is not a readable tar archive: {exc}") from exc
        if not state["end_marker"]:
            raise UnsafeTarError("the archive ends without an end-of-archive marker: it is truncated or damaged")
        while fileobj.read(CHUNK_SIZE):  # the padding, so that a hashing reader behind it sees the whole file
            pass
        extractor.finish()
    finally:
        extractor.close()
    summary["complete"] = True
    return summary, extractor.bytes_written


class LocalVolume:
    """What ``_restore.restore_metadata`` needs of a volume written on the fast path: its directory, and the
    root entry applied to it directly."""

    def __init__(self, path, volume):
        self.path = path
        self.volume = volume

    def local(self):
        return self.path, None

    def put_root(self, root):
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            os.chown(fd, root["uid"], root["gid"])
            os.chmod(fd, root["mode"])
            for key, value in (root.get("xattrs") or {}).items():
                os.setxattr(fd, key, value)
            os.utime(fd, (root["mtime"], root["mtime"]))
        finally:
            os.close(fd)


def fast_path_reason(base_url, info, definition):
    """None when a new volume of ``definition`` will be a directory this process writes, else why not."""
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import local_reason

    return local_reason(
        base_url,
        info.get("Name"),
        info.get("SecurityOptions"),
        "volume",
        driver=definition.get("Driver") or "local",
        options=definition.get("DriverOpts") or {},
        path="/",  # the directory itself is checked once the volume exists
    )
