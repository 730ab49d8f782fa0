# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Shared logic of the restore modules: open and verify a bundle, stream an artifact into Docker, fill volumes.

Every restore module follows the same order: ``open_bundle()`` reads the manifest and checks the
size and sha256 of every artifact it will use, then the module decides what would change, and
only then it acts. Nothing on the engine is touched before the checks pass.

Volumes are filled without ever starting a container: a helper container is *created* (never
started) from an image already on the host with the volume mounted at ``/ferry/vol``, and the
decompressed archive is streamed into it with ``put_archive`` (Docker's own extraction keeps
ownership, modes, mtimes and the ``SCHILY.xattr`` records). The whole archive is scanned with
``_tarsafe.scan_stream`` first, so a hostile archive is refused before one byte reaches the
volume. Then ``_volmeta`` does what Docker's extraction does not: the root entry's mode, owner,
mtime and xattrs are applied by a one-member ``put_archive`` into ``/ferry`` (where ``vol`` is the
volume's root), and, when the volume's directory is reachable on this host, sparse files get
their holes back and every extended attribute is checked on disk. What could not be kept is
listed in ``helper.notes`` and sent as a warning. The helper is removed in ``finally``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

from ansible_collections.ferry.docker.plugins.module_utils._bundle import (
    BundleError,
    find_artifact,
    load_manifest,
    open_bundle_file,
    read_manifest_bytes,
    read_signature,
    verify_artifacts,
)
from ansible_collections.ferry.docker.plugins.module_utils._client import engine_errors, not_found_errors
from ansible_collections.ferry.docker.plugins.module_utils._names import manifest_name_problems
from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    CHUNK_SIZE,
    FerryError,
    IterReader,
    prefetched,
    quick_handoffs,
    read_decompressed,
)
from ansible_collections.ferry.docker.plugins.module_utils._tarsafe import (
    XATTR_CAPABILITY,
    UnsafeTarError,
    copy_info,
    member_chunks,
    new_summary,
    normalised_chunks,
    scan_stream,
)
from ansible_collections.ferry.docker.plugins.module_utils._trust import (
    SIGNATURE_NAME,
    DecryptingReader,
    encrypted,
    no_identities,
    unseal_env,
)
from ansible_collections.ferry.docker.plugins.module_utils._volmeta import (
    METADATA_API,
    Notes,
    TreeTar,
    punch_holes,
    root_member,
    tar_fingerprint,
    verify_xattrs,
    volume_local_reason,
)

try:
    from ansible.module_utils.common.warnings import warn
except ImportError:  # outside Ansible (unit tests of pure functions)

    def warn(message):
        return None


class _MissingRequests(Exception):
    """Stand-in so that ``except RequestException`` works when requests (which the SDK needs) is missing."""


def __getattr__(name):
    """``from ..._restore import RequestException`` imports requests then (PEP 562), and only then: a module that
    catches ``_client.engine_errors()`` instead never needs it."""
    if name == "RequestException":
        try:
            from requests.exceptions import RequestException
        except ImportError:  # the Docker SDK depends on requests; its absence is reported by FerryModule
            return _MissingRequests
        return RequestException
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ARTIFACT_LABEL = "ferry.docker.artifact-sha256"
VOLUME_MOUNT = "/ferry/vol"
VOLUME_PARENT, VOLUME_BASENAME = VOLUME_MOUNT.rsplit("/", 1)
_SCANS = {}  # (path, sha256) -> scan summary, so a restore reads each archive once for the checks
_KEYS = {}  # absolute bundle path -> _trust.BundleKeys given to open_bundle (the identities to decrypt with)
HELPER_COMMAND = ["/ferry-helper-is-never-started"]


class RestoreError(FerryError):
    """A restore cannot go on; the message says on which object and what to do."""


class Timer:
    def __init__(self):
        self._start = time.monotonic()

    @property
    def elapsed(self):
        return round(time.monotonic() - self._start, 3)


def open_bundle(bundle_dir, kinds=None, names=None, keys=None):
    """Load and validate the manifest of ``bundle_dir`` and verify the chosen artifacts; return both.

    With ``keys`` (a ``_trust.BundleKeys``) that name ``trusted_signers``, the manifest's bytes and
    its signature are read once, the signature is verified (``keys.signer`` is set to the trusted
    principal) and exactly the verified bytes are parsed; an unsigned or wrongly signed bundle is
    refused. Sealed env values are decrypted with ``keys.identities``, which are also kept for the
    artifacts read later (``bounded_decompressed``).
    Every name in the manifest is checked against Docker's grammar (``_names``) before anything else.
    Raises BundleError (missing bundle, bad or newer manifest, invalid name, missing, truncated or
    corrupt artifact) or _trust.TrustError (signature, keys).
    """
    if not os.path.isdir(bundle_dir):
        raise BundleError(
            f"bundle {bundle_dir} does not exist or is not a directory; give the directory a capture module wrote"
        )
    if keys is not None and keys.checks_signature:
        data = read_manifest_bytes(bundle_dir)
        signature = read_signature(bundle_dir)
        if signature is None:
            raise BundleError(
                f"bundle {bundle_dir} is not signed (it has no {SIGNATURE_NAME}) and trusted_signers is set, so it is "
                "refused. Nothing was changed. Capture it again with sign_key set to a key listed in "
                f"{keys.signers_label}, or restore it without trusted_signers if you trust its source"
            )
        keys.signer = keys.verify(data, signature, bundle_dir)
        manifest = load_manifest(bundle_dir, data)
    else:
        manifest = load_manifest(bundle_dir)
    if encrypted(manifest):
        if keys is None or not keys.identities:
            raise no_identities(f"bundle {bundle_dir}")
        unseal_env(manifest, keys.identities, f"bundle {bundle_dir}")
    _KEYS[os.path.abspath(bundle_dir)] = keys
    problems = manifest_name_problems(manifest)
    if problems:
        raise BundleError(
            "bundle {} names objects Docker would not accept or that would reach outside Docker's own storage: {}{}. "
            "Nothing was changed; the manifest is damaged or hostile: capture the bundle again from a trusted "
            "source".format(
                bundle_dir, "; ".join(problems[:5]), f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            )
        )
    artifacts = verify_artifacts(bundle_dir, manifest, kinds=kinds, names=names) if kinds or names else []
    return manifest, artifacts


def require_artifact(bundle_dir, manifest, kind, name=None):
    """The artifact of ``kind`` (and ``name``), verified; BundleError naming what is missing otherwise."""
    artifact = find_artifact(manifest, kind, name)
    if artifact is None:
        what = f"{kind} artifact {name}" if name else f"{kind} artifact"
        raise BundleError(
            f"bundle {bundle_dir} has no {what}; capture it first (docker_commit_save for an image, "
            "docker_export for a filesystem, docker_volume_backup for volumes)"
        )
    verify_artifacts(bundle_dir, manifest, kinds=[kind], names=[artifact["name"]])
    return artifact


def artifact_path(bundle_dir, artifact):
    return os.path.join(bundle_dir, artifact["file"])


def base_result(bundle_dir, artifact):
    """The common result fields of a restore of one artifact (bytes moved are filled in later)."""
    return {
        "path": artifact_path(bundle_dir, artifact),
        "size": artifact["size"],
        "sha256": artifact["sha256"],
        "bytes_read": 0,
        "bytes_written": 0,
    }


class CountingStream:
    """Iterate over the decompressed chunks of an artifact, counting what is read and fed to Docker."""

    def __init__(self, path, compression, chunk_size=CHUNK_SIZE):
        self.path = path
        self.compression = compression
        self.chunk_size = chunk_size
        self.bytes_written = 0
        self.bytes_read = 0
        self.finished = False

    def __iter__(self):
        for chunk in read_decompressed(self.path, self.compression, self.chunk_size):
            self.bytes_written += len(chunk)
            yield chunk
        self.bytes_read = os.path.getsize(self.path)
        self.finished = True


def apparent_limit(artifact):
    """The most bytes the artifact's regular files may hold, sparse files at their apparent size.

    ``apparent_size`` when the manifest records it (volume archives read from their directory, which
    may hold sparse files), else ``raw_size``: without holes, the files of a tar are smaller than it.
    """
    recorded = artifact.get("apparent_size")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 0:
        return max(recorded, artifact["raw_size"])
    return artifact["raw_size"]


def bounded_decompressed(bundle_dir, artifact, chunk_size=CHUNK_SIZE, observe=None):
    """The decompressed chunks of an artifact; RestoreError as soon as they pass the recorded ``raw_size``.

    The file is opened through ``_bundle.open_bundle_file`` first (a regular file of the bundle, not a
    link or FIFO), so a decompression bomb stops at ``raw_size`` + one chunk, before anything further.
    ``observe(data)`` is given every byte of the file as stored (see ``read_decompressed``).
    """
    open_bundle_file(bundle_dir, artifact["file"]).close()
    limit, total = artifact["raw_size"], 0
    path = artifact_path(bundle_dir, artifact)
    decrypt = _decryptor(bundle_dir, artifact)
    for chunk in read_decompressed(path, artifact["compression"], chunk_size, decrypt, observe):
        total += len(chunk)
        if total > limit:
            raise RestoreError(
                f"{artifact['kind']} artifact {artifact['name']} ({artifact_path(bundle_dir, artifact)}) decompresses "
                f"to more than its recorded raw_size of {limit} bytes. Nothing was changed; the bundle is damaged or "
                "hostile: capture it again from a trusted source"
            )
        yield chunk


def _decryptor(bundle_dir, artifact):
    """For an encrypted artifact, the factory of its plaintext reader with the identity files open_bundle had."""
    if not artifact.get("encryption"):
        return None
    keys = _KEYS.get(os.path.abspath(bundle_dir))
    paths = keys.identity_paths if keys is not None else []
    name = f"{artifact['kind']} artifact {artifact['name']} ({artifact_path(bundle_dir, artifact)})"
    return lambda f: DecryptingReader(f, paths, name)


def scan_artifact(bundle_dir, artifact, allow_devices=False):
    """Scan the decompressed tar of ``artifact`` with the tarsafe rules and the size bounds; RestoreError if unsafe."""
    path = artifact_path(bundle_dir, artifact)
    summary = scan_stream(bounded_decompressed(bundle_dir, artifact), allow_devices=allow_devices)
    limit = apparent_limit(artifact)
    if summary["bytes"] > limit:
        summary["problems"].append(
            f"its files hold {summary['bytes']} bytes (sparse files at their apparent size), more than the "
            f"recorded {limit} bytes"
        )
        summary["problem_count"] += 1
    if summary["problems"]:
        more = summary["problem_count"] - len(summary["problems"][:5])
        raise RestoreError(
            "{} artifact {} ({}) is not safe to restore: {}{}. Nothing was changed; capture it again "
            "from a trusted source{}.".format(
                artifact["kind"],
                artifact["name"],
                path,
                "; ".join(summary["problems"][:5]),
                f" (and {more} more problems)" if more > 0 else "",
                "" if allow_devices else ", or set allow_devices=true if device nodes are expected",
            )
        )
    _SCANS[(path, artifact.get("sha256"))] = summary
    return summary


class BoundedStream(CountingStream):
    """The decompressed chunks of an artifact as stored (an image archive for ``docker load``), bounded by raw_size."""

    def __init__(self, bundle_dir, artifact, chunk_size=CHUNK_SIZE):
        super().__init__(artifact_path(bundle_dir, artifact), artifact["compression"], chunk_size)
        self.bundle_dir = bundle_dir
        self.artifact = artifact

    def __iter__(self):
        for chunk in bounded_decompressed(self.bundle_dir, self.artifact, self.chunk_size):
            self.bytes_written += len(chunk)
            yield chunk
        self.bytes_read = os.path.getsize(self.path)
        self.finished = True


class NormalisedStream(CountingStream):
    """The chunks of ``_tarsafe.normalised_chunks`` over an artifact: what the engine receives, never the file as is.

    Checks every member again while streaming and stops (RestoreError) at the first problem or when
    the files pass the recorded size; ``bytes_written`` counts the normalised tar fed to the engine.
    """

    def __init__(self, bundle_dir, artifact, allow_devices=False, chunk_size=CHUNK_SIZE):
        super().__init__(artifact_path(bundle_dir, artifact), artifact["compression"], chunk_size)
        self.bundle_dir = bundle_dir
        self.artifact = artifact
        self.allow_devices = allow_devices

    def __iter__(self):
        source = bounded_decompressed(self.bundle_dir, self.artifact, self.chunk_size)
        chunks = normalised_chunks(source, self.allow_devices, apparent_limit(self.artifact), self.chunk_size)
        try:
            for chunk in chunks:
                self.bytes_written += len(chunk)
                yield chunk
        except UnsafeTarError as exc:
            raise RestoreError(
                f"{self.artifact['kind']} artifact {self.artifact['name']} ({self.path}) is not safe to restore: "
                f"{exc}. Capture it again from a trusted source"
            ) from exc
        self.bytes_read = os.path.getsize(self.path)
        self.finished = True


class StreamedFill(NormalisedStream):
    """The archive of a volume that the restore has just created, in one pass over its file.

    What the engine receives is ``NormalisedStream``'s: every member checked as it streams, the files bounded
    by the recorded sizes. Meanwhile the file's bytes are hashed as they are read and the members noted as
    ``scan_stream`` notes them (``summary``). The stream ends with a RestoreError, so that the engine's
    extraction is cut off, when the file is not the one the manifest records (size, sha256); the caller then
    removes the volume, which nothing used meanwhile. A restore into a volume that exists keeps the checks
    of every archive before anything is written (``verify_artifacts``, ``scan_artifact``).
    """

    def __init__(self, bundle_dir, artifact, allow_devices=False, chunk_size=CHUNK_SIZE):
        super().__init__(bundle_dir, artifact, allow_devices, chunk_size)
        self.summary = new_summary()
        self._sha256 = hashlib.sha256()
        self._stored = 0

    def _observe(self, data):
        self._sha256.update(data)
        self._stored += len(data)

    def __iter__(self):
        what = f"{self.artifact['kind']} artifact {self.artifact['name']} ({self.path})"
        open_bundle_file(self.bundle_dir, self.artifact["file"]).close()  # a regular file of the bundle
        stored = os.path.getsize(self.path)
        if stored != self.artifact["size"]:  # the cheap check first
            raise RestoreError(
                f"{what} has {stored} bytes, not the recorded {self.artifact['size']}: the "
                "archive is corrupt or truncated; capture it again or copy it again from the source bundle"
            )
        # read, hashed and decompressed in a thread of its own, while this one checks the members and the engine
        # receives them
        source = prefetched(
            bounded_decompressed(self.bundle_dir, self.artifact, self.chunk_size, observe=self._observe)
        )
        limit = apparent_limit(self.artifact)
        chunks = normalised_chunks(source, self.allow_devices, limit, self.chunk_size, summary=self.summary)
        try:
            for chunk in chunks:
                if self.summary["complete"]:  # the last chunk, the end-of-archive marker: the engine gets it
                    self._check_file(what)  # only from a file that is the one the manifest records
                self.bytes_written += len(chunk)
                yield chunk
        except UnsafeTarError as exc:
            raise RestoreError(
                f"{what} is not safe to restore: {exc}; capture it again from a trusted source"
                + ("" if self.allow_devices else ", or set allow_devices=true if device nodes are expected")
            ) from exc
        self.bytes_read = self._stored
        self.finished = True

    def _check_file(self, what):
        if self._stored != self.artifact["size"] or self._sha256.hexdigest() != self.artifact["sha256"]:
            raise RestoreError(
                f"{what} does not match the sha256 its manifest records: the archive is corrupt or was changed; "
                "capture it again or copy it again from the source bundle"
            )


# GNU tar, extracting a checked stream (StreamedFill) into a new, empty volume directory as root: owners by
# number, modes, every xattr the archive carries (ACLs are xattrs there), the root entry's own attributes.
TAR_EXTRACT = (
    "tar",
    "--extract",
    "--file=-",
    "--numeric-owner",
    "--same-owner",
    "--same-permissions",
    "--xattrs",
    "--xattrs-include=*",
)


def extract_locally(stream, path, volume):
    """Feed ``stream`` (chunks of a checked tar) to GNU tar extracting into ``path``, a volume's own directory.

    The members are the ones ``StreamedFill`` checked (or the root entry of ``put_root``); tar never sees the
    archive as stored. A failed check stops the feed (tar is killed) and is raised; so is tar's own failure,
    with its last words. Whether the stream got to its end is the caller's to check (``StreamedFill.finished``)."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(  # killed and waited for below, whatever happens
            [*TAR_EXTRACT, "--directory", path], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            _widen_pipe(proc.stdin)
            try:
                # the stream is produced in a thread of its own while this one waits on tar's pipe
                for chunk in prefetched(stream, depth=4):
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass  # tar ended early: its exit status and words say why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        status = proc.wait()
        errors.seek(0)
        said = " | ".join(line.strip() for line in errors.read().decode("utf-8", "replace").splitlines()[-3:])
    if status != 0:
        raise RestoreError(
            f"tar could not extract the archive of volume {volume} into {path} (exit {status}): {said or 'no message'}"
        )


PIPE_SIZE = 1 << 20  # fs.pipe-max-size's default, the most without CAP_SYS_RESOURCE: one chunk per write
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _widen_pipe(pipe):
    """Give ``pipe`` room for a whole chunk, so a write does not wait on each of tar's 10 KiB reads."""
    try:
        fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # a smaller limit: tar is fed in smaller steps, nothing else changes


def fill_new_volume(helper, bundle_dir, artifact, allow_devices=False):
    """``fill_volume`` for a volume the restore has just created, in one pass (``StreamedFill``): written at its
    directory by GNU tar when that is on this host (root, the local engine, driver ``local`` without options),
    else extracted by the engine."""
    stream = StreamedFill(bundle_dir, artifact, allow_devices)
    path = helper.local()[0]
    with quick_handoffs():
        if path and _tar_locally():
            extract_locally(stream, path, helper.volume)
        else:
            helper.put(stream)
    if not stream.finished:
        raise RestoreError(
            f"the extraction stopped reading the archive of volume {helper.volume} before its end; nothing was kept"
        )
    helper.notes = restore_metadata(helper, stream.summary)
    for message in helper.notes.messages(f"volume {helper.volume}"):
        warn(message)
    return stream.bytes_read, stream.bytes_written


# ------------------------------------------------------------------------------------------------
# content fingerprints, to tell whether a volume already holds exactly what an archive holds


def artifact_fingerprint(bundle_dir, artifact, xattrs="all"):
    """``_volmeta.tar_fingerprint`` of an artifact's archive (the content digest, root and xattrs included)."""
    return tar_fingerprint(IterReader(bounded_decompressed(bundle_dir, artifact)), xattrs=xattrs)


# ------------------------------------------------------------------------------------------------
# helper containers and volumes


def pick_helper_image(client, preferred=None):
    """An image already on the engine to create (never start) helper containers from; never pulls."""
    if preferred:
        try:
            return client.inspect_image(preferred)["Id"]
        except not_found_errors() as exc:
            raise RestoreError(
                f"helper image {preferred} is not on the engine; load it first or name another local image"
            ) from exc
    images = [i for i in client.images() if i.get("Id")]
    if not images:
        raise RestoreError(
            "the engine has no image at all to create the (never started) helper container from; "
            "load any image first (docker_load) or set helper_image"
        )
    return min(images, key=lambda i: i.get("Size") or 0)["Id"]


class VolumeHelper:
    """A created-but-never-started container with one volume mounted at VOLUME_MOUNT; use as a context."""

    def __init__(self, client, image, volume):
        self.client = client
        self.image = image
        self.volume = volume
        self.id = None
        self.notes = Notes()  # metadata the last fill could not keep
        self._local = None

    def local(self):
        """``(directory, None)`` when the volume's directory is reachable on this host, else ``(None, why not)``."""
        if self._local is None:
            volume = self.client.inspect_volume(self.volume)
            info = self.client.info()
            path = volume.get("Mountpoint")
            reason = volume_local_reason(getattr(self.client, "base_url", None), info, volume)
            self._local = (None, reason) if reason else (path, None)
        return self._local

    def __enter__(self):
        return self

    def _container(self):
        """The helper container's id, created on first use (a fill at the volume's directory needs none)."""
        if self.id is None:
            host_config = self.client.create_host_config(binds={self.volume: {"bind": VOLUME_MOUNT, "mode": "rw"}})
            created = self.client.create_container(
                self.image,
                command=HELPER_COMMAND,
                entrypoint=[],
                labels={"ferry.docker.helper": "volume-restore"},
                host_config=host_config,
                network_disabled=True,
            )
            self.id = created["Id"]
        return self.id

    def __exit__(self, exc_type, exc, tb):
        if self.id:
            try:
                self.client.remove_container(self.id, force=True, v=True)
            except engine_errors():  # cleanup must not hide the original error
                pass

    def _archive(self, path):
        stream, _stat = self.client.get_archive(self._container(), path, chunk_size=CHUNK_SIZE)
        return IterReader(stream)

    def is_empty(self):
        reader = self._archive(VOLUME_MOUNT)
        try:
            return tar_fingerprint(reader, strip_first=True, stop_after_first=True)[1] == 0
        finally:
            reader.close()

    def xattr_view(self):
        """Which xattrs this helper's fingerprint can see: all of them from the directory, else the engine's one."""
        return "all" if self.local()[0] else "capability"

    def fingerprint(self):
        """The content digest of the volume, read from its directory when reachable, else through the engine."""
        path = self.local()[0]
        if path:
            return tar_fingerprint(IterReader(TreeTar(path).chunks()))
        reader = self._archive(VOLUME_MOUNT)
        try:
            return tar_fingerprint(reader, strip_first=True, xattrs="capability")
        finally:
            reader.close()

    def put(self, stream, path=VOLUME_MOUNT):
        ok = self.client.put_archive(self._container(), path, data=iter(stream))
        if not ok:
            raise RestoreError(f"the engine refused to extract the archive into volume {self.volume}")

    def put_root(self, root):
        """Give the volume's root the archived mode, owner, mtime and xattrs (Docker skips a ``.`` member).

        At the volume's directory (see ``fill_new_volume``) GNU tar applies the one-member archive to it from
        its parent; otherwise the engine does, through the helper container."""
        path = self.local()[0]
        if path and _tar_locally():
            parent, name = os.path.split(os.path.normpath(path))
            extract_locally([root_member(root, name)], parent, self.volume)
            return
        self.put([root_member(root, VOLUME_BASENAME)], VOLUME_PARENT)


def _tar_locally():
    """Whether GNU tar may write at a volume's directory here: only root sets every owner."""
    return os.geteuid() == 0 and shutil.which("tar") is not None


def volume_state(helper, artifact_fingerprint_fn):
    """``"empty"``, ``"same"`` (already holds the archive's content) or ``"differs"`` for the helper's volume.

    ``artifact_fingerprint_fn(xattrs)`` gives the archive's fingerprint, counting the xattrs the
    helper can see; it is only called for a non-empty volume.
    """
    if helper.is_empty():
        return "empty"
    theirs = artifact_fingerprint_fn(helper.xattr_view())
    return "same" if helper.fingerprint()[0] == theirs[0] else "differs"


def fill_volume(helper, bundle_dir, artifact, allow_devices=False):
    """Stream the decompressed archive into the helper's volume; return ``(bytes_read, bytes_written)``."""
    path = artifact_path(bundle_dir, artifact)
    summary = _SCANS.get((path, artifact.get("sha256"))) or scan_artifact(bundle_dir, artifact, allow_devices)
    stream = NormalisedStream(bundle_dir, artifact, allow_devices)
    helper.put(stream)
    if not stream.finished:
        raise RestoreError(
            f"the engine stopped reading the archive of volume {helper.volume} before its end; the volume may "
            "hold part of the data: restore it again with force=true"
        )
    helper.notes = restore_metadata(helper, summary)
    for message in helper.notes.messages(f"volume {helper.volume}"):
        warn(message)
    return stream.bytes_read, stream.bytes_written


def restore_metadata(helper, summary):
    """After the engine's extraction: the root entry, holes of sparse files, a check of the xattrs; return Notes."""
    notes = Notes()
    root = summary.get("root")
    if root is not None:
        helper.put_root(root)
    path, reason = helper.local()
    if path:
        punch_holes(path, summary["sparse"], notes)
        verify_xattrs(path, summary["xattrs"], (root or {}).get("xattrs") or {}, notes)
    else:
        for name, _size, _map in summary["sparse"]:
            notes.add("sparse", name, f"restored fully allocated: {reason}")
        for name, attributes in summary["xattrs"]:
            for attribute in attributes:
                if attribute != XATTR_CAPABILITY:
                    notes.add(f"xattr {attribute}", name, f"applied by the engine but not verified: {reason}")
    if not summary.get("lists_complete", True):
        notes.add("sparse and xattrs", "(beyond the first entries)", "too many entries to check them all")
    return notes


def metadata_version(artifact):
    """The ``metadata`` version of a volume artifact (1 for bundles written before it was recorded)."""
    version = artifact.get("metadata", METADATA_API)
    return version if isinstance(version, int) and not isinstance(version, bool) else METADATA_API


def inspect_or_none(getter, name):
    try:
        return getter(name)
    except not_found_errors():
        return None


# ------------------------------------------------------------------------------------------------
# docker import: the recorded image config as Dockerfile-style changes

# Config keys the engine accepts as ``changes`` of an import (moby builder ``validCommitCommands``:
# CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, USER, VOLUME, WORKDIR). STOPSIGNAL and
# SHELL are not among them (Docker 20.10 answers "stopsignal is not a valid change command"): they
# are reported as not applied; docker_container_restore sets them from the run config instead.
IMPORT_CHANGE_FIELDS = (
    "Cmd",
    "Entrypoint",
    "Env",
    "ExposedPorts",
    "Healthcheck",
    "Labels",
    "User",
    "Volumes",
    "WorkingDir",
)
IMPORT_IGNORED_FIELDS = ("ArgsEscaped",)  # a Windows-only hint, meaningless for an import


def _quote(value):
    """A double-quoted Dockerfile word: backslash, quote and ``$`` escaped, so nothing is substituted."""
    text = str(value)
    for char in ("\\", '"', "$"):
        text = text.replace(char, "\\" + char)
    return '"' + text.replace("\n", "\\n") + '"'


def _json_words(words):
    return json.dumps(list(words))


def _healthcheck_change(check):
    test = list(check.get("Test") or [])
    if not test or test[0] == "NONE":
        return "HEALTHCHECK NONE"
    options = []
    for key, flag in (
        ("Interval", "interval"),
        ("Timeout", "timeout"),
        ("StartPeriod", "start-period"),
        ("StartInterval", "start-interval"),
    ):
        if check.get(key):
            options.append(f"--{flag}={int(check[key])}ns")
    if check.get("Retries"):
        options.append(f"--retries={int(check['Retries'])}")
    if test[0] == "CMD-SHELL":
        command = test[1] if len(test) > 1 else ""
        # shell form; the engine stores it as ["CMD-SHELL", command]
        body = "CMD " + command
    elif test[0] == "CMD":
        body = "CMD " + _json_words(test[1:])
    else:
        raise RestoreError(f"the recorded healthcheck test {test!r} cannot be expressed as a HEALTHCHECK instruction")
    return " ".join(["HEALTHCHECK", *options, body])


def import_changes(image_config, labels=None):
    """Dockerfile-style ``changes`` for ``import_image`` that re-apply a recorded image/container Config.

    Returns ``(changes, not_applied)``: ``not_applied`` lists the keys of ``image_config`` that an
    import cannot set (see IMPORT_CHANGE_FIELDS). Exec forms are JSON arrays; every ENV and LABEL
    value is quoted so that the engine substitutes nothing. ``labels`` adds labels (e.g. the
    artifact checksum).
    """
    config = image_config or {}
    changes = []
    if config.get("Entrypoint") is not None:
        changes.append("ENTRYPOINT " + _json_words(config["Entrypoint"]))
    if config.get("Cmd") is not None:
        changes.append("CMD " + _json_words(config["Cmd"]))
    for entry in config.get("Env") or []:
        key, _sep, value = entry.partition("=")
        changes.append(f"ENV {key}={_quote(value)}")
    if config.get("WorkingDir"):
        changes.append("WORKDIR " + config["WorkingDir"].replace("$", "\\$"))
    if config.get("User"):
        changes.append("USER " + config["User"].replace("$", "\\$"))
    if config.get("ExposedPorts"):
        changes.append("EXPOSE " + " ".join(sorted(config["ExposedPorts"])))
    if config.get("Volumes"):
        changes.append("VOLUME " + _json_words(sorted(config["Volumes"])))
    if config.get("Healthcheck"):
        changes.append(_healthcheck_change(config["Healthcheck"]))
    all_labels = dict(config.get("Labels") or {})
    all_labels.update(labels or {})
    for key in sorted(all_labels):
        changes.append(f"LABEL {_quote(key)}={_quote(all_labels[key])}")
    if config.get("OnBuild"):
        changes.extend("ONBUILD " + trigger for trigger in config["OnBuild"])
    supported = (*IMPORT_CHANGE_FIELDS, "OnBuild", *IMPORT_IGNORED_FIELDS)
    not_applied = sorted(
        key for key, value in config.items() if value not in (None, "", [], {}) and key not in supported
    )
    return changes, not_applied


def refuse_privileged(what, settings, allow_privileged):
    """RestoreError listing the privilege-bearing ``settings`` of ``what`` unless ``allow_privileged``."""
    if settings and not allow_privileged:
        raise RestoreError(
            f"{what} asks for privilege-bearing settings: {'; '.join(settings)}. Nothing was changed. A bundle is "
            "input, not truth: check that these settings are wanted, then set allow_privileged=true, or restore a "
            "bundle signed by a key of trusted_signers (or change them with the module's map options)"
        )


# ------------------------------------------------------------------------------------------------
# docker load: an image archive that moves no tag by itself

ARCHIVE_INDEX_MAX = 16 * 1024 * 1024  # manifest.json of a docker save archive


def untagged_image_archive(bundle_dir, artifact, chunk_size=CHUNK_SIZE):
    """Yield the image archive of ``artifact`` rewritten so that ``docker load`` applies no tag of its own.

    ``docker load`` tags the image with the ``RepoTags`` of the archive's ``manifest.json`` and the
    ``repositories`` file, silently moving a tag that names another image. Here ``RepoTags`` are
    emptied and ``repositories`` left out while streaming (every other member is copied as read,
    through ``_tarsafe.normalised_chunks``' header writer); docker_load then sets the tags it was
    asked for itself, under its own rule (``force_tag``). Bounded by the recorded raw_size.
    """
    import tarfile

    def rewrite(archive, member):
        if member.size > ARCHIVE_INDEX_MAX:
            raise RestoreError(
                f"manifest.json of image archive {artifact['name']} is larger than {ARCHIVE_INDEX_MAX} bytes"
            )
        doc = json.loads(archive.extractfile(member).read())
        for entry in doc if isinstance(doc, list) else []:
            if isinstance(entry, dict):
                entry["RepoTags"] = None
        return json.dumps(doc).encode()

    try:
        with tarfile.open(fileobj=IterReader(bounded_decompressed(bundle_dir, artifact)), mode="r|") as archive:
            for member in iter(archive.next, None):
                del archive.members[:]
                name = member.name[2:] if member.name.startswith("./") else member.name
                if name == "repositories":
                    continue
                info = copy_info(member)
                data = archive.extractfile(member) if member.isreg() and member.size else None
                if name == "manifest.json" and member.isreg():
                    content = rewrite(archive, member)
                    info.size = len(content)
                    data = IterReader([content])
                short = RestoreError(f"member {member.name!r} of image archive {artifact['name']} is truncated")
                yield from member_chunks(info, data, chunk_size, short)
    except (tarfile.TarError, ValueError, RecursionError) as exc:
        raise RestoreError(
            f"image archive {artifact['name']} of bundle {bundle_dir} cannot be read as a docker save archive "
            f"({exc}); capture it again"
        ) from exc
    yield bytes(2 * tarfile.BLOCKSIZE)


class UntaggedImageStream(BoundedStream):
    """``untagged_image_archive`` with the byte counts of CountingStream."""

    def __iter__(self):
        for chunk in untagged_image_archive(self.bundle_dir, self.artifact, self.chunk_size):
            self.bytes_written += len(chunk)
            yield chunk
        self.bytes_read = os.path.getsize(self.path)
        self.finished = True
