# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_volume_restore): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_bundle_restore`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._bundle import (
    select_artifacts,
    verify_artifacts,
)
from ansible_collections.ferry.docker.plugins.module_utils._client import engine_errors
from ansible_collections.ferry.docker.plugins.module_utils._names import name_problem, volume_option_problems
from ansible_collections.ferry.docker.plugins.module_utils._restore import (
    RestoreError,
    Timer,
    VolumeHelper,
    artifact_fingerprint,
    base_result,
    fill_new_volume,
    fill_volume,
    inspect_or_none,
    metadata_version,
    open_bundle,
    pick_helper_image,
    refuse_privileged,
    scan_artifact,
    volume_state,
)
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import volume_create_kwargs
from ansible_collections.ferry.docker.plugins.module_utils._stream import FerryError


def _anonymous(manifest, artifact):
    if artifact.get("anonymous"):
        return True
    definition = (manifest.get("volumes") or {}).get(artifact.get("volume") or artifact["name"]) or {}
    return bool(definition.get("Anonymous"))


def _is_bind(artifact):
    return artifact.get("type") == "bind" or artifact["name"].startswith("bind:")


def _definition(manifest, artifact):
    name = artifact.get("volume") or artifact["name"]
    definition = dict((manifest.get("volumes") or {}).get(name) or {})
    definition.setdefault("Name", name)
    return definition


SPEC = dict(
    bundle=dict(type="path", required=True),
    volumes=dict(type="list", elements="str"),
    volume_map=dict(type="dict", default={}),
    force=dict(type="bool", default=False),
    allow_devices=dict(type="bool", default=False),
    allow_privileged=dict(type="bool", default=False),
    helper_image=dict(type="str"),
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
    try:
        keys = _trust.BundleKeys.from_params(p)
        manifest = open_bundle(bundle, keys=keys)[0]
        names = p["volumes"]
        if names is None:
            names = [
                a["name"]
                for a in manifest["artifacts"]
                if a["kind"] == "volume" and not _anonymous(manifest, a) and not _is_bind(a)
            ]
        unknown = sorted(set(p["volume_map"]) - set(names))
        if unknown:
            raise RestoreError(
                "volume_map names {}, which is not among the volumes to restore ({}); use recorded volume "
                "names as keys".format(", ".join(unknown), ", ".join(names) or "none")
            )
        chosen = select_artifacts(bundle, manifest, kinds=["volume"], names=names) if names else []
        for artifact in chosen:
            if _is_bind(artifact) and artifact["name"] not in p["volume_map"]:
                raise RestoreError(
                    f"artifact {artifact['name']} is the backup of a bind mount, not of a volume; give the volume "
                    "to restore it into with volume_map"
                )

        targets = {}
        for artifact in chosen:
            target = p["volume_map"].get(artifact["name"]) or artifact.get("volume") or artifact["name"]
            problem = name_problem("volume", target)
            if problem:
                raise RestoreError(f"cannot restore {artifact['name']}: {problem}; nothing was changed")
            refuse_privileged(
                f"volume {target}",
                volume_option_problems(_definition(manifest, artifact)),
                p["allow_privileged"] or keys.trusted,
            )
            targets[artifact["name"]] = target

        client = module.client
        plans = []
        for artifact in chosen:
            target = targets[artifact["name"]]
            entry = base_result(bundle, artifact)
            entry.update(
                name=target, artifact=artifact["name"], metadata=metadata_version(artifact), metadata_not_kept=[]
            )
            existing = inspect_or_none(client.inspect_volume, target)
            plans.append((artifact, entry, existing))

        # 1. Into volumes that all are new (not in check mode): each archive in one pass, hashed and checked as it
        # streams into the volume this run creates, which is removed unless all of it passes (StreamedFill).
        # Otherwise every archive's size and sha256, then the tar safety scan; nothing changes before all pass.
        # (An encrypted archive is decrypted by a reader of its own: it is checked first.)
        streamed = not module.check_mode and all(
            existing is None and not artifact.get("encryption") for artifact, _e, existing in plans
        )
        if not streamed:
            verify_artifacts(bundle, manifest, kinds=["volume"], names=[a["name"] for a in chosen])
            for artifact in chosen:
                scan_artifact(bundle, artifact, allow_devices=p["allow_devices"])

        # 2. decide: look at the existing volumes through a helper container
        helper_image = None
        if any(existing is not None for _a, _e, existing in plans):
            helper_image = pick_helper_image(client, p["helper_image"])
        for artifact, entry, existing in plans:
            if existing is None:
                entry.update(state_before="absent", action="create")
                continue
            with VolumeHelper(client, helper_image, entry["name"]) as helper:
                state = volume_state(helper, lambda xattrs, a=artifact: artifact_fingerprint(bundle, a, xattrs))
            entry["state_before"] = state
            if state == "empty":
                entry["action"] = "fill"
            elif state == "same":
                entry["action"] = "none"
            elif p["force"]:
                entry["action"] = "overwrite"
            else:
                raise RestoreError(
                    f"volume {entry['name']} already holds other data than the archive {entry['path']}; "
                    "nothing was changed. Set force=true to extract the archive over it, restore under "
                    "another name with volume_map, or remove the volume first"
                )

        changed = any(e["action"] != "none" for _a, e, _x in plans)
        # 3. act
        if changed and not module.check_mode:
            if helper_image is None:
                helper_image = pick_helper_image(client, p["helper_image"])
            created = []
            try:
                for artifact, entry, _existing in plans:
                    if entry["action"] == "none":
                        continue
                    if entry["action"] == "create":
                        client.create_volume(**volume_create_kwargs(_definition(manifest, artifact), entry["name"]))
                        created.append(entry["name"])
                    fill = fill_new_volume if streamed else fill_volume
                    with VolumeHelper(client, helper_image, entry["name"]) as helper:
                        entry["bytes_read"], entry["bytes_written"] = fill(helper, bundle, artifact, p["allow_devices"])
                        entry["metadata_not_kept"] = helper.notes.as_list()
            except BaseException:
                for name in reversed(created):  # every volume this run made goes, none is left half-filled
                    try:
                        client.remove_volume(name)
                    except engine_errors():
                        continue
                raise
    except (FerryError, ValueError) as exc:
        module.fail(str(exc))
    except engine_errors() as exc:
        module.fail(f"restoring volumes from bundle {bundle} failed at the Docker engine: {exc}")

    entries = [e for _a, e, _x in plans]
    result = dict(
        changed=changed,
        bundle=bundle,
        volumes=entries,
        size=sum(e["size"] for e in entries),
        bytes_read=sum(e["bytes_read"] for e in entries),
        bytes_written=sum(e["bytes_written"] for e in entries),
        duration=timer.elapsed,
    )
    if module.module._diff:
        result["diff"] = dict(
            before={e["name"]: e["state_before"] for e in entries},
            after={e["name"]: "same" for e in entries},
        )
    module.exit(**result)
