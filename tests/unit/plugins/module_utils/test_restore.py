"""Pure logic of the restore side: import changes and tar content fingerprints."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _restore
from ansible_collections.ferry.docker.plugins.module_utils._bundle import artifact_entry
from ansible_collections.ferry.docker.plugins.module_utils._restore import (
    RestoreError,
    import_changes,
    tar_fingerprint,
)
from ansible_collections.ferry.docker.plugins.module_utils._stream import write_stream

SECOND = 1_000_000_000  # Docker durations are nanoseconds


def test_import_changes_reapply_what_export_loses():
    config = {
        "Cmd": ["httpd", "-f", "-p", "8080"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Env": ["PATH=/bin", "GREETING=hello $USER"],
        "WorkingDir": "/www",
        "User": "nobody",
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
        "Labels": {"app": "web"},
        "Healthcheck": {"Test": ["CMD", "wget", "-q", "localhost:8080"], "Interval": 5_000_000_000, "Retries": 3},
    }
    changes, not_applied = import_changes(config, labels={"ferry.docker.artifact-sha256": "ab" * 32})
    assert changes == [
        'ENTRYPOINT ["/bin/sh", "-c"]',
        'CMD ["httpd", "-f", "-p", "8080"]',
        'ENV PATH="/bin"',
        'ENV GREETING="hello \\$USER"',  # no substitution at import time
        "WORKDIR /www",
        "USER nobody",
        "EXPOSE 53/udp 8080/tcp",
        'HEALTHCHECK --interval=5000000000ns --retries=3 CMD ["wget", "-q", "localhost:8080"]',
        'LABEL "app"="web"',
        'LABEL "ferry.docker.artifact-sha256"="' + "ab" * 32 + '"',
    ]
    assert not_applied == []


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ({"Test": ["NONE"]}, "HEALTHCHECK NONE"),
        (
            {"Test": ["CMD-SHELL", "test -f /ok"], "Timeout": 2_000_000_000},
            "HEALTHCHECK --timeout=2000000000ns CMD test -f /ok",
        ),
        (
            {"Test": ["CMD", "true"], "StartPeriod": 1_000_000_000},
            'HEALTHCHECK --start-period=1000000000ns CMD ["true"]',
        ),
    ],
)
def test_healthcheck_forms(check, expected):
    changes, _not_applied = import_changes({"Healthcheck": check})
    assert changes == [expected]


def test_unrepresentable_healthcheck_is_an_error():
    with pytest.raises(RestoreError, match="cannot be expressed"):
        import_changes({"Healthcheck": {"Test": ["BOGUS", "x"]}})


def test_keys_an_import_cannot_set_are_reported_not_dropped_silently():
    _changes, not_applied = import_changes({"StopSignal": "SIGINT", "Shell": ["/bin/ash", "-c"], "ArgsEscaped": True})
    assert not_applied == ["Shell", "StopSignal"]


def _tar(entries, root=None):
    """A tar stream of (name, kind, data/linkname, mode, mtime) tuples, optionally under a root dir."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        if root is not None:
            info = tarfile.TarInfo(root)
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        for name, kind, payload, mode, mtime in entries:
            info = tarfile.TarInfo(name if root is None else f"{root}/{name}")
            info.mode, info.mtime = mode, mtime
            if kind == "file":
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
            else:
                info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
                info.linkname = payload if kind in ("sym", "hard") else ""
                archive.addfile(info)
    buf.seek(0)
    return buf


FILES = [
    ("data", "dir", b"", 0o755, 1),
    ("data/a.txt", "file", b"alpha", 0o644, 1),
    ("data/b.txt", "file", b"beta", 0o600, 1),
    ("link", "sym", "data/a.txt", 0o777, 1),
]


def test_fingerprint_ignores_order_and_mtimes():
    reordered = [FILES[0], FILES[2], FILES[1], FILES[3]]
    touched = [(n, k, p, m, 999) for n, k, p, m, _t in FILES]
    reference = tar_fingerprint(_tar(FILES))
    assert reference[1] == 4
    assert tar_fingerprint(_tar(reordered)) == reference
    assert tar_fingerprint(_tar(touched)) == reference


@pytest.mark.parametrize(
    "changed",
    [
        [*FILES[:1], ("data/a.txt", "file", b"ALPHA", 0o644, 1), *FILES[2:]],  # content
        [*FILES[:1], ("data/a.txt", "file", b"alpha", 0o600, 1), *FILES[2:]],  # mode
        [*FILES[:3], ("link", "sym", "data/b.txt", 0o777, 1)],  # link target
        FILES[:3],  # a member less
    ],
)
def test_fingerprint_sees_every_real_difference(changed):
    assert tar_fingerprint(_tar(changed)) != tar_fingerprint(_tar(FILES))


def test_hard_link_counts_as_the_file_it_names_whichever_name_comes_first():
    one = [("x", "file", b"same", 0o644, 1), ("y", "hard", "x", 0o644, 1)]
    other = [("y", "file", b"same", 0o644, 1), ("x", "hard", "y", 0o644, 1)]
    assert tar_fingerprint(_tar(one)) == tar_fingerprint(_tar(other))


def test_the_archived_directory_name_is_stripped_so_a_volume_listing_matches_its_archive():
    assert tar_fingerprint(_tar(FILES, root="vol"), strip_first=True) == tar_fingerprint(_tar(FILES, root="."))


def test_the_root_entry_counts_in_the_digest():
    assert tar_fingerprint(_tar(FILES, root=".")) != tar_fingerprint(_tar(FILES))


@pytest.mark.parametrize(("entries", "count"), [([], 0), (FILES, 1)])
def test_emptiness_check_stops_at_the_first_member(entries, count):
    assert tar_fingerprint(_tar(entries, root="vol"), strip_first=True, stop_after_first=True)[1] == count


# ------------------------------------------------------------------------------------------------
# size bounds (issue 13 F)


def _plain_tar(*files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _artifact(tmp_path, raw, **overrides):
    written = write_stream([raw], str(tmp_path), "volume-v.tar.gz", compression="gzip")
    entry = artifact_entry("volume", "v", written)
    entry.update(overrides)
    return entry


def test_zip_bomb_stops_at_the_recorded_raw_size(tmp_path):
    raw = _plain_tar(("zeros", bytes(8 * 1024 * 1024)))
    entry = _artifact(tmp_path, raw, raw_size=10 * 1024)
    assert entry["size"] < 64 * 1024
    read = 0
    with pytest.raises(_restore.RestoreError, match="more than its recorded raw_size of 10240"):
        for chunk in _restore.bounded_decompressed(str(tmp_path), entry, chunk_size=4096):
            read += len(chunk)
    assert read <= 10 * 1024
    with pytest.raises(_restore.RestoreError, match="raw_size"):
        _restore.scan_artifact(str(tmp_path), entry)


def test_files_larger_than_recorded_are_refused(tmp_path):
    raw = _plain_tar(("a", b"x" * 5000))
    entry = _artifact(tmp_path, raw, apparent_size=100)
    assert _restore.apparent_limit(entry) == entry["raw_size"]  # never below the tar's own size
    fine = _restore.scan_artifact(str(tmp_path), entry)
    assert fine["bytes"] == 5000


def test_sparse_bomb_counts_at_apparent_size(tmp_path):
    (tmp_path / "src").mkdir()
    with open(tmp_path / "src" / "hole", "wb") as f:
        f.truncate(64 * 1024 * 1024)
    raw = subprocess.run(
        ["tar", "-C", str(tmp_path / "src"), "--sparse", "--format=posix", "-cf", "-", "hole"],
        check=True,
        capture_output=True,
    ).stdout
    entry = _artifact(tmp_path, raw)
    with pytest.raises(_restore.RestoreError, match="more than the recorded"):
        _restore.scan_artifact(str(tmp_path), entry)
    entry["apparent_size"] = 64 * 1024 * 1024
    assert _restore.scan_artifact(str(tmp_path), entry)["bytes"] == 64 * 1024 * 1024
    stream = _restore.NormalisedStream(str(tmp_path), dict(entry, apparent_size=1024))
    with pytest.raises(_restore.RestoreError, match="beyond the recorded size"):
        list(stream)


# ------------------------------------------------------------------------------------------------
# one pass into a new volume (StreamedFill): hashed and checked while it streams


def _root_tar(*files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        root = tarfile.TarInfo(".")
        root.type, root.mode, root.uid, root.gid = tarfile.DIRTYPE, 0o700, 999, 999
        archive.addfile(root)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_streamed_fill_gives_the_engine_what_the_checked_path_gives_and_the_scan_summary(tmp_path):
    raw = _root_tar(("a", b"x" * 5000), ("b", b"y"))
    entry = _artifact(tmp_path, raw)
    streamed = _restore.StreamedFill(str(tmp_path), entry)
    sent = b"".join(streamed)
    assert sent == b"".join(_restore.NormalisedStream(str(tmp_path), entry))
    assert streamed.finished and streamed.bytes_read == entry["size"] and streamed.bytes_written == len(sent)
    scanned = _restore.scan_artifact(str(tmp_path), entry)
    for key in ("members", "bytes", "root", "sparse", "xattrs", "lists_complete", "complete"):
        assert streamed.summary[key] == scanned[key], key
    assert streamed.summary["root"]["mode"] == 0o700 and streamed.summary["root"]["uid"] == 999


def test_streamed_fill_withholds_the_end_of_the_archive_from_a_file_the_manifest_does_not_record(tmp_path):
    written = write_stream([_root_tar(("a", b"x" * 5000))], str(tmp_path), "volume-v.tar", compression="none")
    entry = artifact_entry("volume", "v", written)
    # the same size, other bytes: a changed archive that passes every member check
    (tmp_path / entry["file"]).write_bytes(_root_tar(("a", b"z" * 5000)))
    sent = []
    with pytest.raises(_restore.RestoreError, match="does not match the sha256 its manifest records"):
        for chunk in _restore.StreamedFill(str(tmp_path), entry, chunk_size=512):
            sent.append(chunk)
    # the members went by in chunks of about 512 bytes, but never the last chunk, which holds the
    # end-of-archive marker: the engine's extraction is cut off
    full, sent = b"".join(_restore.NormalisedStream(str(tmp_path), entry)), b"".join(sent)
    assert len(sent) >= 5000 and full.startswith(sent) and 1024 <= len(full) - len(sent) < 1024 + 2 * 512


def test_streamed_fill_refuses_a_truncated_file_before_reading_it(tmp_path):
    entry = _artifact(tmp_path, _root_tar(("a", b"x" * 5000)))
    path = tmp_path / entry["file"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(_restore.RestoreError, match="not the recorded"):
        next(iter(_restore.StreamedFill(str(tmp_path), entry)))


def test_streamed_fill_stops_at_an_unsafe_member_with_the_scan_s_advice(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    entry = _artifact(tmp_path, buf.getvalue())
    with pytest.raises(_restore.RestoreError, match=r"is not safe to restore.*capture it again.*allow_devices=true"):
        list(_restore.StreamedFill(str(tmp_path), entry))


class _Checked:
    """A stream as StreamedFill gives it: chunks, then ``finished`` (or an error in the middle)."""

    def __init__(self, chunks, fail=None):
        self.chunks, self.fail, self.finished = chunks, fail, False

    def __iter__(self):
        for index, chunk in enumerate(self.chunks):
            if self.fail is not None and index == 1:
                raise self.fail
            yield chunk
        self.finished = True


def test_extract_locally_writes_the_checked_members_with_gnu_tar(tmp_path):
    raw = _root_tar(("a", b"x" * 5000), ("sub/b", b"y"))
    _restore.extract_locally(_Checked([raw[:1000], raw[1000:]]), str(tmp_path), "v")
    assert (tmp_path / "a").read_bytes() == b"x" * 5000 and (tmp_path / "sub" / "b").read_bytes() == b"y"
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"  # the root entry's own mode


def test_extract_locally_stops_tar_at_a_failed_check_and_reports_tar_s_own_failure(tmp_path):
    raw = _root_tar(("a", b"x" * 5000))
    with pytest.raises(_restore.RestoreError, match="sha256"):
        _restore.extract_locally(
            _Checked([raw[:512], raw[512:]], fail=_restore.RestoreError("sha256")), str(tmp_path), "v"
        )
    with pytest.raises(_restore.RestoreError, match=r"tar could not extract the archive of volume v into .*exit 2"):
        _restore.extract_locally(_Checked([b"not a tar archive" * 100]), str(tmp_path / "x"), "v")
