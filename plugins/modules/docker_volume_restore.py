#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_volume_restore
short_description: Restore Docker volumes from the volume archives of a ferry.docker bundle
version_added: 0.1.0
description:
  - Creates each volume with the driver, driver options and labels recorded in the bundle (or uses
    an existing empty volume) and streams the volume archive into it.
  - If restoring one volume fails, every volume this run created is removed again.
  - Before anything is changed the manifest is validated, the size and sha256 of every archive to
    restore are checked, and every archive is read once through the tar safety rules (no absolute
    names, no C(..), no link leading outside the volume, no member written through a symlink, no
    device nodes unless O(allow_devices=true)). One failed check fails the task with nothing changed.
  - The data is extracted by the Docker engine itself (C(put_archive)) into a helper container that
    is created from an image already on the engine, never started, and always removed. Ownership,
    modes, mtimes, hard links, symlinks and the extended attributes C(user.*),
    C(security.capability) and POSIX ACLs are kept. Archives carrying any other extended attribute
    are refused by the safety checks.
  - The volume's root directory gets the archived mode, owner, group, mtime and extended attributes
    (Docker's extraction alone leaves it C(0755 root:root)), also with O(force=true).
  - When the volume's directory is on this host (local unix socket, same host name, no user
    namespaces, C(local) driver without options), sparse files get their holes back and every
    extended attribute of the archive is checked on disk. Whatever the engine or the filesystem did
    not keep is named, attribute and file, in RV(volumes[].metadata_not_kept) and a warning; on
    another engine sparse files stay fully allocated and the attributes cannot be checked, which
    is reported the same way.
  - The engine writes the holes of a sparse file as zeros before they are punched again, so the
    volume needs room for the file's full size while it is restored.
  - Idempotency is judged on content. A volume that already holds exactly the archive's content
    (names, types, modes, owners, sizes, link targets, the sha256 of every file, the root entry and
    the extended attributes; mtimes are not compared) is left alone. A volume restored by an earlier
    version of this module may differ in its root entry only; restore it again with O(force=true).
attributes:
  check_mode:
    support: full
    description:
      - Reports which volumes would be created or filled; the checks still run.
      - To look into an existing volume a helper container is created (never started) and removed
        again; nothing else is touched.
  diff_mode:
    support: full
    description: Shows per volume whether it is absent, empty, already restored or holding other data, before and after.
  idempotent:
    support: full
    description: A second run with the same bundle reports no change.
options:
  bundle:
    description:
      - Bundle directory written by the capture modules (holds C(manifest.json)).
    type: path
    required: true
  volumes:
    description:
      - Names of the volume artifacts to restore, as recorded in the bundle.
      - By default every named volume of the bundle. Anonymous volumes (64-hex names) belong to
        their container and are filled by M(ferry.docker.docker_container_restore); they are restored
        here only when listed explicitly.
    type: list
    elements: str
  volume_map:
    description:
      - Restore a volume under another name; keys are recorded names, values the new names.
    type: dict
    default: {}
  force:
    description:
      - Restore into a volume that already holds other data.
      - The archive is extracted over the existing content; files of the archive replace files of
        the same name, files that are not in the archive are kept. Remove or empty the volume first
        if an exact copy is wanted.
      - Without O(force=true) a non-empty volume with other content fails the task.
    type: bool
    default: false
  allow_devices:
    description:
      - Accept device and FIFO nodes in the archives.
    type: bool
    default: false
  allow_privileged:
    description:
      - Create volumes whose recorded C(local) driver options mount a host path or device
        (C(type=none), C(o=bind), C(device=/...)).
      - Without it such a volume fails the task before anything is changed; a bundle is input, not
        truth, and these options make the restore write into a host directory.
      - A bundle signed by a key of O(trusted_signers) allows them too.
    type: bool
    default: false
  helper_image:
    description:
      - Local image to create the helper container from. It is never started, so any image works.
      - By default the smallest image on the engine. Nothing is ever pulled.
    type: str
extends_documentation_fragment:
  - ferry.docker.docker
  - ferry.docker.bundle_trust
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
  - C(zstandard) Python library for zstd-compressed bundles
seealso:
  - module: ferry.docker.docker_volume_backup
  - module: ferry.docker.docker_container_restore
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Restore every named volume of a bundle
  ferry.docker.docker_volume_restore:
    bundle: /srv/backups/web

- name: Restore one volume under a new name
  ferry.docker.docker_volume_restore:
    bundle: /srv/backups/web
    volumes: [web-data]
    volume_map:
      web-data: web-data-copy

- name: Overwrite a volume that already holds data
  ferry.docker.docker_volume_restore:
    bundle: /srv/backups/web
    volumes: [web-data]
    force: true
"""

RETURN = r"""
bundle:
  description: The bundle directory.
  returned: always
  type: str
volumes:
  description: One entry per restored volume.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the volume on the engine.
      type: str
    artifact:
      description: Name of the volume artifact in the bundle.
      type: str
    path:
      description: Archive file.
      type: str
    size:
      description: Size of the archive file in bytes.
      type: int
    sha256:
      description: sha256 of the archive file.
      type: str
    state_before:
      description: C(absent), C(empty), C(same) (already holds the archive content) or C(differs).
      type: str
    action:
      description: C(create) (create and fill), C(fill), C(overwrite) or C(none).
      type: str
    bytes_read:
      description: Bytes of the archive file read for the restore.
      type: int
    bytes_written:
      description: Decompressed bytes fed to Docker.
      type: int
    metadata:
      description:
        - Metadata version of the archive; 1 for bundles written before extended attributes and sparse
          files were kept, or read through Docker's archive API.
      type: int
    metadata_not_kept:
      description:
        - What the engine or the volume's filesystem did not keep, per attribute (C(sparse), C(xattr <name>)),
          with up to five paths, the number of entries and the reason. Empty when everything was kept.
      type: list
      elements: dict
  sample:
    - name: web-data
      artifact: web-data
      path: /srv/backups/web/volume-web-data.tar.zst
      size: 1234
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      state_before: absent
      action: create
      bytes_read: 1234
      bytes_written: 10240
      metadata: 2
      metadata_not_kept: []
size:
  description: Total size of the archive files restored.
  returned: always
  type: int
bytes_read:
  description: Total bytes of archive files read for the restore.
  returned: always
  type: int
bytes_written:
  description: Total decompressed bytes fed to Docker.
  returned: always
  type: int
duration:
  description: Seconds the task took.
  returned: always
  type: float
"""

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._bundle import verify_artifacts
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException, FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._names import name_problem, volume_option_problems
from ansible_collections.ferry.docker.plugins.module_utils._restore import (
    RequestException,
    RestoreError,
    Timer,
    VolumeHelper,
    artifact_fingerprint,
    base_result,
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


def main():
    module = FerryModule(
        dict(
            bundle=dict(type="path", required=True),
            volumes=dict(type="list", elements="str"),
            volume_map=dict(type="dict", default={}),
            force=dict(type="bool", default=False),
            allow_devices=dict(type="bool", default=False),
            allow_privileged=dict(type="bool", default=False),
            helper_image=dict(type="str"),
            **_trust.argument_spec(),
        ),
        supports_check_mode=True,
    )
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
        # 1. every archive: size and sha256, then the tar safety scan; nothing changes before all pass
        chosen = verify_artifacts(bundle, manifest, kinds=["volume"], names=names) if names else []
        for artifact in chosen:
            if _is_bind(artifact) and artifact["name"] not in p["volume_map"]:
                raise RestoreError(
                    f"artifact {artifact['name']} is the backup of a bind mount, not of a volume; give the volume "
                    "to restore it into with volume_map"
                )
            scan_artifact(bundle, artifact, allow_devices=p["allow_devices"])

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
                    with VolumeHelper(client, helper_image, entry["name"]) as helper:
                        entry["bytes_read"], entry["bytes_written"] = fill_volume(
                            helper, bundle, artifact, p["allow_devices"]
                        )
                        entry["metadata_not_kept"] = helper.notes.as_list()
            except BaseException:
                for name in reversed(created):  # every volume this run made goes, none is left half-filled
                    try:
                        client.remove_volume(name)
                    except (DockerException, RequestException):
                        continue
                raise
    except (FerryError, ValueError) as exc:
        module.fail(str(exc))
    except (DockerException, RequestException) as exc:
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


if __name__ == "__main__":
    main()
