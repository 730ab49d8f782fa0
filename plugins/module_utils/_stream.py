# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The one streaming mechanism of ferry.docker: chunks -> compressor -> sha256 -> atomic file, and back.

Every module that moves bytes goes through here, so that no archive is ever held in memory:
memory use is bounded by a few chunks whatever the archive size. The sha256 and size recorded for
an artifact are those of the file as stored on disk (the compressed bytes), so a bundle can be
verified, or copied and verified again, without decompressing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import struct
import sys
import tempfile
import threading
import zlib

ZSTD_IMPORT_ERROR = None
try:
    import zstandard
except ImportError as exc:  # reported by compression_available(), never at import time
    zstandard = None
    ZSTD_IMPORT_ERROR = str(exc)

COMPRESSIONS = ("zstd", "gzip", "none")
CHUNK_SIZE = 1024 * 1024  # large enough that per-chunk Python overhead is negligible next to compression
# Read buffer of tarfile's stream mode ("r|"). tarfile copies its whole pending buffer on every
# header read, so a 1 MiB buffer made scanning an archive of small files twice as slow (1.75 s
# instead of 1.1 s of CPU for 10,000 files in 256 MiB); large members are still read in 64 KiB steps.
TAR_BUFSIZE = 64 * 1024
# Multi-threaded zstd keeps about (workers + 2) jobs of input and output in memory. Its default job
# size at level 3 is 8 MiB, which put the module's peak RSS above 100 MiB on two CPUs and grows with
# the CPU count (about 380 MiB with 16 workers). 2 MiB jobs and at most 4 workers bound it to about
# 40 MiB whatever the machine; the archive is about 2 % larger, and a Docker engine streams an
# archive slower than 4 workers compress it (see BENCHMARKS.md).
ZSTD_JOB_SIZE = 2 * 1024 * 1024
ZSTD_MAX_WORKERS = 4
# A pipelined ArtifactWriter (write_stream) hashes and writes the compressed output in a thread of its
# own, at most PIPELINE_DEPTH pieces behind the compressor: the calling thread goes on reading (a
# directory walk, an engine stream) and feeding zstd's workers meanwhile. A thread for the compressor too
# was not measurably faster on 2 CPUs (zstd's workers already run beside the caller) and peaked 5-10 MiB higher.
PIPELINE_DEPTH = 2
# The writer thread starts the disk writing what it has written after every SYNC_BYTES (Linux
# sync_file_range, which does not wait), so the fsync before the rename finds little left: a whole GiB
# of archive took 0.3 s there, in the critical path. fdatasync instead measured the same 0.3 s, spent
# in the writer thread, where the reader then waited for it.
SYNC_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2

_SUFFIXES = {"zstd": ".zst", "gzip": ".gz", "none": ""}
_GZIP_WBITS = 31  # zlib window bits for a gzip header and trailer
_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE_MASK = 0xFFFFFFF0
_ZSTD_SKIPPABLE_MAGIC = 0x184D2A50


class FerryError(Exception):
    """Base of the errors ferry.docker raises with a message meant for the user."""


class ArtifactError(FerryError):
    """An artifact file is missing, corrupt, truncated or cannot be written."""


def suffix(compression):
    """File name suffix for ``compression`` (``.zst``, ``.gz`` or the empty string)."""
    return _SUFFIXES[compression]


def compression_available(compression):
    """``None`` if ``compression`` can be used here, else the name of the missing Python library."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; use one of {', '.join(COMPRESSIONS)}")
    if compression == "zstd" and zstandard is None:
        return "zstandard"
    return None


def _require(compression):
    missing = compression_available(compression)
    if missing:
        raise ArtifactError(
            f"compression {compression} needs the Python library {missing} ({ZSTD_IMPORT_ERROR}); "
            "install it on this host or choose another compression"
        )


_START_WRITEBACK = []  # [function or None], found on first use


def _start_writeback(fd, offset, length):
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to disk, without waiting;
    nothing where the call does not exist (it is only a head start for the fsync that follows)."""
    if not _START_WRITEBACK:
        try:
            import ctypes

            func = ctypes.CDLL(None, use_errno=True).sync_file_range
            func.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
            func.restype = ctypes.c_int
        except (ImportError, OSError, AttributeError):
            func = None
        _START_WRITEBACK.append(func)
    func = _START_WRITEBACK[0]
    if func is not None:
        func(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # a failure only means no head start


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Identity:
    """Compressor interface for ``compression: none``."""

    @staticmethod
    def compress(data):
        return data

    @staticmethod
    def flush():
        return b""


def zstd_workers(threads):
    """Number of zstd worker threads for ``threads`` (-1: one per CPU, at most ZSTD_MAX_WORKERS; 0: none)."""
    if threads is None or threads < 0:
        return max(1, min(os.cpu_count() or 1, ZSTD_MAX_WORKERS))
    return threads


def new_compressor(compression, level=None, threads=-1):
    """A streaming compressor (``compress(data)``, ``flush()``) as the artifacts use; none for ``none``."""
    _require(compression)
    return _compressor(compression, level, threads)


def _compressor(compression, level, threads):
    if compression == "zstd":
        workers = zstd_workers(threads)
        params = zstandard.ZstdCompressionParameters.from_level(
            3 if level is None else level,
            threads=workers,
            job_size=ZSTD_JOB_SIZE if workers else 0,
            write_checksum=True,
        )
        return zstandard.ZstdCompressor(compression_params=params).compressobj()
    if compression == "gzip":
        return zlib.compressobj(6 if level is None else level, zlib.DEFLATED, _GZIP_WBITS)
    return _Identity()


_DONE = object()


class _Stage:
    """A thread that calls ``work`` on each item ``put`` to it, in order, at most ``depth`` items behind.

    A failure of ``work`` is kept and raised in the producer by its next ``put`` and by ``close``; the
    items still queued are then dropped. ``cancel()`` drops what is queued and ends the thread without
    raising.
    """

    def __init__(self, work, depth, name):
        self._work = work
        self._queue = queue.Queue(maxsize=max(1, int(depth)))
        self._dropping = False
        self.error = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self.error is None and not self._dropping:
                try:
                    self._work(item)
                except BaseException as exc:  # raised in the producer, by put or close
                    self.error = exc

    def put(self, item):
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def _end(self):
        if self._thread.is_alive():
            self._queue.put(_DONE)  # the thread keeps taking items, so this never waits for long
            self._thread.join()

    def close(self):
        """Wait until every item put has been worked on; raise the first failure."""
        self._end()
        if self.error is not None:
            raise self.error

    def cancel(self):
        self._dropping = True
        self._end()


class ArtifactWriter:
    """Write one artifact atomically: raw bytes in, compressed, hashed and stored as ``dest_dir/filename``.

    The data goes to a temporary file in ``dest_dir`` (created with ``mode``) that only ``commit()``
    moves into place, so a reader never sees a partial artifact and a failure leaves the
    destination untouched. Leaving the ``with`` block with an exception calls ``abort()``.
    ``threads=-1`` lets zstd use one worker per CPU, like ``zstd -T0``, but at most ZSTD_MAX_WORKERS,
    so that memory stays bounded on large machines; ``threads=0`` compresses in the calling thread.
    ``encrypt``, when given, is a factory ``encrypt(file)`` of an encryptor (``write``, ``abort`` and
    ``close``, which returns the sha256 and size of what it wrote to ``file``; see ``_trust.Encryptor``)
    put after the compressor: the file then holds ciphertext, and ``size`` and ``sha256`` describe it.
    With ``pipeline=True`` the compressed output is hashed and written in a thread of its own (see
    PIPELINE_DEPTH): ``write`` returns once it is queued, so without compression it keeps a reference to
    the chunk (a chunk that is not ``bytes`` is copied first); a failure of that thread is raised by a
    later ``write`` or by ``commit``.
    """

    def __init__(
        self,
        dest_dir,
        filename,
        compression="zstd",
        level=None,
        mode=0o600,
        threads=-1,
        encrypt=None,
        pipeline=False,
    ):
        if os.path.basename(filename) != filename or filename in ("", ".", ".."):
            raise ValueError(f"artifact file name {filename!r} must be a plain file name")
        _require(compression)
        self.dest_dir = os.path.abspath(dest_dir)
        self.filename = filename
        self.path = os.path.join(self.dest_dir, filename)
        self.compression = compression
        self.bytes_read = 0
        self.bytes_written = 0
        self._sha256 = hashlib.sha256()
        self._compressor = _compressor(compression, level, threads)
        self._encryptor = None
        self._store_stage = None
        self._synced = 0  # bytes_written when a pipelined writer last started the writeback
        try:
            fd, self._tmp_path = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=self.dest_dir)
        except OSError as exc:
            raise ArtifactError(f"cannot create a file in {self.dest_dir}: {exc.strerror or exc}") from exc
        try:
            os.fchmod(fd, mode)
            self._file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self._tmp_path)
            raise
        if encrypt is not None:
            try:
                self._encryptor = encrypt(self._file)
            except BaseException:
                self.abort()
                raise
        if pipeline:
            self._store_stage = _Stage(self._store_and_sync, PIPELINE_DEPTH, f"ferry-store-{filename}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()

    def _store(self, data):
        if data:
            self._sha256.update(data)
            self._file.write(data)
            self.bytes_written += len(data)

    def _feed(self, data):
        if self._encryptor is None:
            self._store(data)
        elif data:
            self._encryptor.write(data)

    def _store_and_sync(self, data):
        """The writer thread's work: hash and write, and start the disk writing every SYNC_BYTES."""
        self._feed(data)
        if self._encryptor is None and self.bytes_written - self._synced >= SYNC_BYTES:
            self._file.flush()
            _start_writeback(self._file.fileno(), self._synced, self.bytes_written - self._synced)
            self._synced = self.bytes_written

    def write(self, chunk):
        """Feed raw (uncompressed) bytes."""
        self.bytes_read += len(chunk)
        try:
            data = self._compressor.compress(chunk)
            if self._store_stage is None:
                self._feed(data)
            elif data:
                self._store_stage.put(data if isinstance(data, bytes) else bytes(data))
        except OSError as exc:
            raise ArtifactError(f"writing {self.path} failed: {exc.strerror or exc}") from exc

    def commit(self):
        """Finish, fsync and move the file into place; return what was written.

        Returns ``{"file", "path", "compression", "size", "sha256", "raw_size", "unchanged"}`` where
        ``size`` and ``sha256`` describe the file on disk and ``raw_size`` the uncompressed bytes.
        When a file with the same size and sha256 already exists at the destination it is kept
        untouched, the new one is discarded and ``unchanged`` is ``True``.
        """
        try:
            if self._store_stage is None:
                self._feed(self._compressor.flush())
            else:
                self._store_stage.put(self._compressor.flush())
                self._store_stage.close()
                self._store_stage = None
            if self._encryptor is not None:
                digest, self.bytes_written = self._encryptor.close()
            else:
                digest = self._sha256.hexdigest()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            unchanged = _same_file(self.path, digest, self.bytes_written)
            if unchanged:
                os.unlink(self._tmp_path)
            else:
                os.replace(self._tmp_path, self.path)
                _fsync_dir(self.dest_dir)
        except OSError as exc:
            self.abort()
            raise ArtifactError(f"writing {self.path} failed: {exc.strerror or exc}") from exc
        except BaseException:
            self.abort()
            raise
        written = {
            "file": self.filename,
            "path": self.path,
            "compression": self.compression,
            "size": self.bytes_written,
            "sha256": digest,
            "raw_size": self.bytes_read,
            "unchanged": unchanged,
        }
        if self._encryptor is not None:
            written["encryption"] = "age"
        return written

    def abort(self):
        """Discard the temporary file; the destination is left as it was. Safe to call twice."""
        if self._store_stage is not None:
            self._store_stage.cancel()
            self._store_stage = None
        if self._encryptor is not None:
            self._encryptor.abort()
        self._file.close()
        try:
            os.unlink(self._tmp_path)
        except FileNotFoundError:
            pass


def _same_file(path, sha256, size):
    try:
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            return False
    except OSError:
        return False
    return sha256_file(path)[0] == sha256


def write_stream(chunks, dest_dir, filename, pipeline=True, **kwargs):
    """Write an iterable of raw byte chunks (e.g. a Docker SDK stream) as an artifact; see ArtifactWriter.

    Pipelined by default: the output is hashed and written in a thread of its own while the calling thread
    reads and compresses the next chunks."""
    with ArtifactWriter(dest_dir, filename, pipeline=pipeline, **kwargs) as writer:
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit()


def sha256_file(path, chunk_size=CHUNK_SIZE):
    """Return ``(sha256 hexdigest, size)`` of a file, reading it in chunks."""
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


def verify_file(path, sha256, size):
    """Raise ArtifactError unless ``path`` has exactly ``size`` bytes with the given sha256."""
    advice = "the archive is corrupt or truncated; capture it again or copy it again from the source bundle"
    try:
        actual_size = os.path.getsize(path)
    except OSError as exc:
        raise ArtifactError(f"artifact {path} cannot be read ({exc.strerror}); {advice}") from exc
    if actual_size != size:
        raise ArtifactError(f"artifact {path} has {actual_size} bytes, expected {size}: {advice}")
    actual_sha256 = sha256_file(path)[0]
    if actual_sha256 != sha256:
        raise ArtifactError(f"artifact {path} has sha256 {actual_sha256}, expected {sha256}: {advice}")


class _ZstdFrames:
    """Follows the frame and block headers of a zstd stream (never the payload) to tell whether it ends whole.

    The zstandard decoders stop silently when their input ends inside a frame, so a truncated file
    would decompress to a short output without error. Walking headers costs a few Python steps per
    128 KiB block, not per byte.
    """

    def __init__(self):
        self.frames = 0
        self._skip = 0  # payload bytes to pass over before the next header
        self._header = b""  # bytes of the header being collected
        self._need = 4  # size of the header being collected
        self._state = "magic"
        self._checksum = False

    def feed(self, data):
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                pos += step
                self._skip -= step
                continue
            take = self._need - len(self._header)
            self._header += data[pos : pos + take]
            pos += take
            if len(self._header) == self._need:
                header, self._header = self._header, b""
                self._parse(header)

    def _parse(self, header):
        if self._state == "magic":
            magic = struct.unpack("<I", header)[0]
            if magic == _ZSTD_MAGIC:
                self._state, self._need = "frame", 1
            elif magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE_MAGIC:
                self._state, self._need = "skippable", 4
            else:
                raise ArtifactError(f"unknown zstd frame magic 0x{magic:08x}")
        elif self._state == "skippable":
            self._skip = struct.unpack("<I", header)[0]
            self._state, self._need = "magic", 4
        elif self._state == "frame":
            descriptor = header[0]
            single_segment = descriptor >> 5 & 1
            self._checksum = bool(descriptor >> 2 & 1)
            content_size_bytes = (single_segment, 2, 4, 8)[descriptor >> 6]
            self._skip = (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3] + content_size_bytes
            self._state, self._need = "block", 3
        else:  # block header: last-block flag, block type, block size
            value = int.from_bytes(header, "little")
            block_type = value >> 1 & 3
            self._skip = 1 if block_type == 1 else value >> 3  # an RLE block stores one byte
            if value & 1:
                self._skip += 4 if self._checksum else 0
                self.frames += 1
                self._state, self._need = "magic", 4

    @property
    def complete(self):
        return self.frames > 0 and self._state == "magic" and not self._skip and not self._header


class _TeeReader:
    """File-like object passing what is read from ``raw`` to ``observer`` too."""

    def __init__(self, raw, observer):
        self._raw = raw
        self._observer = observer

    def read(self, size=-1):
        data = self._raw.read(size)
        self._observer(data)
        return data


def _read_chunks(f, chunk_size):
    while True:
        data = f.read(chunk_size)
        if not data:
            return
        yield data


def _unzstd(f, chunk_size):
    frames = _ZstdFrames()
    reader = zstandard.ZstdDecompressor().stream_reader(
        _TeeReader(f, frames.feed), read_size=chunk_size, read_across_frames=True
    )
    yield from _read_chunks(reader, chunk_size)
    if not frames.complete:
        raise ArtifactError("the zstd stream ends in the middle of a frame")


def _gunzip(f, chunk_size):
    decoder = zlib.decompressobj(_GZIP_WBITS)
    for data in _read_chunks(f, chunk_size):
        while data:
            if decoder.eof:  # concatenated gzip members, as gzip(1) accepts them
                decoder = zlib.decompressobj(_GZIP_WBITS)
            out = decoder.decompress(data, chunk_size)  # bounded output, even for long runs of zeros
            if out:
                yield out
            data = decoder.unconsumed_tail or decoder.unused_data
    out = decoder.flush()
    if out:
        yield out
    if not decoder.eof:
        raise ArtifactError("the gzip stream ends before its end-of-stream marker")


def read_decompressed(path, compression, chunk_size=CHUNK_SIZE, decrypt=None, observe=None):
    """Yield the raw (decompressed) bytes of an artifact file in chunks of at most ``chunk_size``.

    A corrupt stream, or one that ends early, raises ArtifactError rather than yielding short data.
    ``decrypt``, for an encrypted artifact, is a factory ``decrypt(f)`` of a reader of the plaintext
    of ``f`` (``read``, ``close``; see ``_trust.DecryptingReader``). ``observe(data)`` is given every
    byte read from the file as stored (to hash it while it streams).
    """
    _require(compression)
    decode = {"none": _read_chunks, "gzip": _gunzip, "zstd": _unzstd}[compression]
    corrupt = (ArtifactError, zlib.error) + ((zstandard.ZstdError,) if zstandard else ())
    try:
        with open(path, "rb") as stored:
            f = stored if observe is None else _TeeReader(stored, observe)
            if decrypt is None:
                yield from decode(f, chunk_size)
                return
            plain = decrypt(f)
            try:
                yield from decode(plain, chunk_size)
            finally:
                plain.close()
    except corrupt as exc:
        raise ArtifactError(
            f"artifact {path} is not a complete {compression} stream ({exc}): the archive is corrupt or "
            "truncated; capture it again or copy it again from the source bundle"
        ) from exc
    except OSError as exc:
        raise ArtifactError(f"cannot read artifact {path}: {exc.strerror or exc}") from exc


QUICK_SWITCH_SECONDS = 0.0002


@contextlib.contextmanager
def quick_handoffs(seconds=QUICK_SWITCH_SECONDS):
    """Let threads take turns with the GIL every ``seconds`` (instead of Python's 5 ms) inside the block.

    A ``prefetched`` reader hashes in steps that release the GIL while the consumer runs Python code.
    At the end of each step the reader waits for the GIL until the consumer's switch interval expires,
    so with 5 ms the two threads mostly take turns instead of overlapping. Restoring a 1 GiB volume
    took 0.25 s less with 0.2 ms (BENCHMARKS.md, row 4). The process's interval is put back afterwards.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def prefetched(chunks, depth=8):
    """Iterate over ``chunks`` in a thread of its own, up to ``depth`` chunks ahead of the consumer.

    Reading, hashing and decompressing release the GIL: the producer's work overlaps the consumer's on a
    second CPU, as the two processes of ``zstd -dc | tar -x`` do. The producer's exception is
    raised in the consumer; a consumer that stops early (an error of its own) stops the producer at its next
    chunk. The producer's own state (counters, notes) is complete once the iteration ended."""
    ahead = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    failure = []

    def produce():
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        ahead.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            failure.append(exc)
        ahead.put(_DONE)

    worker = threading.Thread(target=produce, name="ferry-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            chunk = ahead.get()
            if chunk is _DONE:
                break
            yield chunk
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                ahead.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()
    if failure:
        raise failure[0]


class IterReader(io.RawIOBase):
    """A readable binary file object over an iterable of byte chunks (for put_archive, load_image...).

    Holds at most one chunk. ``read(n)`` returns at most ``n`` bytes and may return fewer before the
    end (raw I/O semantics); wrap it in ``io.BufferedReader`` if a consumer needs full reads.
    """

    def __init__(self, chunks):
        super().__init__()
        self._chunks = iter(chunks)
        self._chunk = b""
        self._pos = 0

    def readable(self):
        return True

    def _current(self):
        while self._pos >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return None
            self._chunk, self._pos = chunk, 0
        return self._chunk

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        chunk = self._current()
        if chunk is None or size == 0:
            return b""
        if self._pos == 0 and size >= len(chunk):
            self._pos = len(chunk)
            return bytes(chunk)  # no copy when the chunk already is bytes
        data = bytes(memoryview(chunk)[self._pos : self._pos + size])
        self._pos += len(data)
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self):
        """Also close the chunk source if it can be closed (e.g. a Docker SDK stream generator)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()
