# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Capture side of ferry.docker: what docker_export, docker_commit_save and docker_volume_backup share.

Bundle layout written by the capture modules (one directory per container, mode 0700 unless
``dir_mode``; every file 0600 unless ``mode``)::

    manifest.json              see _bundle.py; the keys the capture modules fill in:
      source                   {hostname, docker_version, api_version, architecture, os} of the source engine
      container                {id, name, image, image_id, state: {status, running, paused}} (absent
                               when only standalone volumes were backed up)
      run_config               _runconfig.capture() of the container, env values NOT redacted (the
                               bundle is private; restore needs them)
      networks                 {name: _runconfig.network_definition()} of user-defined networks
      volumes                  {name: _runconfig.volume_definition() + "Anonymous"}; merged, never pruned
      image_config             (docker_export only) the container's effective image config that
                               ``docker export`` loses, Docker key names: Cmd, Entrypoint, Env, WorkingDir,
                               ExposedPorts, User, Labels, StopSignal, Healthcheck, and OnBuild, Shell,
                               Volumes, ArgsEscaped when set. Only keys with a non-null value are present.
      artifacts[]              one entry per file (kind, name, file, compression, size, sha256, raw_size) plus:
    filesystem.tar<sfx>        kind "filesystem", name = container name; extra: container_id.
                               A plain ``docker export`` tar of the container's root filesystem.
    image.tar<sfx>             kind "image", name = container name; extra: image_id (of the commit),
                               image_ref (repository:tag saved), repo_tags, layers (all diff IDs, base
                               first), excluded_layers (diff IDs whose layer.tar was left out; ``docker
                               load`` needs them present on the target), container_id.
                               A ``docker save`` archive (docker 20.10 layout) of the commit image.
    volume-<name>.tar<sfx>     kind "volume", name = volume name (binds: "bind:" + host path, file
                               ``volume-bind-<sanitised path>-<8 hex>.tar<sfx>``); extra: type ("volume"
                               or "bind"), volume (name) or source (host path), anonymous (bool),
                               destination (mount point in the container, or null), rw, root ".",
                               metadata (2: read from the directory, see _volmeta; 1 or absent: Docker's
                               archive API). Its first member is "." (the mount root itself, with its
                               mode, owner, mtime and xattrs), then "./file", "./dir/...", so restore can
                               ``put_archive`` it straight into the target mount directory. Extended
                               attributes are PAX ``SCHILY.xattr.*`` records, sparse files GNU sparse 1.0
                               members.

    manifest.json.sig          with ``sign_key``: ``ssh-keygen -Y sign -n ferry.docker`` of manifest.json
                               (see _trust); a capture without it that changes the manifest removes it.

With ``encrypt_recipients`` every archive is an age file (entry ``"encryption": "age"``; ``size`` and
``sha256`` of the ciphertext) and the env values of ``run_config`` and ``image_config`` are sealed
(``sealed_env``, see _trust); the archive names do not change.

``<sfx>`` is ``.zst``, ``.gz`` or empty (see _stream.suffix). Capturing into an existing bundle
replaces the artifact of the same kind and name (a file it no longer uses, e.g. after a change of
compression, is removed); identical bytes keep the old file (changed=false). A bundle holds one
container: capturing another container into it is refused before anything is written.

Leaving layers out of a save archive (``exclude_layers``): in the docker 20.10 archive the layer
directories are v1 IDs that cannot be mapped to diff IDs before ``manifest.json``, which comes
after every layer (members are in lexical order). So the archive is read twice: the first read
parses only ``manifest.json`` (tarfile's stream mode discards the layer data as it goes), which
maps ``<dir>/layer.tar`` to diff IDs by position in ``rootfs.diff_ids``; the second read is copied
member by member (``r|`` -> ``w|``) through the ArtifactWriter, skipping the excluded layer.tar
members, and checks that its own manifest.json lists the same layers. Nothing is held in memory
or spooled to disk; the cost is reading the image twice from the engine.

Volumes whose directory is on this host are read there (``_volmeta.TreeTar``). The others are read
from a helper container (label ``ferry.docker.helper=1``) that is created with each source
bind-mounted read-only at ``/ferry/vol/<n>`` and never started; it is removed (``v=True``: only
anonymous volumes it created for its image's VOLUMEs go with it) also on failure.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import json
import os
import re
import tarfile
import time

from ansible_collections.ferry.docker.plugins.module_utils import _bundle, _runconfig, _trust
from ansible_collections.ferry.docker.plugins.module_utils._client import engine_errors, not_found_errors
from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    CHUNK_SIZE,
    COMPRESSIONS,
    ArtifactWriter,
    FerryError,
    IterReader,
    compression_available,
    write_stream,
)


def attempt(fn, *args, **kwargs):
    """Call ``fn`` for a cleanup step; return ``None``, or the message of the capture error it raised.

    Capture errors are the engine's (``engine_errors()``: the SDK's once imported, _engine's), ours
    (FerryError), OSError (which covers the requests library's ConnectionError and ReadTimeout), tar
    errors and ValueError (RunConfigError).
    """
    try:
        fn(*args, **kwargs)
    except (*engine_errors(), FerryError, OSError, tarfile.TarError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


IMAGE_CONFIG_KEYS = (
    "Cmd",
    "Entrypoint",
    "Env",
    "WorkingDir",
    "ExposedPorts",
    "User",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "Volumes",
    "ArgsEscaped",
)

HELPER_LABEL = "ferry.docker.helper"
HELPER_MOUNT_ROOT = "/ferry/vol"


def argument_spec():
    """Options shared by the capture modules that write a bundle."""
    return dict(
        dest=dict(type="path", required=True),
        compression=dict(type="str", default="zstd", choices=list(COMPRESSIONS)),
        compression_level=dict(type="int"),
        mode=dict(type="raw", default="0600"),
        dir_mode=dict(type="raw", default="0700"),
        encrypt_recipients=dict(type="list", elements="str", default=[]),
        # a path on the managed host, not key material
        sign_key=dict(type="path", no_log=False),
    )


def parse_mode(value, option):
    """A file mode given as an octal string (``"0600"``, ``"600"``) or an int (YAML ``0600``) -> int.

    Raises ValueError naming ``option``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.match(r"^0?o?[0-7]{3,4}$", value.strip()):
        mode = int(value.strip().replace("o", ""), 8)
    else:
        raise ValueError(f"{option} must be an octal file mode such as '0600', got {value!r}")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"{option} must be an octal file mode such as '0600', got {value!r}")
    return mode


def source_facts(client):
    """The manifest ``source`` of the engine ``client`` talks to (all strings)."""
    version = client.version()
    info = client.info()
    return {
        "hostname": str(info.get("Name") or ""),
        "docker_version": str(version.get("Version") or ""),
        "api_version": str(version.get("ApiVersion") or ""),
        "architecture": str(version.get("Arch") or info.get("Architecture") or ""),
        "os": str(version.get("Os") or info.get("OSType") or ""),
    }


def container_facts(container_inspect):
    """The manifest ``container`` of an inspect document."""
    state = container_inspect.get("State") or {}
    config = container_inspect.get("Config") or {}
    return {
        "id": container_inspect.get("Id") or "",
        "name": (container_inspect.get("Name") or "").lstrip("/"),
        "image": config.get("Image") or "",
        "image_id": container_inspect.get("Image") or "",
        "state": {
            "status": str(state.get("Status") or ""),
            "running": bool(state.get("Running")),
            "paused": bool(state.get("Paused")),
        },
    }


def image_config(container_inspect):
    """The container's effective image config (what ``docker export`` loses), Docker key names."""
    config = container_inspect.get("Config") or {}
    return {key: copy.deepcopy(config[key]) for key in IMAGE_CONFIG_KEYS if config.get(key) is not None}


def repository_component(name):
    """A string usable as a repository path component (lowercase alnum separated by '-')."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return cleaned or "container"


def bind_file_name(path, sfx):
    """Artifact file name for a bind mount: sanitised path plus a short hash against collisions."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", path).strip("-.") or "root"
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:8]
    return f"volume-bind-{cleaned[:80]}-{digest}.tar{sfx}"


def volume_file_name(name, sfx):
    return f"volume-{name}.tar{sfx}"


class Lookups:
    """Docker look-ups with failures that name the object and say what to do."""

    def __init__(self, fm):
        self.fm = fm

    # -- look-ups (decide first) --------------------------------------------------------------

    @property
    def client(self):
        return self.fm.client

    def fail(self, msg):
        self.fm.fail(msg)

    @contextlib.contextmanager
    def errors(self, what):
        """Turn a capture error into a failed task whose message says ``what`` was being done."""
        try:
            yield
        except (*engine_errors(), FerryError, OSError, tarfile.TarError, ValueError) as exc:
            self.fail(f"{what} failed: {exc}")

    def inspect_container(self, name):
        with self.errors(f"inspecting container {name}"):
            try:
                return self.client.inspect_container(name)
            except not_found_errors():
                self.fail(
                    f"container {name} does not exist on the Docker engine; check the name with `docker ps -a` "
                    "and the docker_host option"
                )
        return None

    def inspect_volume(self, name):
        with self.errors(f"inspecting volume {name}"):
            try:
                return self.client.inspect_volume(name)
            except not_found_errors():
                self.fail(f"volume {name} does not exist on the Docker engine; check the name with `docker volume ls`")
        return None

    def run_config(self, container_inspect):
        """``_runconfig.capture()`` of the container, with its image, networks and volumes inspected."""
        name = (container_inspect.get("Name") or "").lstrip("/")
        with self.errors(f"reading the run configuration of container {name}"):
            try:
                image = self.client.inspect_image(container_inspect.get("Image"))
            except not_found_errors():
                image = None
            networks = []
            settings = (container_inspect.get("NetworkSettings") or {}).get("Networks") or {}
            for net_name, endpoint in sorted(settings.items()):
                if net_name in _runconfig.PREDEFINED_NETWORKS:
                    continue
                try:
                    networks.append(self.client.inspect_network((endpoint or {}).get("NetworkID") or net_name))
                except not_found_errors():
                    pass
            volumes = []
            for mount in container_inspect.get("Mounts") or []:
                if mount.get("Type") == "volume" and mount.get("Name"):
                    try:
                        volumes.append(self.client.inspect_volume(mount["Name"]))
                    except not_found_errors():
                        pass
            return _runconfig.capture(container_inspect, image, networks, volumes, self.client.info())
        return None

    def source(self):
        with self.errors("reading the source engine's version and info"):
            return source_facts(self.client)
        return None


class Capture(Lookups):
    """One capture run: validated bundle options, the look-ups, writing artifacts and the manifest."""

    def __init__(self, fm):
        super().__init__(fm)
        params = fm.params
        self.compression = params["compression"]
        self.level = params.get("compression_level")
        try:
            self.mode = parse_mode(params["mode"], "mode")
            self.dir_mode = parse_mode(params["dir_mode"], "dir_mode")
        except ValueError as exc:
            fm.fail(str(exc))
        missing = compression_available(self.compression)
        if missing:
            fm.fail(
                f"compression={self.compression} needs the Python library {missing} on the managed host; "
                "install it (pip install zstandard, or python3-zstandard) or choose compression=gzip"
            )
        self.dest = os.path.abspath(params["dest"])
        self.manifest_path = os.path.join(self.dest, _bundle.MANIFEST_NAME)
        self.started = time.monotonic()
        self.sign_key = params.get("sign_key")
        try:
            self.recipients = _trust.parse_recipients(params.get("encrypt_recipients"))
        except FerryError as exc:
            fm.fail(str(exc))
        if self.sign_key and not os.path.isfile(self.sign_key):
            fm.fail(f"sign_key {self.sign_key} is not a file on this host; give the path of an OpenSSH private key")
        texts = [str(r).strip() for r in params.get("encrypt_recipients") or []]
        self.encrypt = functools.partial(_trust.Encryptor, texts) if self.recipients else None

    # -- acting -------------------------------------------------------------------------------

    def ensure_dest(self, container_inspect=None):
        """Create the bundle directory (only called outside check mode) and check it can take this capture.

        An existing bundle must hold a valid manifest of the same container: refusing before any
        artifact is written keeps another container's bundle intact.
        """
        try:
            _bundle.ensure_bundle_dir(self.dest, mode=self.dir_mode)
            if os.path.exists(self.manifest_path):
                stored = (_bundle.load_manifest(self.dest).get("container") or {}).get("name")
                name = container_facts(container_inspect)["name"] if container_inspect else None
                if stored and name and stored != name:
                    raise _bundle.BundleError(
                        f"bundle {self.dest} holds container {stored}, not {name}; "
                        "give each container its own bundle directory"
                    )
        except FerryError as exc:
            self.fail(f"cannot use dest: {exc}")

    def _prune(self, old_files, manifest):
        """Remove artifact files that a replaced manifest entry pointed to and no entry uses any more."""
        used = {a.get("file") for a in manifest.get("artifacts", [])}
        for name in sorted(old_files - used):
            try:
                os.unlink(os.path.join(self.dest, name))
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.fm.module.warn(f"could not remove the replaced artifact {name} from {self.dest}: {exc}")

    def writer(self, filename):
        return ArtifactWriter(
            self.dest, filename, compression=self.compression, level=self.level, mode=self.mode, encrypt=self.encrypt
        )

    def write(self, chunks, filename):
        return write_stream(
            chunks,
            self.dest,
            filename,
            compression=self.compression,
            level=self.level,
            mode=self.mode,
            encrypt=self.encrypt,
        )

    def sign(self, data):
        """The signature of the manifest bytes ``data`` with ``sign_key``."""
        return _trust.sign(self.sign_key, data)

    def record(self, entries, container_inspect=None, run_config=None, extra=None, volumes=None, streamed=None):
        """Add ``entries`` (artifact dicts) and the container facts to the manifest; return whether it changed.

        ``run_config`` also fills ``networks`` and ``volumes``; ``volumes`` ({name: definition}) is
        merged into ``manifest["volumes"]``; ``extra`` sets top-level keys (e.g. ``image_config``).
        ``streamed`` (a ``streamed`` entry: kind, name, ...) records an artifact that went straight to another
        host instead of into the bundle: it replaces the artifact of that kind and name, whose file is removed.
        """
        container = container_facts(container_inspect) if container_inspect else None
        source = self.source()

        replaced = set()

        def edit(manifest):
            if streamed:
                old = _bundle.find_artifact(manifest, streamed["kind"], streamed["name"])
                if old:
                    replaced.add(old.get("file"))
                    manifest["artifacts"].remove(old)
                _bundle.add_streamed(manifest, streamed)
            for entry in entries:
                old = _bundle.find_artifact(manifest, entry["kind"], entry["name"])
                if old and old.get("file") != entry["file"]:
                    replaced.add(old.get("file"))
                _bundle.add_artifact(manifest, entry)
            if run_config is not None:
                manifest["run_config"] = copy.deepcopy(run_config)
                manifest["networks"].update(copy.deepcopy(run_config.get("network_definitions") or {}))
                manifest["volumes"].update(copy.deepcopy(run_config.get("volume_definitions") or {}))
                _trust.seal_env(manifest, "run_config", self.recipients)
            if volumes:
                manifest["volumes"].update(copy.deepcopy(volumes))
            for key, value in (extra or {}).items():
                manifest[key] = copy.deepcopy(value)
                if key in _trust.SEALED_PLACES:
                    _trust.seal_env(manifest, key, self.recipients)

        try:
            manifest, changed = _bundle.update_manifest(
                self.dest, edit, source=source, container=container, sign=self.sign if self.sign_key else None
            )
        except FerryError as exc:
            self.fail(f"cannot record the artifacts in {self.manifest_path}: {exc}")
        self._prune(replaced, manifest)
        return changed

    # -- results ------------------------------------------------------------------------------

    def planned(self, filenames, **extra):
        """Result for check mode: what would be written; nothing is touched."""
        paths = [os.path.join(self.dest, f) for f in filenames]
        result = dict(changed=True, manifest=self.manifest_path, paths=paths, duration=self.duration(), **extra)
        if len(paths) == 1:
            result["path"] = paths[0]
        return result

    def duration(self):
        return round(time.monotonic() - self.started, 3)

    def result(self, written, entry, manifest_changed, **extra):
        """The common result of a module that wrote one artifact."""
        return dict(
            changed=bool(manifest_changed or not written.get("unchanged")),
            path=written["path"],
            size=written["size"],
            sha256=written["sha256"],
            bytes_read=written["raw_size"],
            bytes_written=written["size"],
            duration=self.duration(),
            manifest=self.manifest_path,
            artifact=entry,
            **extra,
        )


# -- docker save archives ---------------------------------------------------------------------


def _buffered(chunks):
    return io.BufferedReader(IterReader(chunks), buffer_size=CHUNK_SIZE)


def _read_json_member(tar, member, limit=64 * 1024 * 1024):
    if member.size > limit:
        raise ValueError(f"{member.name} in the image archive is larger than {limit} bytes")
    return json.loads(tar.extractfile(member).read().decode("utf-8"))


def save_manifest(chunks):
    """Read a ``docker save`` stream once, keeping only ``manifest.json`` (layer data is skipped).

    Returns the parsed ``manifest.json`` list. Memory stays bounded: tarfile's stream mode reads
    and discards the data of the members it is not asked for.
    """
    reader = _buffered(chunks)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if member.name.lstrip("./") == "manifest.json":
                    return _read_json_member(tar, member)
    finally:
        reader.close()
    raise ValueError("the image archive has no manifest.json")


def layer_files(save_manifest_doc, diff_ids):
    """Map each ``<dir>/layer.tar`` of a one-image ``manifest.json`` to its diff ID (``rootfs.diff_ids`` order)."""
    if len(save_manifest_doc) != 1:
        raise ValueError(f"expected one image in the archive, found {len(save_manifest_doc)}")
    layers = save_manifest_doc[0].get("Layers") or []
    if len(layers) != len(diff_ids):
        raise ValueError(f"the archive lists {len(layers)} layers but the image has {len(diff_ids)}")
    return {path.lstrip("./"): diff_id for path, diff_id in zip(layers, diff_ids)}


def filter_save_stream(chunks, drop_paths, out, expected_layers=None):
    """Copy a ``docker save`` tar stream to ``out`` (has ``write``), leaving out the members in ``drop_paths``.

    One streaming pass: tarfile ``r|`` in, ``w|`` out; each member's data is copied in chunks,
    never held whole. ``expected_layers`` (the ``Layers`` list the decision was based on) is
    compared with the archive's own ``manifest.json`` when it goes by, so an archive that changed
    between the two reads is refused rather than written with the wrong layers left out.
    Returns the list of member names dropped.
    """
    dropped = []
    seen_manifest = False
    reader = _buffered(chunks)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as src, tarfile.open(
            fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK_SIZE, copybufsize=CHUNK_SIZE
        ) as dst:
            for member in src:
                name = member.name.lstrip("./")
                if name in drop_paths:
                    dropped.append(name)
                    continue
                if name == "manifest.json" and expected_layers is not None:
                    data = src.extractfile(member).read()
                    doc = json.loads(data.decode("utf-8"))
                    if [p.lstrip("./") for p in doc[0].get("Layers") or []] != list(expected_layers):
                        raise ValueError("the image archive changed between the two reads; run the task again")
                    seen_manifest = True
                    dst.addfile(member, io.BytesIO(data))
                    continue
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    finally:
        reader.close()
    if expected_layers is not None and not seen_manifest:
        raise ValueError("the image archive has no manifest.json")
    return dropped
