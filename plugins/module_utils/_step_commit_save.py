# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_commit_save): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_migrate_source`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

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


SPEC = dict(
    argument_spec(),
    container=dict(type="str", required=True),
    pause=dict(type="bool", default=True),
    exclude_layers=dict(type="list", elements="str", default=[]),
    keep_image=dict(type="bool", default=False),
    image_name=dict(type="str"),
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
