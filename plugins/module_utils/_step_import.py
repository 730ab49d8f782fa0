# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_import): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_bundle_restore`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

import json
import re

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException
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


SPEC = dict(
    bundle=dict(type="path", required=True),
    name=dict(type="str"),
    repository=dict(type="str"),
    tag=dict(type="str", default="latest"),
    allow_devices=dict(type="bool", default=False),
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
