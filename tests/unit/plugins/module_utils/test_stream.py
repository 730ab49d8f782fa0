# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import tarfile
import threading
import time
import tracemalloc

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _stream
from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    ArtifactError,
    ArtifactWriter,
    IterReader,
    read_decompressed,
    sha256_file,
    verify_file,
    write_stream,
)
from ansible_collections.ferry.docker.tests.support.hashing import HashingReader

MIB = 1024 * 1024
SMALL_CHUNK = 64 * 1024  # read chunk size small enough that the test data spans many chunks


def chunked(data, size):
    return (data[i : i + size] for i in range(0, len(data), size))


def payloads():
    rnd = os.urandom(3 * SMALL_CHUNK + 17)
    return {
        "empty": b"",
        "one-byte": b"x",
        "random": rnd,
        "compressible": b"ferry docker backup\n" * 50000,
        "zeros": bytes(4 * MIB),
        "mixed": rnd + bytes(2 * MIB) + rnd,
    }


def round_trip(tmp_path, data, compression, write_size=100_000):
    result = write_stream(
        chunked(data, write_size), tmp_path, "a" + _stream.suffix(compression), compression=compression
    )
    chunks = list(read_decompressed(result["path"], compression, chunk_size=SMALL_CHUNK))
    return result, chunks


def temp_files(directory):
    return [name for name in os.listdir(directory) if name.endswith(".part")]


def test_suffix_and_availability():
    assert [_stream.suffix(c) for c in _stream.COMPRESSIONS] == [".zst", ".gz", ""]
    assert all(_stream.compression_available(c) is None for c in _stream.COMPRESSIONS)
    with pytest.raises(ValueError, match="unknown compression 'xz'"):
        _stream.compression_available("xz")


def test_missing_zstandard_is_reported_not_raised_at_import(monkeypatch, tmp_path):
    monkeypatch.setattr(_stream, "zstandard", None)
    assert _stream.compression_available("zstd") == "zstandard"
    assert _stream.compression_available("gzip") is None
    with pytest.raises(ArtifactError, match="needs the Python library zstandard"):
        ArtifactWriter(tmp_path, "a.zst")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("compression", _stream.COMPRESSIONS)
@pytest.mark.parametrize("name", sorted(payloads()))
def test_round_trip(tmp_path, compression, name):
    data = payloads()[name]
    result, chunks = round_trip(tmp_path, data, compression)
    assert b"".join(chunks) == data
    assert all(0 < len(c) <= SMALL_CHUNK for c in chunks)
    assert result["raw_size"] == len(data)
    assert result["size"] == os.path.getsize(result["path"])
    assert result["sha256"] == hashlib.sha256((tmp_path / result["file"]).read_bytes()).hexdigest()
    assert result["compression"] == compression
    assert result["unchanged"] is False
    assert result["path"] == str(tmp_path / result["file"])
    assert temp_files(tmp_path) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunks=st.lists(st.binary(max_size=3000), max_size=20),
    compression=st.sampled_from(_stream.COMPRESSIONS),
    read_size=st.integers(min_value=1, max_value=5000),
)
def test_round_trip_any_chunking(tmp_path, chunks, compression, read_size):
    result = write_stream(chunks, tmp_path, "h", compression=compression)
    out = list(read_decompressed(result["path"], compression, chunk_size=read_size))
    assert b"".join(out) == b"".join(chunks)
    assert all(len(c) <= read_size for c in out)


@pytest.mark.parametrize("compression", _stream.COMPRESSIONS)
def test_standard_tools_read_our_files(tmp_path, compression):
    data = b"interoperable " * 10000
    path = write_stream([data], tmp_path, "f", compression=compression)["path"]
    raw = open(path, "rb").read()
    decoded = {"zstd": lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b), "gzip": gzip.decompress}
    assert decoded.get(compression, bytes)(raw) == data


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(MIB + 3)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk_size=4096) == (hashlib.sha256(data).hexdigest(), len(data))


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_mode_is_applied_regardless_of_umask(tmp_path, mode):
    old = os.umask(0o077)
    try:
        path = write_stream([b"x"], tmp_path, "f.gz", compression="gzip", mode=mode)["path"]
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == mode


def test_exception_inside_writer_leaves_destination_untouched(tmp_path):
    (tmp_path / "a.zst").write_bytes(b"previous artifact")
    with pytest.raises(RuntimeError), ArtifactWriter(tmp_path, "a.zst") as writer:
        writer.write(b"new data" * 1000)
        raise RuntimeError("docker stream broke")
    assert (tmp_path / "a.zst").read_bytes() == b"previous artifact"
    assert temp_files(tmp_path) == []


def test_write_stream_reraises_and_cleans_up(tmp_path):
    def broken_stream():
        yield b"first chunk"
        raise ConnectionError("connection reset")

    with pytest.raises(ConnectionError):
        write_stream(broken_stream(), tmp_path, "a.gz", compression="gzip")
    assert os.listdir(tmp_path) == []


def test_abort_is_idempotent_and_leaves_nothing(tmp_path):
    writer = ArtifactWriter(tmp_path, "a", compression="none")
    writer.write(b"abc")
    writer.abort()
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_temp_file_is_in_destination_with_mode_before_commit(tmp_path):
    with ArtifactWriter(tmp_path, "a", compression="none", mode=0o600) as writer:
        writer.write(b"abc")
        (temp,) = temp_files(tmp_path)
        assert temp.startswith(".a.")
        assert os.stat(tmp_path / temp).st_mode & 0o777 == 0o600
        assert not (tmp_path / "a").exists()
        writer.commit()
    assert os.listdir(tmp_path) == ["a"]


@pytest.mark.parametrize("compression", _stream.COMPRESSIONS)
def test_unchanged_when_identical_file_exists(tmp_path, compression):
    data = os.urandom(200_000) + bytes(MIB)
    first = write_stream(chunked(data, 65536), tmp_path, "a", compression=compression)
    before = os.stat(first["path"])
    second = write_stream(chunked(data, 100_000), tmp_path, "a", compression=compression)
    after = os.stat(first["path"])
    assert second["unchanged"] is True
    assert second["sha256"] == first["sha256"]
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    third = write_stream([data + b"!"], tmp_path, "a", compression=compression)
    assert third["unchanged"] is False
    assert third["sha256"] != first["sha256"]
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("filename", ["a/b", "../a", "", ".", ".."])
def test_writer_rejects_paths_as_file_names(tmp_path, filename):
    with pytest.raises(ValueError, match="plain file name"):
        ArtifactWriter(tmp_path, filename)


def test_writer_reports_missing_destination(tmp_path):
    with pytest.raises(ArtifactError, match="cannot create a file in"):
        ArtifactWriter(tmp_path / "missing", "a")


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
@pytest.mark.parametrize("cut", [1, 4, 8, 100, "half", "all-but-header"])
def test_truncated_stream_raises(tmp_path, compression, cut):
    data = os.urandom(300_000) + b"abc" * 100_000
    raw = open(write_stream([data], tmp_path, "a", compression=compression)["path"], "rb").read()
    keep = {"half": len(raw) // 2, "all-but-header": 10}.get(cut, len(raw) - cut if isinstance(cut, int) else 0)
    (tmp_path / "t").write_bytes(raw[:keep])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        for _chunk in read_decompressed(tmp_path / "t", compression):
            pass


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_empty_file_is_not_a_valid_stream(tmp_path, compression):
    (tmp_path / "t").write_bytes(b"")
    with pytest.raises(ArtifactError, match="not a complete"):
        list(read_decompressed(tmp_path / "t", compression))


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_flipped_byte_in_payload_raises(tmp_path, compression):
    raw = bytearray(
        open(write_stream([os.urandom(100_000)], tmp_path, "a", compression=compression)["path"], "rb").read()
    )
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "t").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        list(read_decompressed(tmp_path / "t", compression))


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_garbage_after_stream_raises(tmp_path, compression):
    raw = open(write_stream([b"data" * 1000], tmp_path, "a", compression=compression)["path"], "rb").read()
    (tmp_path / "t").write_bytes(raw + b"garbage!")
    with pytest.raises(ArtifactError):
        list(read_decompressed(tmp_path / "t", compression))


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_concatenated_streams_decode_fully(tmp_path, compression):
    # zstd -c a b / pzstd write several frames, gzip accepts concatenated members: all data must come out
    one = open(write_stream([b"first " * 5000], tmp_path, "1", compression=compression)["path"], "rb").read()
    two = open(write_stream([b"second " * 5000], tmp_path, "2", compression=compression)["path"], "rb").read()
    (tmp_path / "t").write_bytes(one + two)
    assert b"".join(read_decompressed(tmp_path / "t", compression)) == b"first " * 5000 + b"second " * 5000


def test_zstd_skippable_frame_is_ignored(tmp_path):
    raw = open(write_stream([b"payload"], tmp_path, "a", compression="zstd")["path"], "rb").read()
    skippable = (0x184D2A5E).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"xyz"
    (tmp_path / "t").write_bytes(skippable + raw)
    assert b"".join(read_decompressed(tmp_path / "t", "zstd")) == b"payload"


def test_read_missing_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        list(read_decompressed(tmp_path / "nope", "none"))


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_highly_compressible_data_comes_out_in_bounded_chunks(tmp_path, compression):
    # 64 MiB of zeros compress to a few KiB: a decompressor that returns all output for an input
    # chunk would hold the whole 64 MiB (or, for a real sparse volume, gigabytes) at once.
    zeros = bytes(MIB)
    path = write_stream((zeros for _index in range(64)), tmp_path, "z", compression=compression)["path"]
    assert os.path.getsize(path) < MIB
    total = 0
    for chunk in read_decompressed(path, compression):
        assert len(chunk) <= _stream.CHUNK_SIZE
        total += len(chunk)
    assert total == 64 * MIB


def test_verify_file_accepts_intact_file(tmp_path):
    result = write_stream([b"abc" * 1000], tmp_path, "a.zst")
    verify_file(result["path"], result["sha256"], result["size"])


def test_verify_file_catches_one_flipped_byte(tmp_path):
    result = write_stream([os.urandom(50_000)], tmp_path, "a.zst")
    raw = bytearray(open(result["path"], "rb").read())
    raw[1234] ^= 0x80
    open(result["path"], "wb").write(bytes(raw))
    with pytest.raises(ArtifactError) as err:
        verify_file(result["path"], result["sha256"], result["size"])
    message = str(err.value)
    assert result["path"] in message
    assert "expected " + result["sha256"] in message
    assert "capture it again or copy it again from the source bundle" in message


def test_verify_file_catches_wrong_size_and_missing_file(tmp_path):
    result = write_stream([b"abc"], tmp_path, "a", compression="none")
    with pytest.raises(ArtifactError, match="has 3 bytes, expected 4"):
        verify_file(result["path"], result["sha256"], 4)
    with pytest.raises(ArtifactError, match="cannot be read"):
        verify_file(tmp_path / "missing", result["sha256"], 3)


@pytest.mark.parametrize("read_size", [1, 3, 7, 4096, 10**6])
def test_iter_reader_read_sizes(read_size):
    chunks = [b"", b"abc", b"", os.urandom(10_000), b"d", bytearray(b"ef")]
    reader = IterReader(iter(chunks))
    out = []
    while True:
        data = reader.read(read_size)
        if not data:
            break
        assert len(data) <= read_size
        assert isinstance(data, bytes)
        out.append(data)
    assert b"".join(out) == b"".join(chunks)
    assert reader.read(10) == b""


def test_iter_reader_readinto_readall_and_buffered():
    data = os.urandom(100_000)
    assert IterReader(chunked(data, 999)).read() == data
    buf = bytearray(5000)
    reader = IterReader(chunked(data, 999))
    assert reader.readinto(buf) == 999
    assert bytes(buf[:999]) == data[:999]
    buffered = io.BufferedReader(IterReader(chunked(data, 999)), buffer_size=4096)
    assert buffered.read(50_000) == data[:50_000]  # full reads through a BufferedReader


def test_iter_reader_returns_whole_chunks_without_copying():
    chunk = os.urandom(1000)
    assert IterReader([chunk]).read(1000) is chunk


def test_iter_reader_close_closes_the_source():
    closed = []

    def source():
        try:
            yield b"abc"
            yield b"def"
        finally:
            closed.append(True)

    reader = IterReader(source())
    assert reader.read(2) == b"ab"
    reader.close()
    assert closed == [True]


def test_iter_reader_feeds_tarfile_in_streaming_mode():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("file")
        payload = os.urandom(30_000)
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    with tarfile.open(fileobj=IterReader(chunked(buf.getvalue(), 777)), mode="r|") as archive:
        member = archive.next()
        assert archive.extractfile(member).read() == payload


@pytest.mark.parametrize("as_file", [True, False])
def test_hashing_reader(as_file):
    data = os.urandom(250_000)
    reader = HashingReader(io.BytesIO(data) if as_file else chunked(data, 1000))
    assert reader.read(10) == data[:10]
    buf = bytearray(100)
    assert reader.readinto(buf) > 0
    reader.read()
    assert reader.bytes_read == len(data)
    assert reader.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("compression", _stream.COMPRESSIONS)
def test_memory_does_not_grow_with_archive_size(tmp_path, compression):
    # tracemalloc sees Python allocations (chunks, compressed output, buffers); libzstd's own
    # worker buffers are allocated in C and bounded by its job size, independent of the data size.
    block = os.urandom(MIB // 2) * 2  # 1 MiB, half of it a repeat so it compresses somewhat
    tracemalloc.start()
    try:
        result = write_stream((block for _index in range(64)), tmp_path, "big", compression=compression)
        for _chunk in read_decompressed(result["path"], compression):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["raw_size"] == 64 * MIB
    assert peak < 8 * MIB


@pytest.mark.parametrize(
    ("threads", "cpus", "expected"),
    [(-1, 2, 2), (-1, 1, 1), (-1, 64, _stream.ZSTD_MAX_WORKERS), (-1, None, 1), (0, 8, 0), (3, 8, 3)],
)
def test_zstd_workers_are_bounded(monkeypatch, threads, cpus, expected):
    # zstd keeps about (workers + 2) jobs in memory: one worker per CPU without a cap would let the
    # module's memory grow with the machine.
    monkeypatch.setattr(_stream.os, "cpu_count", lambda: cpus)
    assert _stream.zstd_workers(threads) == expected


def test_multithreaded_zstd_uses_bounded_jobs_and_round_trips(monkeypatch, tmp_path):
    calls = []
    from_level = zstandard.ZstdCompressionParameters.from_level

    def recording(level, **kwargs):
        calls.append(kwargs)
        return from_level(level, **kwargs)

    monkeypatch.setattr(_stream.zstandard.ZstdCompressionParameters, "from_level", recording)
    data = os.urandom(MIB) + b"text line\n" * (3 * MIB // 10)
    result = write_stream(chunked(data, SMALL_CHUNK), tmp_path, "mt.zst", threads=2)
    assert b"".join(read_decompressed(result["path"], "zstd")) == data
    assert calls == [dict(threads=2, job_size=_stream.ZSTD_JOB_SIZE, write_checksum=True)]


# ------------------------------------------------------------------ the pipelined writer


def stage_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ferry-store-")]


@pytest.mark.parametrize("compression", _stream.COMPRESSIONS)
@pytest.mark.parametrize("pipeline", [True, False])
def test_the_pipelined_writer_stores_the_same_bytes(tmp_path, compression, pipeline):
    (tmp_path / "s").mkdir()
    (tmp_path / "p").mkdir()
    data = payloads()["mixed"] + payloads()["compressible"]
    serial = write_stream(chunked(data, 70_000), tmp_path / "s", "a", compression=compression, pipeline=False)
    result = write_stream(chunked(data, 70_000), tmp_path / "p", "a", compression=compression, pipeline=pipeline)
    assert b"".join(read_decompressed(result["path"], compression)) == data
    assert (
        (result["size"], result["raw_size"])
        == (serial["size"], serial["raw_size"])
        == (
            os.path.getsize(result["path"]),
            len(data),
        )
    )
    if compression != "gzip":  # gzip's header carries the time
        assert result["sha256"] == serial["sha256"]
    assert result["sha256"] == hashlib.sha256((tmp_path / "p" / "a").read_bytes()).hexdigest()
    assert stage_threads() == []


def test_a_pipelined_write_keeps_a_copy_of_a_reused_buffer(tmp_path):
    buffer = bytearray(b"a" * 1000)
    with ArtifactWriter(tmp_path, "a", compression="none", pipeline=True) as writer:
        writer.write(buffer)
        buffer[:] = b"b" * 1000  # a caller that reuses its buffer at once
        writer.write(buffer)
        result = writer.commit()
    assert (tmp_path / "a").read_bytes() == b"a" * 1000 + b"b" * 1000
    assert result["raw_size"] == result["size"] == 2000


def test_a_pipelined_writer_starts_the_writeback_as_it_goes(monkeypatch, tmp_path):
    started = []

    def start(fd, offset, length):
        started.append((offset, length, os.fstat(fd).st_size))

    monkeypatch.setattr(_stream, "SYNC_BYTES", 3 * MIB)
    monkeypatch.setattr(_stream, "_start_writeback", start)
    block = os.urandom(MIB)
    result = write_stream((block for _index in range(10)), tmp_path, "a", compression="none")
    # every SYNC_BYTES, the range written since the last time, all of it already in the file
    assert started == [(0, 3 * MIB, 3 * MIB), (3 * MIB, 3 * MIB, 6 * MIB), (6 * MIB, 3 * MIB, 9 * MIB)]
    assert result["size"] == 10 * MIB


def test_starting_the_writeback_is_harmless(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(MIB))
    fd = os.open(path, os.O_RDONLY)
    try:
        _stream._start_writeback(fd, 0, MIB)  # sync_file_range on Linux; nothing where it does not exist
        _stream._start_writeback(-1, 0, MIB)  # a failure is no error: it is only a head start
    finally:
        os.close(fd)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_a_failing_disk_fails_the_pipelined_write_and_leaves_nothing(monkeypatch, tmp_path, compression):
    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ArtifactWriter, "_store", full)
    with pytest.raises(ArtifactError, match="No space left on device"):
        write_stream((os.urandom(64 * 1024) for _index in range(50)), tmp_path, "a", compression=compression)
    assert os.listdir(tmp_path) == []
    assert stage_threads() == []


def test_a_failing_source_stops_the_pipeline_and_leaves_nothing(tmp_path):
    def broken():
        for _index in range(5):
            yield os.urandom(100_000)
        raise ConnectionError("connection reset")

    with pytest.raises(ConnectionError):
        write_stream(broken(), tmp_path, "a", compression="zstd")
    assert os.listdir(tmp_path) == []
    assert stage_threads() == []


def test_stage_keeps_order_and_raises_its_failure_in_the_producer():
    seen = []
    stage = _stream._Stage(seen.append, 2, "ferry-store-test")
    for index in range(100):
        stage.put(index)
    stage.close()
    assert seen == list(range(100))

    def fail_at_3(item):
        if item == 3:
            raise ValueError("bad item 3")
        seen.append(item)

    seen.clear()
    stage = _stream._Stage(fail_at_3, 1, "ferry-store-test")
    with pytest.raises(ValueError, match="bad item 3"):
        for index in range(1000):
            stage.put(index)
    with pytest.raises(ValueError, match="bad item 3"):
        stage.close()
    assert seen == [0, 1, 2]  # nothing after the failure
    assert stage_threads() == []


def test_a_cancelled_stage_drops_what_is_queued():
    release = threading.Event()
    seen = []

    def slow(item):
        seen.append(item)
        release.wait()

    stage = _stream._Stage(slow, 3, "ferry-store-test")
    for index in range(4):
        stage.put(index)  # 0 is being worked on, 1 to 3 wait in the queue
    canceller = threading.Thread(target=stage.cancel)
    canceller.start()
    while not stage._dropping:
        time.sleep(0.001)
    release.set()
    canceller.join()
    assert seen == [0]
    assert stage_threads() == []


# ------------------------------------------------------------------ prefetched: a producer thread ahead


def test_prefetched_keeps_order_and_the_producer_state_is_complete_after():
    from ansible_collections.ferry.docker.plugins.module_utils._stream import prefetched

    seen = []

    def chunks():
        for index in range(1000):
            seen.append(index)
            yield b"%d" % index

    assert list(prefetched(chunks(), depth=3)) == [b"%d" % i for i in range(1000)]
    assert len(seen) == 1000


def test_prefetched_raises_the_producer_s_error_in_the_consumer():
    from ansible_collections.ferry.docker.plugins.module_utils._stream import prefetched

    def chunks():
        yield b"a"
        raise ValueError("unreadable file x")

    got = []
    with pytest.raises(ValueError, match="unreadable file x"):
        for chunk in prefetched(chunks()):
            got.append(chunk)
    assert got == [b"a"]


def test_prefetched_stops_its_producer_when_the_consumer_stops():
    import threading

    from ansible_collections.ferry.docker.plugins.module_utils._stream import prefetched

    produced = []

    def chunks():
        for index in range(10**6):
            produced.append(index)
            yield b"x"

    stream = prefetched(chunks(), depth=2)
    assert next(stream) == b"x"
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "ferry-prefetch"]
    assert len(produced) < 10


def test_quick_handoffs_shorten_the_switch_interval_only_inside_the_block():
    before = sys.getswitchinterval()
    with pytest.raises(RuntimeError), _stream.quick_handoffs(0.0003):
        assert sys.getswitchinterval() == pytest.approx(0.0003)
        raise RuntimeError("a failed restore")
    assert sys.getswitchinterval() == before
