#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_volume_backup
short_description: Back up Docker volumes (and optionally bind mounts) into a ferry.docker bundle
version_added: 0.1.0
description:
  - Streams each volume into C(volume-<name>.tar.zst) (or C(.tar.gz), C(.tar)) in a bundle directory,
    compressing and hashing on the fly.
  - When the volume's directory is on this host (the engine answers on a local unix socket under
    this host's name, without user namespaces, and the volume uses the C(local) driver without
    options; bind mounts are host directories), it is read directly, never following a symlink. The
    archive then keeps the root directory's mode, owner, group and mtime, every file's extended
    attributes C(user.*), C(security.capability) and POSIX ACLs, hard links, symlinks, special
    modes and sparse files (as GNU sparse members, so the holes are not stored).
  - Otherwise the volume is read through Docker's archive API from a helper container that mounts it
    read-only and is created but never started, from an image already on the host (the container's
    own image, else the smallest local image); nothing is pulled. The helper carries the label
    C(ferry.docker.helper=1) and is removed afterwards, also on failure. That API keeps the root
    entry and C(security.capability) but no other extended attribute and no holes; the result and a
    warning say so for each volume (RV(metadata_not_kept)).
  - Extended attributes in other namespaces (C(trusted.*), C(security.selinux)...) and sockets are
    not captured; they are named, attribute and file, in RV(metadata_not_kept) and a warning.
  - Each archive starts with the member C(.) (the volume root) followed by C(./path) members, so it
    can be put back into the target volume's directory as is.
  - Records each artifact and the volume definitions (driver, options, labels) in the bundle's
    C(manifest.json); with O(container), also the container's run configuration and networks.
extends_documentation_fragment:
  - ferry.docker.docker
  - ferry.docker.bundle_output
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Checks that the container and volumes exist and reports the files that would be written;
        the container is not paused or stopped and no helper is created.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: partial
    details:
      - A volume whose content did not change gives the same archive and reports no change; with
        O(consistency=stop) the container's state is restored, but its restart may change files.
options:
  container:
    description:
      - Name or ID of a container; all its volumes (named and anonymous) are backed up.
      - At least one of O(container) and O(volumes) is required.
    type: str
  volumes:
    description:
      - Names of volumes to back up, in addition to those of O(container).
    type: list
    elements: str
    default: []
  include_binds:
    description:
      - Also back up the bind mounts of O(container) (the host directories or files mounted into it).
    type: bool
    default: false
  consistency:
    description:
      - What to do with O(container) while its volumes are read.
      - V(running) leaves it alone; V(pause) pauses it; V(stop) stops it. In every case its original
        state (running, paused, stopped) is restored afterwards, also on failure.
      - V(pause) and V(stop) need O(container).
    type: str
    choices: [running, pause, stop]
    default: running
  exclude_volumes:
    description:
      - Named volumes of O(container) to leave out (a migration moves them another way, or not at all).
    type: list
    elements: str
    default: []
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
seealso:
  - module: ferry.docker.docker_export
  - module: ferry.docker.docker_commit_save
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Back up every volume of the db container, stopped for consistency
  ferry.docker.docker_volume_backup:
    container: db
    consistency: stop
    dest: /var/backups/ferry/db

- name: Back up two standalone volumes
  ferry.docker.docker_volume_backup:
    volumes: [shared-config, uploads]
    dest: /var/backups/ferry/shared
"""

RETURN = r"""
artifacts:
  description: The artifact entries recorded in the manifest (kind V(volume)), one per volume or bind.
  returned: success, not in check mode
  type: list
  elements: dict
  sample:
    - kind: volume
      name: dbdata
      file: volume-dbdata.tar.zst
      compression: zstd
      size: 1234
      sha256: 3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555
      raw_size: 10240
      type: volume
      volume: dbdata
      anonymous: false
      destination: /var/lib/postgresql/data
      rw: true
      root: .
      metadata: 2
results:
  description: Per artifact, what was written.
  returned: success, not in check mode
  type: list
  elements: dict
  contains:
    name:
      description: Artifact name (volume name, or V(bind:<path>)).
      type: str
    path:
      description: Path of the archive file.
      type: str
    size:
      description: Bytes of the file as stored.
      type: int
    sha256:
      description: sha256 of the file as stored.
      type: str
    bytes_read:
      description: Uncompressed bytes read from the engine.
      type: int
    changed:
      description: Whether the file's content changed.
      type: bool
    read_from:
      description: V(directory) (read on this host) or V(engine) (Docker's archive API).
      type: str
metadata_not_kept:
  description:
    - Metadata that could not be put in the archives, one entry per source and attribute, with up to
      five example paths (relative to the volume root) and the number of entries concerned.
  returned: success, not in check mode
  type: list
  elements: dict
  sample:
    - name: dbdata
      attribute: xattr security.selinux
      count: 12
      paths: [./base, ./base/1]
      reason: only user.*, security.capability and POSIX ACLs are captured
paths:
  description: Paths of the archive files (written, or that would be written in check mode).
  returned: always
  type: list
  elements: str
bytes_read:
  description: Uncompressed bytes read from the engine, all volumes together.
  returned: success, not in check mode
  type: int
bytes_written:
  description: Bytes written to the archive files, all volumes together.
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
"""

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_volume_backup import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, sdk_on_demand=True, **KWARGS))


if __name__ == "__main__":
    main()
