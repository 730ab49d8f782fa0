# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_load): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_bundle_restore`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._bundle import find_artifact, find_streamed
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException
from ansible_collections.ferry.docker.plugins.module_utils._names import image_problem, split_reference
from ansible_collections.ferry.docker.plugins.module_utils._restore import (
    RequestException,
    RestoreError,
    Timer,
    UntaggedImageStream,
    base_result,
    inspect_or_none,
    open_bundle,
    require_artifact,
)
from ansible_collections.ferry.docker.plugins.module_utils._stream import FerryError


def local_layer_chains(client):
    """Every prefix of every local image's layer list (diff IDs), as tuples."""
    chains = set()
    for image in client.images(all=True):
        layers = ((inspect_or_none(client.inspect_image, image["Id"]) or {}).get("RootFS") or {}).get("Layers") or []
        for end in range(1, len(layers) + 1):
            chains.add(tuple(layers[:end]))
    return chains


def missing_layers(artifact, chains):
    """The left-out layers the engine does not have (at the same position of the chain)."""
    excluded = list(artifact.get("excluded_layers") or [])
    layers = list(artifact.get("layers") or [])
    if not excluded:
        return []
    if layers and all(layer in layers for layer in excluded):
        return [layer for layer in excluded if tuple(layers[: layers.index(layer) + 1]) not in chains]
    known = {layer for chain in chains for layer in chain}
    return [layer for layer in excluded if layer not in known]


def _undo(client, image_id, present, added, moved, loaded_ids, existing_ids=()):
    """Remove the tags and the image a failed load added, and give moved tags back; errors are ignored."""
    for reference in added:
        try:
            client.remove_image(reference, noprune=True)
        except (DockerException, RequestException):
            continue
    for reference, old_id in moved.items():
        repository, tag = split_reference(reference)
        try:
            client.tag(old_id, repository, tag=tag, force=True)
        except (DockerException, RequestException):
            continue
    if present is not None:
        return
    for loaded in dict.fromkeys([*loaded_ids, image_id]):
        if loaded in existing_ids:
            continue
        try:
            client.remove_image(loaded, force=True)
        except (DockerException, RequestException):
            continue


SPEC = dict(
    bundle=dict(type="path", required=True),
    name=dict(type="str"),
    tag=dict(type="str"),
    force_tag=dict(type="bool", default=False),
    streamed=dict(type="bool", default=False),
    **_trust.argument_spec(),
)
KWARGS = dict(
    supports_check_mode=True,
)


def run(module):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
    p = module.params
    timer = Timer()
    bundle = p["bundle"]
    result = dict(changed=False, operation="none", tags=[], excluded_layers=[])
    try:
        manifest = open_bundle(bundle, keys=_trust.BundleKeys.from_params(p))[0]
        artifact = _image_entry(bundle, manifest, p["name"], p["streamed"])
        if p["streamed"]:
            result.update(path="", size=artifact.get("bytes", 0), sha256=artifact.get("sha256", ""))
            result.update(bytes_read=0, bytes_written=0)
        else:
            result.update(base_result(bundle, artifact))
        image_id = artifact.get("image_id")
        if not image_id:
            raise RestoreError(
                f"image artifact {artifact['name']} of bundle {bundle} records no image_id; capture it again"
            )
        result["image_id"] = image_id
        wanted_tags = [p["tag"]] if p["tag"] else list(artifact.get("repo_tags") or [])
        result["excluded_layers"] = list(artifact.get("excluded_layers") or [])

        problems = [problem for problem in map(image_problem, wanted_tags) if problem]
        if problems:
            raise RestoreError(
                f"image artifact {artifact['name']} of bundle {bundle}: {'; '.join(problems)}; nothing was loaded"
            )

        client = module.client
        present = inspect_or_none(client.inspect_image, image_id)
        owners = {ref: (inspect_or_none(client.inspect_image, ref) or {}).get("Id") for ref in sorted(set(wanted_tags))}
        moved = {reference: owner for reference, owner in owners.items() if owner and owner != image_id}
        if moved and not p["force_tag"]:
            raise RestoreError(
                "loading image {} of bundle {} would move {} from another image; nothing was loaded. Set "
                "force_tag=true to move them, or give another tag with tag".format(
                    image_id, bundle, ", ".join(f"{ref} (now {owner[:19]})" for ref, owner in sorted(moved.items()))
                )
            )
        added = [reference for reference, owner in owners.items() if not owner]
        if present is None and p["streamed"]:
            raise RestoreError(
                f"image {image_id} of bundle {bundle} was streamed to {artifact.get('to', 'another host')} when it was "
                "captured, but this engine does not have it; nothing was changed. Restore on that host, or capture "
                "the container again"
            )
        if present is None:
            missing = missing_layers(artifact, local_layer_chains(client)) if result["excluded_layers"] else []
            if missing:
                raise RestoreError(
                    "image archive {} leaves out {} layer(s) that this engine does not have: {}. Nothing was "
                    "loaded. Load the base image first (it must have these layers in this order), or capture "
                    "the image again without exclude_layers".format(result["path"], len(missing), ", ".join(missing))
                )
            action = "load"
            have_tags = []
        else:
            have_tags = list(present.get("RepoTags") or [])
            action = "tag" if set(wanted_tags) - set(have_tags) else "none"
        result.update(operation=action, changed=action != "none")
        loaded_ids = []
        if action != "none" and not module.check_mode:
            existing_ids = {image["Id"] for image in client.images(all=True)} if action == "load" else set()
            try:
                have_tags = _apply(client, bundle, artifact, result, action, wanted_tags, have_tags, loaded_ids)
            except BaseException:
                _undo(client, image_id, present, added, moved, loaded_ids, existing_ids)
                raise
        result["tags"] = sorted(set(have_tags) | set(wanted_tags))
        if module.module._diff:
            result["diff"] = dict(
                before={"image_present": present is not None, "tags": sorted((present or {}).get("RepoTags") or [])},
                after={"image_present": True, "tags": result["tags"]},
            )
    except (FerryError, ValueError) as exc:
        module.fail(str(exc))
    except (DockerException, RequestException) as exc:
        module.fail(f"loading the image of bundle {bundle} failed at the Docker engine: {exc}")
    result["duration"] = timer.elapsed
    module.exit(**result)


def _image_entry(bundle, manifest, name, streamed):
    """The image artifact to load (verified), or with ``streamed`` the ``streamed`` entry of the image that a capture
    loaded straight into an engine. RestoreError when the bundle does not have the one asked for."""
    entry = find_streamed(manifest, "image", name)
    if not streamed:
        if entry is not None and find_artifact(manifest, "image", name) is None:
            raise RestoreError(
                f"bundle {bundle} holds no image archive: image {entry.get('image_id')} was streamed to "
                f"{entry.get('to')} when it was captured (docker_commit_save stream_to). Tag it there with "
                "streamed=true, or capture the container again into a bundle"
            )
        return require_artifact(bundle, manifest, "image", name)
    if entry is None:
        raise RestoreError(
            f"bundle {bundle} records no streamed image{' ' + name if name else ''}; load its image archive "
            "(streamed=false)"
        )
    return entry


def _apply(client, bundle, artifact, result, action, wanted_tags, have_tags, loaded_ids):
    """Load (if needed) and tag; returns the tags of the image afterwards.

    ``loaded_ids`` receives the image IDs the engine reports as loaded, so a failure can remove them.
    """
    image_id = result["image_id"]
    if action == "load":
        stream = UntaggedImageStream(bundle, artifact)
        for message in client.load_image(data=iter(stream)):
            if isinstance(message, dict) and message.get("error"):
                raise RestoreError(f"docker load of {result['path']} failed: {message['error']}; nothing was kept")
            text = str((message or {}).get("stream") or "") if isinstance(message, dict) else ""
            if text.startswith("Loaded image ID: "):
                loaded_ids.append(text[len("Loaded image ID: ") :].strip())
        result["bytes_read"], result["bytes_written"] = stream.bytes_read, stream.bytes_written
        loaded = inspect_or_none(client.inspect_image, image_id)
        if loaded is None:
            raise RestoreError(
                f"docker load of {result['path']} finished but image {image_id} is not on the engine; the archive "
                "does not hold the image the manifest names, what it loaded was removed again: capture it again"
            )
        have_tags = list(loaded.get("RepoTags") or [])
    for reference in wanted_tags:
        if reference not in have_tags:
            repository, tag = split_reference(reference)
            client.tag(image_id, repository, tag=tag, force=True)
            have_tags.append(reference)
    return have_tags
