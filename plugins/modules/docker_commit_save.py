#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_commit_save
short_description: Commit a container to an image and save it into a ferry.docker bundle
version_added: 0.1.0
description:
  - Commits the container (C(docker commit)) to a temporary image and streams C(docker save) of it into
    C(image.tar.zst) (or C(.tar.gz), C(.tar)) in a bundle directory, compressing and hashing on the fly.
    Unlike M(ferry.docker.docker_export) this keeps the image layers and the full image configuration.
  - Layers the target host already has can be left out with O(exclude_layers); C(docker load) skips
    layers it already has, so the smaller archive still loads there.
  - Records the artifact, the container's run configuration, network and volume definitions in the
    bundle's C(manifest.json). The temporary image is removed afterwards, also on failure, unless
    O(keep_image=true).
  - Volumes and bind mounts are not part of a commit; back them up with M(ferry.docker.docker_volume_backup).
notes:
  - The engine prepares the whole save archive before it sends the first byte; for large images raise
    O(timeout) so the client does not give up waiting.
extends_documentation_fragment:
  - ferry.docker.docker
  - ferry.docker.bundle_output
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Checks that the container exists and reports the file that would be written; nothing is committed.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: none
    details:
      - Every commit creates a new image (with a new creation time), so the archive always differs.
options:
  container:
    description:
      - Name or ID of the container to commit.
    type: str
    required: true
  pause:
    description:
      - Pause the container while it is committed, for a consistent filesystem. Its state is as before afterwards.
    type: bool
    default: true
  exclude_layers:
    description:
      - Layer diff IDs (V(sha256:...), as in C(docker image inspect) C(RootFS.Layers)) whose C(layer.tar)
        is left out of the archive, typically the layers the target host already has.
      - IDs that are not layers of the committed image are ignored.
      - The archive is read twice when this is set; the first read only parses C(manifest.json) and
        discards layer data, so no layer is held in memory or spooled to disk.
    type: list
    elements: str
    default: []
  keep_image:
    description:
      - Keep the committed image on the host instead of removing it.
    type: bool
    default: false
  image_name:
    description:
      - Repository and tag (V(repository:tag)) of the committed image.
      - Defaults to V(ferry-commit/<container>:<UTC timestamp>).
    type: str
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
seealso:
  - module: ferry.docker.docker_export
  - module: ferry.docker.docker_volume_backup
  - module: ferry.docker.docker_run_config_info
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Commit and save the web container into its bundle
  ferry.docker.docker_commit_save:
    container: web
    dest: /var/backups/ferry/web

- name: Leave out the base layers the target already has
  ferry.docker.docker_commit_save:
    container: web
    dest: /var/backups/ferry/web
    exclude_layers: "{{ target_image.images[0].RootFS.Layers }}"
"""

RETURN = r"""
path:
  description: Path of the archive file.
  returned: always
  type: str
  sample: /var/backups/ferry/web/image.tar.zst
paths:
  description: Paths that would be written (check mode only).
  returned: check mode
  type: list
  elements: str
size:
  description: Size in bytes of the archive file as stored (compressed).
  returned: success, not in check mode
  type: int
sha256:
  description: sha256 of the archive file as stored.
  returned: success, not in check mode
  type: str
bytes_read:
  description: Uncompressed bytes of the archive (after leaving out excluded layers).
  returned: success, not in check mode
  type: int
bytes_written:
  description: Bytes written to the archive file.
  returned: success, not in check mode
  type: int
duration:
  description: Seconds the task took.
  returned: always
  type: float
manifest:
  description: Path of the bundle's C(manifest.json).
  returned: always
  type: str
image_id:
  description: ID of the committed image.
  returned: success, not in check mode
  type: str
image_removed:
  description: Whether the committed image was removed from the host afterwards.
  returned: success, not in check mode
  type: bool
artifact:
  description: The artifact entry recorded in the manifest (kind V(image)).
  returned: success, not in check mode
  type: dict
  sample:
    kind: image
    name: web
    file: image.tar.zst
    compression: zstd
    size: 812345
    sha256: 3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555
    raw_size: 2048000
    image_id: sha256:0d7c...
    image_ref: ferry-commit/web:20250101T120000Z
    repo_tags: [ferry-commit/web:20250101T120000Z]
    layers: [sha256:8bc3..., sha256:5f70...]
    excluded_layers: [sha256:8bc3...]
    container_id: 4f1c0d...
"""

import time

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
from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._stream import CHUNK_SIZE, suffix


def image_ref(params, container_name):
    if params.get("image_name"):
        repository, sep, tag = params["image_name"].rpartition(":")
        if not sep or "/" in tag:
            return params["image_name"], "latest"
        return repository, tag
    return "ferry-commit/" + repository_component(container_name), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def save(cap, ref, image, exclude):
    """Stream the save archive of ``ref`` into the bundle; return (written, excluded diff IDs)."""
    client = cap.client
    filename = "image.tar" + suffix(cap.compression)
    diff_ids = (image.get("RootFS") or {}).get("Layers") or []
    excluded = sorted(set(exclude) & set(diff_ids))
    if not excluded:
        return cap.write(client.get_image(ref, chunk_size=CHUNK_SIZE), filename), []
    # First read: only manifest.json, to know which <dir>/layer.tar holds which diff ID.
    doc = save_manifest(client.get_image(ref, chunk_size=CHUNK_SIZE))
    files = layer_files(doc, diff_ids)
    drop = {path for path, diff_id in files.items() if diff_id in excluded}
    with cap.writer(filename) as writer:
        filter_save_stream(client.get_image(ref, chunk_size=CHUNK_SIZE), drop, writer, expected_layers=list(files))
        return writer.commit(), excluded


def commit(client, container_id, repository, tag, pause):
    """``POST /commit`` with an explicit pause flag; return the new image ID.

    Called directly because ``APIClient.commit()`` has no ``pause`` argument before Docker SDK 7
    (Debian 12 ships 5.0.3), and the engine pauses by default.
    """
    params = {"container": container_id, "repo": repository, "tag": tag, "pause": "1" if pause else "0"}
    response = client._post_json(client._url("/commit"), data={}, params=params)  # pylint: disable=protected-access
    return client._result(response, json=True)["Id"]  # pylint: disable=protected-access


def main():
    spec = argument_spec()
    spec.update(
        container=dict(type="str", required=True),
        pause=dict(type="bool", default=True),
        exclude_layers=dict(type="list", elements="str", default=[]),
        keep_image=dict(type="bool", default=False),
        image_name=dict(type="str"),
    )
    fm = FerryModule(spec, supports_check_mode=True)
    cap = Capture(fm)
    params = fm.params
    inspect = cap.inspect_container(params["container"])
    name = inspect["Name"].lstrip("/")
    repository, tag = image_ref(params, name)
    ref = f"{repository}:{tag}"
    if fm.check_mode:
        fm.exit(**cap.planned(["image.tar" + suffix(cap.compression)], image_ref=ref))

    run_config = cap.run_config(inspect)
    cap.ensure_dest(inspect)
    client = fm.client
    image_id = None
    removed = False
    failure = None
    try:
        with cap.errors(f"committing container {name} to {ref}"):
            image_id = commit(client, inspect["Id"], repository, tag, params["pause"])
        with cap.errors(f"saving image {ref} of container {name} to {cap.dest}"):
            image = client.inspect_image(image_id)
            written, excluded = save(cap, ref, image, params["exclude_layers"])
    finally:
        if image_id is not None and not params["keep_image"]:
            error = attempt(client.remove_image, ref)
            removed = error is None
            if error:
                failure = f"the committed image {ref} ({image_id}) could not be removed: {error}; remove it by hand"
    if failure:
        fm.fail(failure)
    entry = artifact_entry(
        "image",
        name,
        written,
        image_id=image_id,
        image_ref=ref,
        repo_tags=[ref],
        layers=list((image.get("RootFS") or {}).get("Layers") or []),
        excluded_layers=excluded,
        container_id=inspect["Id"],
    )
    changed = cap.record([entry], inspect, run_config=run_config)
    fm.exit(**cap.result(written, entry, changed, image_id=image_id, image_removed=removed))


if __name__ == "__main__":
    main()
