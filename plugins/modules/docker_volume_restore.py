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
  - The manifest is validated first. Then every archive must have the size and sha256 the manifest records,
    and every member must pass the tar safety rules (no absolute names, no C(..), no link leading outside
    the volume, no member written through a symlink, no device nodes unless O(allow_devices=true)). One
    failed check fails the task with nothing changed.
  - When every volume to restore is new (not in check mode, no encrypted archive), each archive is read
    once - hashed and checked while it streams into the volume the task creates, which nothing uses
    meanwhile; the stream is cut off at the first failed check, and every volume the task created is
    removed again. Into an existing volume, all archives are checked before anything is written.
  - A new volume whose directory is on this host (see below) is written there by GNU C(tar), which gets
    only the checked members, never the archive as stored; otherwise, and into an existing volume, the
    engine extracts them. Both give the same files and metadata, checked the same way afterwards.
  - When the engine extracts (C(put_archive)), it does so into a helper container that is created from
    an image already on the engine, never started, and always removed; a new volume written by C(tar)
    needs none. Ownership,
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

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_volume_restore import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, sdk_on_demand=True, **KWARGS))


if __name__ == "__main__":
    main()
