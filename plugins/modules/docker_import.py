#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_import
short_description: Import the exported filesystem of a ferry.docker bundle as an image
version_added: 0.1.0
description:
  - Streams the C(filesystem) artifact of a bundle (written by M(ferry.docker.docker_export)),
    decompressed, into C(docker import). The archive is never held in memory.
  - The container's recorded image config (C(image_config) in the manifest) is applied again as
    Dockerfile-style changes (C(CMD) and C(ENTRYPOINT) as JSON arrays, C(ENV), C(WORKDIR), C(USER),
    C(EXPOSE), C(VOLUME), C(HEALTHCHECK), C(LABEL), C(ONBUILD)), so that a plain C(docker run) of
    the image runs the original command.
  - C(docker import) cannot set C(STOPSIGNAL) or C(SHELL); they are listed in RV(not_applied) with a
    warning. M(ferry.docker.docker_container_restore) sets the stop signal from the run config.
  - The image gets the label C(ferry.docker.artifact-sha256) with the sha256 of the archive. If the
    image O(repository):O(tag) already carries the label with that value, nothing is imported.
  - The size and sha256 of the archive are checked before anything is imported, and the archive is
    read once through the same tar safety rules as a volume restore (no absolute names, no C(..), no
    member written through a symlink, no device nodes unless O(allow_devices=true), files no larger
    than the recorded size). The engine then receives a tar rewritten from the checked members,
    never the file as stored.
attributes:
  check_mode:
    support: full
    description: Reports whether the image would be imported; the checks still run.
  diff_mode:
    support: full
    description: Shows the archive checksum recorded on the image before and after.
  idempotent:
    support: full
    description: A second run with the same bundle reports no change.
options:
  bundle:
    description: Bundle directory written by the capture modules (holds C(manifest.json)).
    type: path
    required: true
  name:
    description: Name of the filesystem artifact in the bundle; by default the first one.
    type: str
  repository:
    description:
      - Repository of the image to create.
      - By default C(ferry-import/<container name>).
    type: str
  tag:
    description: Tag of the image to create.
    type: str
    default: latest
  allow_devices:
    description: Accept device and FIFO nodes in the filesystem archive.
    type: bool
    default: false
extends_documentation_fragment:
  - ferry.docker.docker
  - ferry.docker.bundle_trust
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
  - C(zstandard) Python library for zstd-compressed bundles
seealso:
  - module: ferry.docker.docker_export
  - module: ferry.docker.docker_container_restore
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Import the exported filesystem of a bundle
  ferry.docker.docker_import:
    bundle: /srv/backups/web
    repository: restored/web
    tag: "2024-01-31"
  register: imported

- name: Recreate the container from it
  ferry.docker.docker_container_restore:
    bundle: /srv/backups/web
    image: "{{ imported.image }}"
"""

RETURN = r"""
image:
  description: The image reference, C(repository:tag).
  returned: always
  type: str
image_id:
  description: ID of the image (not set in check mode when it would be imported).
  returned: success
  type: str
changes:
  description: The Dockerfile-style changes applied on import (environment values are masked).
  returned: always
  type: list
  elements: str
not_applied:
  description: Keys of the recorded image config that an import cannot set (for example C(StopSignal)).
  returned: always
  type: list
  elements: str
path:
  description: Archive file.
  returned: always
  type: str
size:
  description: Size of the archive file.
  returned: always
  type: int
sha256:
  description: sha256 of the archive file.
  returned: always
  type: str
bytes_read:
  description: Bytes of the archive file read for the import.
  returned: always
  type: int
bytes_written:
  description: Decompressed bytes fed to Docker.
  returned: always
  type: int
duration:
  description: Seconds the task took.
  returned: always
  type: float
"""

import json
import re

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException, FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._names import image_problem
from ansible_collections.ferry.docker.plugins.module_utils._restore import (
    ARTIFACT_LABEL,
    NormalisedStream,
    RequestException,
    RestoreError,
    Timer,
    base_result,
    import_changes,
    inspect_or_none,
    open_bundle,
    require_artifact,
    scan_artifact,
)
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import redact_env
from ansible_collections.ferry.docker.plugins.module_utils._stream import FerryError


def _default_repository(manifest):
    name = ((manifest.get("container") or {}).get("name") or "").lstrip("/").lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", name).strip("._-") or "container"
    return "ferry-import/" + name


def _masked(changes):
    return redact_env(changes, prefix="ENV ")


def _imported_id(output):
    """The image id from the JSON lines ``POST /images/create`` answers with; RestoreError on an error."""
    image_id = None
    for line in str(output or "").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("error"):
            raise RestoreError(message["error"])
        status = message.get("status") or ""
        if status.startswith("sha256:"):
            image_id = status
    return image_id


def main():
    module = FerryModule(
        dict(
            bundle=dict(type="path", required=True),
            name=dict(type="str"),
            repository=dict(type="str"),
            tag=dict(type="str", default="latest"),
            allow_devices=dict(type="bool", default=False),
            **_trust.argument_spec(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    timer = Timer()
    bundle = p["bundle"]
    result = dict(changed=False)
    try:
        manifest = open_bundle(bundle, keys=_trust.BundleKeys.from_params(p))[0]
        artifact = require_artifact(bundle, manifest, "filesystem", p["name"])
        result.update(base_result(bundle, artifact))
        scan_artifact(bundle, artifact, allow_devices=p["allow_devices"])
        repository = p["repository"] or _default_repository(manifest)
        reference = f"{repository}:{p['tag']}"
        problem = image_problem(reference)
        if problem:
            raise RestoreError(f"cannot import bundle {bundle}: {problem}; set repository and tag")
        changes, not_applied = import_changes(manifest.get("image_config") or {}, {ARTIFACT_LABEL: artifact["sha256"]})
        result.update(image=reference, changes=_masked(changes), not_applied=not_applied)
        if not_applied:
            module.module.warn(
                "docker import cannot set {} on the image; a plain docker run of {} will not have them, "
                "docker_container_restore sets them from the run config".format(", ".join(not_applied), reference)
            )

        client = module.client
        present = inspect_or_none(client.inspect_image, reference)
        before = ((present or {}).get("Config") or {}).get("Labels") or {}
        result["changed"] = before.get(ARTIFACT_LABEL) != artifact["sha256"]
        if present is not None:
            result["image_id"] = present["Id"]
        if result["changed"] and not module.check_mode:
            stream = NormalisedStream(bundle, artifact, p["allow_devices"])
            try:
                output = client.import_image_from_data(
                    iter(stream), repository=repository, tag=p["tag"], changes=changes
                )
                _imported_id(output)
            except RestoreError as exc:
                raise RestoreError(f"docker import of {result['path']} as {reference} failed: {exc}") from exc
            result["bytes_read"], result["bytes_written"] = stream.bytes_read, stream.bytes_written
            imported = inspect_or_none(client.inspect_image, reference)
            if imported is None:
                raise RestoreError(f"docker import of {result['path']} finished but {reference} is not on the engine")
            result["image_id"] = imported["Id"]
        if module.module._diff:
            result["diff"] = dict(
                before={"image": reference, ARTIFACT_LABEL: before.get(ARTIFACT_LABEL)},
                after={"image": reference, ARTIFACT_LABEL: artifact["sha256"]},
            )
    except (FerryError, ValueError) as exc:
        module.fail(str(exc))
    except (DockerException, RequestException) as exc:
        module.fail(f"importing the filesystem of bundle {bundle} failed at the Docker engine: {exc}")
    result["duration"] = timer.elapsed
    module.exit(**result)


if __name__ == "__main__":
    main()
