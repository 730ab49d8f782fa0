# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Tar at the level of its 512-byte blocks, for ``_tarsafe.normalised_chunks``' common case.

A volume holds tens of thousands of small files. Python's tarfile spends about 30 microseconds on
each member in streaming mode (its buffer, its header objects, its writer), which made the check
of a restore cost more than the extraction itself. Most members of a volume archive are plain: one
ustar header block, no extension header. This module reads those in a few microseconds, and writes
the normalised header of a plain member directly:

* ``BlockSource``: the tar stream (a file object or an iterable of chunks) as tarfile's file object
  (``read``, ``tell``, ``seek`` forward only) and as slices of its chunks (``slices``), without
  copying a chunk to read a header.
* ``plain_member(block)``: the ``tarfile.TarInfo`` that ``tarfile.TarInfo.frombuf`` makes of a header
  block, for the blocks whose reading is simple; None for every other block (extension headers,
  GNU types, base-256 numbers, an end or truncated block, a bad checksum...), which the caller
  then reads with tarfile itself. The unit tests hold the two readers to the same answer.
* ``ustar_header(...)``: the header block tarfile's PAX writer makes for a member that needs no
  extended record; None when it would need one.
* ``Batches``: the output gathered into chunks of about ``chunk_size`` bytes, one pipe write each.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zlib

BLOCK = tarfile.BLOCKSIZE
_MAGICS = (b"ustar\x0000", b"ustar  \x00")  # POSIX ustar, GNU
_PLAIN_TYPES = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_ID_LIMIT, _SIZE_LIMIT = 8**7, 8**11  # what a ustar number field holds (7 and 11 octal digits)
_NAME_MAX, _OWNER_MAX = 100, 32


class BlockSource(io.RawIOBase):
    """A tar stream read once, from a file object or an iterable of byte chunks."""

    def __init__(self, source, chunk_size):
        super().__init__()
        if hasattr(source, "read"):
            self._chunks = iter(lambda: source.read(chunk_size), b"")
        else:
            self._chunks = iter(source)
        self._chunk = b""
        self._pos = 0
        self._base = 0  # the stream offset of self._chunk[0]

    def readable(self):
        return True

    def seekable(self):
        return False

    def _fill(self):
        """Whether a byte is left, with ``self._chunk[self._pos]`` the next one."""
        while self._pos >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._base += len(self._chunk)
            self._chunk, self._pos = bytes(chunk), 0
        return True

    def tell(self):
        return self._base + self._pos

    def peek(self, size):
        """The next ``size`` bytes (fewer at the end), without reading past them.

        Joins the current chunk's rest with the next chunks when ``size`` crosses into them."""
        while len(self._chunk) - self._pos < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            rest = self._chunk[self._pos :]
            self._base += self._pos
            self._chunk, self._pos = (rest + bytes(chunk) if rest else bytes(chunk)), 0
        return self._chunk[self._pos : self._pos + size]

    def advance(self, size):
        """Read past ``size`` bytes that ``peek`` returned."""
        self._pos += size

    def slices(self, size):
        """Yield the next ``size`` bytes as memoryviews of the chunks (fewer bytes at the end)."""
        while size > 0 and self._fill():
            take = min(size, len(self._chunk) - self._pos)
            yield memoryview(self._chunk)[self._pos : self._pos + take]
            self._pos += take
            size -= take

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        if self._fill() and self._pos + size <= len(self._chunk):
            data = self._chunk[self._pos : self._pos + size]
            self._pos += size
            return data
        return b"".join(self.slices(size))

    def skip(self, size):
        """Read past ``size`` bytes; return how many there were."""
        if 0 <= size <= len(self._chunk) - self._pos:  # within the current chunk (a member's padding)
            self._pos += size
            return size
        return sum(len(piece) for piece in self.slices(size))

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_CUR:
            offset += self.tell()
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a tar stream seeks only from its start or its current position")
        if offset < self.tell():
            raise io.UnsupportedOperation(f"a tar stream cannot seek back from {self.tell()} to {offset}")
        self.skip(offset - self.tell())
        return self.tell()


def small_sum(data):
    """``sum(data)`` for at most 256 bytes, several times faster.

    Adler-32 (``zlib.adler32``) keeps ``1 + sum(data) % 65521`` in its low 16 bits. 256 bytes sum to at most
    256 * 255 = 65280, below the modulus, so those bits less one are the exact sum. Header checksums use it.
    """
    return (zlib.adler32(data) & 0xFFFF) - 1


def block_sum(block):
    """``sum(block)`` of a 512-byte header block (``small_sum`` of each half)."""
    view = memoryview(block)
    return small_sum(view[:256]) + small_sum(view[256:])


def _text(field):
    return field.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def plain_member(block):
    """The TarInfo tarfile reads from ``block`` when it is a plain ustar header, else None.

    Plain: 512 bytes, POSIX or GNU magic, a regular file, directory, symlink or hard link, octal
    numbers, and the unsigned checksum. Such a member has no extension header and no sparse map,
    so its block alone says everything tarfile would make of it (``TarInfo.frombuf``).
    """
    if len(block) != BLOCK or block[156:157] not in _PLAIN_TYPES or block[257:265] not in _MAGICS:
        return None
    (name, mode, uid, gid, size, mtime, checksum, kind, linkname, _magic, uname, gname, major, minor, prefix) = (
        _HEADER.unpack(block)
    )
    # tarfile's ``nti`` for each octal field: it cuts the field at its first NUL, decodes it as ASCII and strips
    # Unicode whitespace before ``int(text or "0", 8)``. ``int`` of the same bytes reads the same text, and raises
    # ValueError (the block is then left to tarfile) where the two could differ: a byte over 127 (a base-256
    # number among them), a field of spaces, the separators 0x1c-0x1f that only ``str.strip`` removes.
    unsigned = block_sum(block) - sum(checksum) + 256  # the sum with the checksum field as 8 spaces
    try:
        checksum, mode, uid, gid, size, mtime, major, minor = [
            int(field.partition(b"\0")[0] or b"0", 8) for field in (checksum, mode, uid, gid, size, mtime, major, minor)
        ]
    except ValueError:
        return None
    if checksum != unsigned:  # tarfile takes the signed sum too
        return None
    member = tarfile.TarInfo(name.partition(b"\0")[0].decode("utf-8", "surrogateescape"))
    member.mode, member.uid, member.gid, member.size, member.mtime, member.devmajor, member.devminor = (
        mode,
        uid,
        gid,
        size,
        mtime,
        major,
        minor,
    )
    member.chksum, member.type = checksum, kind
    member.linkname, member.uname, member.gname = _text(linkname), _text(uname), _text(gname)
    if kind == tarfile.DIRTYPE:
        member.name = member.name.rstrip("/")
    prefix = _text(prefix)
    if prefix:  # none of the plain types is a GNU type
        member.name = prefix + "/" + member.name
    return member


def ustar_header(name, kind, mode, uid, gid, size, mtime, linkname, uname, gname):
    """The ustar block tarfile's PAX writer makes for these fields when they need no extended record.

    None when one would be needed (a name or link over 100 bytes, text that is not ASCII, a number
    beyond its field); the caller then writes the member with tarfile. Directory names get the
    trailing slash tarfile adds. Device numbers are not written: plain members have none.
    """
    if kind == tarfile.DIRTYPE:
        name += "/"
    if not (name.isascii() and linkname.isascii() and uname.isascii() and gname.isascii()):
        return None
    if len(name) > _NAME_MAX or len(linkname) > _NAME_MAX or len(uname) > _OWNER_MAX or len(gname) > _OWNER_MAX:
        return None
    if not (0 <= uid < _ID_LIMIT and 0 <= gid < _ID_LIMIT):
        return None
    if not (0 <= size < _SIZE_LIMIT and isinstance(mtime, int) and 0 <= mtime < _SIZE_LIMIT):
        return None
    block = _HEADER.pack(
        name.encode("ascii"),
        b"%07o\0" % (mode & 0o7777),
        b"%07o\0" % uid,
        b"%07o\0" % gid,
        b"%011o\0" % size,
        b"%011o\0" % mtime,
        b"        ",
        kind,
        linkname.encode("ascii"),
        _MAGICS[0],
        uname.encode("ascii"),
        gname.encode("ascii"),
        b"",
        b"",
        b"",
    )
    return block[:148] + b"%06o\0 " % block_sum(block) + block[156:]


class Batches:
    """Pieces of output gathered into chunks of at least ``size`` bytes (the last one may be shorter)."""

    def __init__(self, size):
        self.size = size
        self._pieces = []
        self._held = 0

    def add(self, piece):
        """Hold ``piece``; return a full chunk to pass on, or None."""
        self._pieces.append(piece)
        self._held += len(piece)
        return self.take() if self._held >= self.size else None

    def take(self):
        """Everything held, as one bytes object (None if nothing is)."""
        if not self._pieces:
            return None
        chunk = b"".join(self._pieces)
        self._pieces, self._held = [], 0
        return chunk
