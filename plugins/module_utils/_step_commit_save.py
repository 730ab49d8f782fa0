# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_commit_save): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_migrate_source`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

import hashlib
import threading
import time

from ansible_collections.ferry.docker.plugins.module_utils import _transfer
from ansible_collections.ferry.docker.plugins.module_utils._bundle import artifact_entry
from ansible_collections.ferry.docker.plugins.module_utils._capture import (
    Capture,
    argument_spec,
    attempt,
    filter_save_stream,
    layer_files,
    repository_component,
    save_manifest,
)
from ansible_collections.ferry.docker.plugins.module_utils._stream import CHUNK_SIZE, new_compressor, suffix


def image_ref(params, container_name):
    if params.get("image_name"):
        repository, sep, tag = params["image_name"].rpartition(":")
        if not sep or "/" in tag:
            return params["image_name"], "latest"
        return repository, tag
    return "ferry-commit/" + repository_component(container_name), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def save_into(client, ref, image, exclude, out):
    """Write the save archive of ``ref`` to ``out`` (has ``write``), leaving out the layers in ``exclude`` that the
    image has; the diff IDs left out."""
    diff_ids = (image.get("RootFS") or {}).get("Layers") or []
    excluded = _excluded(image, exclude)
    if not excluded:
        for chunk in client.get_image(ref, chunk_size=CHUNK_SIZE):
            out.write(chunk)
        return []
    # First read: only manifest.json, to know which <dir>/layer.tar holds which diff ID.
    doc = save_manifest(client.get_image(ref, chunk_size=CHUNK_SIZE))
    files = layer_files(doc, diff_ids)
    drop = {path for path, diff_id in files.items() if diff_id in excluded}
    filter_save_stream(client.get_image(ref, chunk_size=CHUNK_SIZE), drop, out, expected_layers=list(files))
    return excluded


def _excluded(image, exclude):
    """The diff IDs of ``exclude`` that are layers of ``image``."""
    return sorted(set(exclude) & set((image.get("RootFS") or {}).get("Layers") or []))


def save(cap, ref, image, exclude):
    """Stream the save archive of ``ref`` into the bundle; return (written, excluded diff IDs)."""
    filename = "image.tar" + suffix(cap.compression)
    if not _excluded(image, exclude):  # the engine's stream as it is, through the pipelined writer
        return cap.write(cap.client.get_image(ref, chunk_size=CHUNK_SIZE), filename), []
    with cap.writer(filename) as writer:
        excluded = save_into(cap.client, ref, image, exclude, writer)
        return writer.commit(), excluded


class _Packed:
    """Feeds ``load`` (``write``) the archive compressed with ``compressor``; the sha256 and size of the archive."""

    def __init__(self, load, compressor):
        self.load, self.compressor = load, compressor
        self.raw_bytes = 0
        self._sha256 = hashlib.sha256()

    def write(self, data):
        self.raw_bytes += len(data)
        self._sha256.update(data)
        self.load.write(self.compressor.compress(data))

    def finish(self):
        self.load.write(self.compressor.flush())
        return self.load.finish()

    @property
    def sha256(self):
        return self._sha256.hexdigest()


HOLD_BACK = 64 * 1024  # the save archive's last bytes: its manifest and end-of-archive marker are in them


class _HeldBack:
    """Passes everything but the last ``keep`` bytes written on to ``out``; ``release()`` sends those too. An
    engine that has not received an archive's end cannot finish loading it."""

    def __init__(self, out, keep=HOLD_BACK):
        self.out, self.keep = out, keep
        self.tail = bytearray()

    def write(self, data):
        self.tail += data
        if len(self.tail) > 2 * self.keep:
            cut = len(self.tail) - self.keep
            self.out.write(bytes(self.tail[:cut]))
            del self.tail[:cut]

    def release(self):
        self.out.write(bytes(self.tail))
        self.tail.clear()


class _Beside:
    """``work()`` in a thread; ``result()`` waits for it and gives what it returned, or raises what it raised."""

    def __init__(self, work):
        self._box = {}
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work):
        try:
            self._box["value"] = work()
        except BaseException as exc:  # raised in result()
            self._box["error"] = exc

    def result(self):
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


def stream(cap, image_id, image, exclude, target):
    """Load the image ``image_id`` straight into the engine of ``target`` (``stream_to``) over the run's SSH
    connection, untagged, hashed as it goes; nothing is staged on either disk. Returns what the manifest records
    under ``streamed``. The engine there checks every layer against the image's diff IDs as it loads, and the
    image ID it reports (the digest of the image's configuration) must be ``image_id``: an image that is not
    is removed there again and the step fails. The stream is compressed as the bundle would be (zstd only when
    that host has zstd to unpack it; else it goes as it is)."""
    where = f"{target['user']}@{target['address']}"
    args = (target["key_dir"], target["port"], target["user"], target["address"])
    nothing = dict(to=where, image_id=image_id, new=False, bytes=0, raw_bytes=0, sha256="")
    probe_timeout = min(60, target["timeout"])
    try:
        checking = None
        if target.get("unpack") in ("zstd", "none"):
            # how it unpacks is known: the stream starts now and whether the host has the image is asked beside it
            zstd = target["unpack"] == "zstd"
            checking = _Beside(lambda: _transfer.probe_target(*args, image_id, timeout=probe_timeout))
        else:
            with cap.errors(f"asking {where} whether it has image {image_id}"):
                there, zstd = _transfer.probe_target(*args, image_id, timeout=probe_timeout)
                if there:
                    return nothing
        wire = cap.compression if cap.compression != "zstd" or zstd else "none"
        load = _transfer.RemoteLoad(*args, timeout=target["timeout"], unpack=wire)
        packed = _Packed(load, new_compressor(wire, cap.level))
        try:
            # by ID: the archive names no tag, so the image arrives untagged
            with cap.errors(f"streaming image {image_id} into the engine on {where}"):
                if checking is None:
                    excluded = save_into(cap.client, image_id, image, exclude, packed)
                else:
                    held = _HeldBack(packed)
                    excluded = save_into(cap.client, image_id, image, exclude, held)
                    # the archive's end waits for the answer: the engine there cannot have loaded it yet
                    with cap.errors(f"asking {where} whether it has image {image_id}"):
                        there, _zstd = checking.result()
                    if there:
                        load.abort()  # cut off before its end: the engine adds nothing
                        return nothing
                    held.release()
                loaded = packed.finish()
        except BaseException:
            load.abort()  # a load cut off in the middle adds no image: the engine registers it once all is in
            raise
    except _transfer.SendFailed as exc:
        cap.fail(f"streaming image {image_id} into the engine on {where} failed: {exc}")
    if loaded != [image_id]:
        left = [i for i in loaded if i != image_id and _transfer.remove_remote_image(*args, i)]
        cap.fail(
            f"the engine on {where} loaded {', '.join(loaded) or 'no image'} from the stream of image {image_id}; "
            "what it loaded was removed again" + (f" except {', '.join(left)} (remove it by hand)" if left else "")
        )
    return dict(
        to=where,
        image_id=image_id,
        new=True,
        compression=wire,
        bytes=load.bytes,
        raw_bytes=packed.raw_bytes,
        sha256=packed.sha256,
        excluded_layers=excluded,
    )


def commit(client, container_id, repository, tag, pause):
    """``POST /commit`` with an explicit pause flag; return the new image ID.

    Called directly because ``APIClient.commit()`` has no ``pause`` argument before Docker SDK 7
    (Debian 12 ships 5.0.3), and the engine pauses by default.
    """
    params = {"container": container_id, "repo": repository, "tag": tag, "pause": "1" if pause else "0"}
    response = client._post_json(client._url("/commit"), data={}, params=params)  # pylint: disable=protected-access
    return client._result(response, json=True)["Id"]  # pylint: disable=protected-access


SPEC = dict(
    argument_spec(),
    container=dict(type="str", required=True),
    pause=dict(type="bool", default=True),
    exclude_layers=dict(type="list", elements="str", default=[]),
    keep_image=dict(type="bool", default=False),
    image_name=dict(type="str"),
    stream_to=dict(
        type="dict",
        options=dict(
            user=dict(type="str", default="root"),
            address=dict(type="str", required=True),
            port=dict(type="int", default=22),
            key_dir=dict(type="path", required=True),
            timeout=dict(type="int", default=3600),
            unpack=dict(type="str", choices=["zstd", "none"]),
        ),
    ),
)
KWARGS = dict(supports_check_mode=True)


def run(fm):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
    cap = Capture(fm)
    params = fm.params
    inspect = cap.inspect_container(params["container"])
    name = inspect["Name"].lstrip("/")
    repository, tag = image_ref(params, name)
    ref = f"{repository}:{tag}"
    target = params["stream_to"]
    if fm.check_mode:
        files = [] if target else ["image.tar" + suffix(cap.compression)]
        fm.exit(**cap.planned(files, image_ref=ref))

    run_config = cap.run_config(inspect)
    cap.ensure_dest(inspect)
    client = fm.client
    image_id = None
    removed = False
    failure = None
    streamed = None
    try:
        with cap.errors(f"committing container {name} to {ref}"):
            image_id = commit(client, inspect["Id"], repository, tag, params["pause"])
        with cap.errors(f"saving image {ref} of container {name} to {cap.dest}"):
            image = client.inspect_image(image_id)
        if target:
            streamed = stream(cap, image_id, image, params["exclude_layers"], target)
        else:
            with cap.errors(f"saving image {ref} of container {name} to {cap.dest}"):
                written, excluded = save(cap, ref, image, params["exclude_layers"])
    finally:
        if image_id is not None and not params["keep_image"]:
            error = attempt(client.remove_image, ref)
            removed = error is None
            if error:
                failure = f"the committed image {ref} ({image_id}) could not be removed: {error}; remove it by hand"
    if failure:
        if streamed and streamed["new"]:
            failure += f"; image {image_id} stays on {streamed['to']}, untagged"
        fm.fail(failure)
    layers = list((image.get("RootFS") or {}).get("Layers") or [])
    if streamed:
        entry = dict(streamed, kind="image", name=name, image_ref=ref, layers=layers, container_id=inspect["Id"])
        changed = cap.record([], inspect, run_config=run_config, streamed=entry)
        fm.exit(
            changed=True,
            image_id=image_id,
            image_removed=removed,
            streamed=entry,
            bytes_read=streamed["raw_bytes"],
            bytes_written=0,
            size=streamed["bytes"],
            sha256=streamed["sha256"],
            path="",
            duration=cap.duration(),
            manifest=cap.manifest_path,
        )
    entry = artifact_entry(
        "image",
        name,
        written,
        image_id=image_id,
        image_ref=ref,
        repo_tags=[ref],
        layers=layers,
        excluded_layers=excluded,
        container_id=inspect["Id"],
    )
    changed = cap.record([entry], inspect, run_config=run_config)
    fm.exit(**cap.result(written, entry, changed, image_id=image_id, image_removed=removed))
