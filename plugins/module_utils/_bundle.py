# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The ferry.docker bundle: a directory of artifact files described by one ``manifest.json``.

The manifest records where the bundle came from, the container's run configuration, its
networks and volumes, and for every artifact (image, filesystem or volume archive) the file, its
compression, size and sha256 as stored. Capture modules add artifacts with ``update_manifest``,
which serialises concurrent writers with a lock file; restore modules read it with
``load_manifest`` and check files with ``verify_artifacts`` before touching anything.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import pwd
import re
import stat
import tempfile
import time

from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    CHUNK_SIZE,
    COMPRESSIONS,
    ArtifactError,
    ArtifactWriter,
    FerryError,
)
from ansible_collections.ferry.docker.plugins.module_utils._trust import (
    ENCRYPTION,
    SIGNATURE_MAX_BYTES,
    SIGNATURE_NAME,
    sealed_problems,
)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
ARTIFACT_KINDS = ("filesystem", "image", "volume")
COLLECTION = "ferry.docker"
COLLECTION_VERSION = "0.1.0"

SOURCE_FIELDS = ("hostname", "docker_version", "api_version", "architecture", "os")
CONTAINER_FIELDS = ("id", "name", "image", "image_id")
ARTIFACT_FIELDS = ("kind", "name", "file", "compression", "size", "sha256", "raw_size")

MANIFEST_MAX_BYTES = 16 * 1024 * 1024  # a manifest is a few KiB; anything near this is not one
MANIFEST_MAX_DEPTH = 64  # the deepest real manifest (run config, healthcheck, IPAM) nests < 10 levels
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CREATED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class BundleError(FerryError):
    """A bundle directory or its manifest cannot be used; the message says why and what to do."""


def _utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_manifest(source, container=None):
    """A fresh manifest for a bundle captured on the Docker host described by ``source``.

    ``source`` holds the keys of SOURCE_FIELDS (strings); ``container``, when given, is
    ``{"id", "name", "image", "image_id", "state": {"status", "running", "paused"}}``.
    """
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created": _utc_now(),
        "producer": {"collection": COLLECTION, "version": COLLECTION_VERSION},
        "source": dict(source),
        "networks": {},
        "volumes": {},
        "artifacts": [],
    }
    if container is not None:
        manifest["container"] = copy.deepcopy(container)
    return manifest


def artifact_entry(kind, name, written, **extra):
    """The manifest entry for an artifact from what ``ArtifactWriter.commit()`` returned.

    ``extra`` adds kind-specific keys such as ``image_id``, ``layers`` or ``volume``.
    """
    entry = {"kind": kind, "name": name}
    entry.update((key, written[key]) for key in ("file", "compression", "size", "sha256", "raw_size"))
    if written.get("encryption"):
        entry["encryption"] = written["encryption"]
    entry.update(extra)
    return entry


def add_artifact(manifest, entry):
    """Add ``entry`` to the manifest, replacing in place any artifact with the same kind and name.

    Keeping the position means that re-adding an identical entry leaves the manifest equal.
    """
    artifacts = manifest["artifacts"]
    for index, existing in enumerate(artifacts):
        if (existing.get("kind"), existing.get("name")) == (entry["kind"], entry["name"]):
            artifacts[index] = entry
            return manifest
    artifacts.append(entry)
    return manifest


def find_artifact(manifest, kind, name=None):
    """The artifact of ``kind`` called ``name`` (or the first of that kind if ``name`` is None), else None."""
    for artifact in manifest.get("artifacts", []):
        if artifact.get("kind") == kind and (name is None or artifact.get("name") == name):
            return artifact
    return None


def add_streamed(manifest, entry):
    """Record in ``manifest["streamed"]`` an artifact that went straight to another host (``entry``: kind, name,
    image_id, to, bytes, sha256), replacing any with the same kind and name."""
    streamed = [
        e for e in manifest.get("streamed") or [] if (e.get("kind"), e.get("name")) != (entry["kind"], entry["name"])
    ]
    manifest["streamed"] = [*streamed, entry]
    return manifest


def find_streamed(manifest, kind, name=None):
    """The ``streamed`` entry of ``kind`` (and ``name``), or None."""
    for entry in manifest.get("streamed") or []:
        if entry.get("kind") == kind and (name is None or entry.get("name") == name):
            return entry
    return None


def _check_streamed(problems, doc):
    streamed = doc["streamed"]
    if not isinstance(streamed, list):
        problems.append("streamed must be a list")
        return
    for index, entry in enumerate(streamed):
        where = f"streamed[{index}]"
        _check_strings(problems, where, entry, ("kind", "name", "image_id", "to"))
        if not isinstance(entry, dict):
            continue
        if entry.get("kind") != "image":
            problems.append(f"{where}.kind must be image")
        if isinstance(entry.get("image_id"), str) and not _IMAGE_ID_RE.match(entry["image_id"]):
            problems.append(f"{where}.image_id must be sha256:<64 lowercase hexadecimal characters>")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_strings(problems, where, value, fields):
    if not isinstance(value, dict):
        problems.append(f"{where} must be an object")
        return
    for field in fields:
        if not isinstance(value.get(field), str):
            problems.append(f"{where}.{field} must be a string")


def _check_file_name(name):
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if "/" in name or "\0" in name or name.startswith(".") or name in (MANIFEST_NAME, SIGNATURE_NAME):
        return f"must be a plain file name inside the bundle (no '/', not starting with '.'), got {name!r}"
    return None


def _check_artifact(problems, index, artifact):
    where = f"artifacts[{index}]"
    if not isinstance(artifact, dict):
        problems.append(f"{where} must be an object")
        return
    for field in ARTIFACT_FIELDS:
        if field not in artifact:
            problems.append(f"{where} has no {field}")
    if "kind" in artifact and artifact["kind"] not in ARTIFACT_KINDS:
        problems.append(f"{where}.kind must be one of {', '.join(ARTIFACT_KINDS)}")
    if "name" in artifact and (not isinstance(artifact["name"], str) or not artifact["name"]):
        problems.append(f"{where}.name must be a non-empty string")
    if "file" in artifact:
        problem = _check_file_name(artifact["file"])
        if problem:
            problems.append(f"{where}.file {problem}")
    if "compression" in artifact and artifact["compression"] not in COMPRESSIONS:
        problems.append(f"{where}.compression must be one of {', '.join(COMPRESSIONS)}")
    for field in ("size", "raw_size"):
        if field in artifact and not (_is_int(artifact[field]) and artifact[field] >= 0):
            problems.append(f"{where}.{field} must be an integer >= 0")
    if "sha256" in artifact and not (isinstance(artifact["sha256"], str) and _SHA256_RE.match(artifact["sha256"])):
        problems.append(f"{where}.sha256 must be 64 lowercase hexadecimal characters")
    if "encryption" in artifact and artifact["encryption"] != ENCRYPTION:
        problems.append(f"{where}.encryption must be {ENCRYPTION!r} when present")


def validate_manifest(doc):
    """Return the list of problems of a manifest document (empty when it is valid)."""
    if not isinstance(doc, dict):
        return ["the manifest must be a JSON object"]
    problems = []
    version = doc.get("schema_version")
    if not (_is_int(version) and 1 <= version <= SCHEMA_VERSION):
        problems.append(f"schema_version must be an integer from 1 to {SCHEMA_VERSION}")
    if not (isinstance(doc.get("created"), str) and _CREATED_RE.match(doc["created"])):
        problems.append("created must be a UTC time like 2024-01-31T12:00:00Z")
    _check_strings(problems, "producer", doc.get("producer"), ("collection", "version"))
    _check_strings(problems, "source", doc.get("source"), SOURCE_FIELDS)
    if "container" in doc:
        container = doc["container"]
        _check_strings(problems, "container", container, CONTAINER_FIELDS)
        state = container.get("state") if isinstance(container, dict) else None
        if not isinstance(state, dict):
            problems.append("container.state must be an object")
        else:
            if not isinstance(state.get("status"), str):
                problems.append("container.state.status must be a string")
            for flag in ("running", "paused"):
                if not isinstance(state.get(flag), bool):
                    problems.append(f"container.state.{flag} must be true or false")
    for field in ("run_config", "image_config"):
        if field in doc and not isinstance(doc[field], dict):
            problems.append(f"{field} must be an object")
    for field in ("networks", "volumes"):
        if not isinstance(doc.get(field), dict):
            problems.append(f"{field} must be an object")
    problems.extend(sealed_problems(doc))
    if "streamed" in doc:
        _check_streamed(problems, doc)
    artifacts = doc.get("artifacts")
    if not isinstance(artifacts, list):
        problems.append("artifacts must be a list")
        return problems
    seen_keys, seen_files = set(), set()
    for index, artifact in enumerate(artifacts):
        _check_artifact(problems, index, artifact)
        if not isinstance(artifact, dict):
            continue
        key = (artifact.get("kind"), artifact.get("name"))
        if key in seen_keys:
            problems.append(f"artifacts[{index}] repeats the {key[0]} artifact {key[1]!r}")
        if artifact.get("file") in seen_files:
            problems.append(f"artifacts[{index}] reuses the file {artifact.get('file')!r} of another artifact")
        seen_keys.add(key)
        seen_files.add(artifact.get("file"))
    return problems


def open_bundle_file(bundle_dir, name):
    """Open the bundle file ``name`` for reading: a regular file directly inside ``bundle_dir``, never a link.

    ``name`` must be a plain file name (no ``/``). The file is opened with ``O_NOFOLLOW`` (a symlink,
    even one pointing inside the bundle, is refused) and ``O_NONBLOCK`` (a FIFO or device cannot make
    the open hang), then ``fstat`` must show a regular file; the descriptor is returned as a binary
    file object, so what was checked is what is read. Raises BundleError naming the file.
    """
    if not isinstance(name, str) or not name or "/" in name or name in (".", "..") or "\0" in name:
        raise BundleError(f"{name!r} is not a plain file name inside bundle {bundle_dir}; the manifest is damaged")
    path = os.path.join(bundle_dir, name)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise BundleError(
                f"{path} is a symbolic link; bundle files must be regular files inside the bundle. Copy the "
                "bundle again without links (e.g. rsync without --links, cp -L) from a trusted source"
            ) from exc
        raise BundleError(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(
                f"{path} is not a regular file (a FIFO, device, socket or directory); bundle files must be "
                "regular files: copy the bundle again from a trusted source"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _depth(doc):
    """Nesting depth of a JSON document, iteratively (no recursion limit to hit)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, level)
            if level > MANIFEST_MAX_DEPTH:
                return level
            stack.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def read_manifest_bytes(bundle_dir):
    """The bytes of ``bundle_dir/manifest.json``, read through ``open_bundle_file`` (at most MANIFEST_MAX_BYTES)."""
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    try:
        with open_bundle_file(bundle_dir, MANIFEST_NAME) as f:
            data = f.read(MANIFEST_MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise BundleError(
            f"no {MANIFEST_NAME} in {bundle_dir}: this is not a ferry.docker bundle; "
            "give the directory a capture module wrote"
        ) from exc
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MANIFEST_MAX_BYTES:
        raise BundleError(
            f"{path} is larger than {MANIFEST_MAX_BYTES} bytes, which no ferry.docker manifest is; the bundle is "
            "damaged or hostile: copy it again from a trusted source"
        )
    return data


def read_signature(bundle_dir):
    """The bytes of ``manifest.json.sig`` of ``bundle_dir`` (bounded), or None when the bundle is not signed."""
    path = os.path.join(bundle_dir, SIGNATURE_NAME)
    try:
        with open_bundle_file(bundle_dir, SIGNATURE_NAME) as f:
            data = f.read(SIGNATURE_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > SIGNATURE_MAX_BYTES:
        raise BundleError(f"{path} is larger than {SIGNATURE_MAX_BYTES} bytes, which no OpenSSH signature is")
    return data


def read_manifest_doc(bundle_dir, data=None):
    """The parsed ``manifest.json`` of ``bundle_dir``, read through ``open_bundle_file`` and bounded.

    At most MANIFEST_MAX_BYTES are read and the document may nest at most MANIFEST_MAX_DEPTH levels;
    both are refused with a BundleError, never a traceback. ``data``, when given, are the manifest's
    bytes already read (e.g. the bytes whose signature was checked).
    """
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    if data is None:
        data = read_manifest_bytes(bundle_dir)
    try:
        doc = json.loads(data)
    except RecursionError as exc:
        raise BundleError(
            f"{path} nests deeper than {MANIFEST_MAX_DEPTH} levels, which no ferry.docker manifest does; the bundle "
            "is damaged or hostile: copy it again from a trusted source"
        ) from exc
    except ValueError as exc:  # json.JSONDecodeError and undecodable bytes
        raise BundleError(
            f"{path} is not valid JSON ({exc}): the bundle is damaged; copy it again from the source"
        ) from exc
    if _depth(doc) > MANIFEST_MAX_DEPTH:
        raise BundleError(
            f"{path} nests deeper than {MANIFEST_MAX_DEPTH} levels, which no ferry.docker manifest does; the bundle "
            "is damaged or hostile: copy it again from a trusted source"
        )
    return doc


def load_manifest(bundle_dir, data=None):
    """Read and validate ``bundle_dir/manifest.json`` (or its bytes ``data``); BundleError says what is wrong."""
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    doc = read_manifest_doc(bundle_dir, data)
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if _is_int(version) and version > SCHEMA_VERSION:
        raise BundleError(
            f"bundle {bundle_dir} uses manifest schema {version} but this ferry.docker understands up to "
            f"{SCHEMA_VERSION}; upgrade the ferry.docker collection on this host"
        )
    problems = validate_manifest(doc)
    if problems:
        raise BundleError(f"{path} is not a valid ferry.docker manifest: {'; '.join(problems)}")
    return doc


def write_manifest(bundle_dir, manifest, mode=0o600):
    """Validate and atomically write ``bundle_dir/manifest.json`` (sorted keys, indented)."""
    problems = validate_manifest(manifest)
    if problems:
        raise BundleError(f"refusing to write an invalid manifest to {bundle_dir}: {'; '.join(problems)}")
    data = (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode("utf-8")
    try:
        with ArtifactWriter(bundle_dir, MANIFEST_NAME, compression="none", mode=mode) as writer:
            writer.write(data)
            writer.commit()
    except ArtifactError as exc:
        raise BundleError(f"cannot write the manifest of {bundle_dir}: {exc}") from exc
    return data


def _update_signature(bundle_dir, data, sign):
    """Write ``sign(data)`` as ``manifest.json.sig`` (no ``sign``: remove a stale one); return whether it changed."""
    current = read_signature(bundle_dir)
    if sign is None:
        if current is None:
            return False
        try:
            os.unlink(os.path.join(bundle_dir, SIGNATURE_NAME))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise BundleError(f"cannot remove the stale signature of {bundle_dir}: {exc.strerror or exc}") from exc
        return True
    signature = sign(data)
    if signature == current:
        return False
    try:
        with ArtifactWriter(bundle_dir, SIGNATURE_NAME, compression="none", mode=0o600) as writer:
            writer.write(signature)
            writer.commit()
    except ArtifactError as exc:
        raise BundleError(f"cannot write the signature of {bundle_dir}: {exc}") from exc
    return True


@contextlib.contextmanager
def _locked(bundle_dir):
    path = os.path.join(bundle_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise BundleError(f"cannot create the lock file {path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def update_manifest(bundle_dir, fn, source=None, container=None, sign=None):
    """Read-modify-write the manifest under an exclusive lock; return ``(manifest, changed)``.

    ``fn(manifest)`` edits the manifest in place (or returns a new one). A missing manifest is
    created from ``source`` (required then). A given ``source`` or ``container`` replaces the
    stored one; a container with another name is refused, one bundle holds one container.
    The file is rewritten only when the document changed, so ``changed`` can drive a module's
    ``changed`` result. The lock file ``.manifest.lock`` stays in the bundle. ``sign(data)``, when
    given, returns the signature of the manifest's bytes, kept in ``manifest.json.sig``; without it a
    signature left from an earlier capture is removed when the manifest changes (it no longer matches).
    """
    with _locked(bundle_dir):
        if os.path.exists(os.path.join(bundle_dir, MANIFEST_NAME)):
            before = load_manifest(bundle_dir)
        elif source is None:
            raise BundleError(f"{bundle_dir} has no {MANIFEST_NAME} yet and no source to create one")
        else:
            before = None
        manifest = new_manifest(source) if before is None else copy.deepcopy(before)
        if source is not None:
            manifest["source"] = dict(source)
        if container is not None:
            stored = manifest.get("container", {}).get("name")
            if stored not in (None, container.get("name")):
                raise BundleError(
                    f"bundle {bundle_dir} holds container {stored}, not {container.get('name')}; "
                    "give each container its own bundle directory"
                )
            manifest["container"] = copy.deepcopy(container)
        result = fn(manifest)
        manifest = manifest if result is None else result
        changed = manifest != before
        if changed:
            data = write_manifest(bundle_dir, manifest)
        elif sign is not None:
            data = read_manifest_bytes(bundle_dir)
        if changed or sign is not None:
            changed = _update_signature(bundle_dir, data, sign) or changed
        return manifest, changed


def _user():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def ensure_bundle_dir(path, mode=0o700):
    """Create the bundle directory (and parents) if needed and check that files can be created in it.

    ``mode`` applies to a directory created here; an existing directory keeps its permissions.
    Writability is probed by creating a temporary file, which also catches read-only mounts,
    ACLs and root-squashed network filesystems that permission bits alone do not reveal.
    Returns the absolute path.
    """
    path = os.path.abspath(path)
    not_writable = f"destination {path} is not writable by {_user()}; choose another dest or fix its permissions"
    if not os.path.isdir(path):
        try:
            os.makedirs(path, mode=mode)
            os.chmod(path, mode)  # makedirs is subject to the umask
        except FileExistsError as exc:
            raise BundleError(f"destination {path} exists and is not a directory; choose another dest") from exc
        except NotADirectoryError as exc:
            raise BundleError(f"destination {path} is below a file, not a directory; choose another dest") from exc
        except PermissionError as exc:
            raise BundleError(not_writable) from exc
        except OSError as exc:
            raise BundleError(f"cannot create destination {path}: {exc.strerror or exc}") from exc
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise BundleError(f"{not_writable} ({exc.strerror or exc})") from exc
    return path


def select_artifacts(bundle_dir, manifest, kinds=None, names=None):
    """The artifacts of ``kinds`` and ``names`` (all by default), unchecked; a requested name with no artifact
    is an error."""
    chosen = [
        a
        for a in manifest["artifacts"]
        if (kinds is None or a["kind"] in kinds) and (names is None or a["name"] in names)
    ]
    missing = sorted(set(names or ()) - {a["name"] for a in chosen})
    if missing:
        raise BundleError(f"bundle {bundle_dir} has no artifact named {', '.join(missing)}")
    return chosen


def verify_artifacts(bundle_dir, manifest, kinds=None, names=None):
    """Check size and sha256 of the chosen artifacts (all by default); return the entries checked.

    ``kinds`` and ``names`` restrict the selection; a requested name with no artifact is an error.
    """
    chosen = select_artifacts(bundle_dir, manifest, kinds, names)
    for artifact in chosen:
        verify_bundle_file(bundle_dir, artifact)
    return chosen


def verify_bundle_file(bundle_dir, artifact):
    """Check that the artifact's file is a regular file of the bundle with the recorded size and sha256."""
    what = f"{artifact['kind']} artifact {artifact['name']} of bundle {bundle_dir}"
    advice = "the archive is corrupt or truncated; capture it again or copy it again from the source bundle"
    path = os.path.join(bundle_dir, artifact["file"])
    try:
        with open_bundle_file(bundle_dir, artifact["file"]) as f:
            digest, size = hashlib.sha256(), 0
            while True:
                chunk = f.read(CHUNK_SIZE)
                if not chunk:
                    break
                size += len(chunk)
                if size > artifact["size"]:
                    break
                digest.update(chunk)
    except BundleError as exc:
        raise BundleError(f"{what}: {exc}") from exc
    except OSError as exc:
        raise BundleError(f"{what}: artifact {path} cannot be read ({exc.strerror or exc}); {advice}") from exc
    if size != artifact["size"]:
        more = "more than" if size > artifact["size"] else f"{size} bytes,"
        raise BundleError(f"{what}: artifact {path} has {more} expected {artifact['size']}: {advice}")
    if digest.hexdigest() != artifact["sha256"]:
        raise BundleError(
            f"{what}: artifact {path} has sha256 {digest.hexdigest()}, expected {artifact['sha256']}: {advice}"
        )
