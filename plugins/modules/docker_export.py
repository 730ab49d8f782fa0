#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_export
short_description: Export a container's filesystem into a ferry.docker bundle
version_added: 0.1.0
description:
  - Streams C(docker export) of a container into C(filesystem.tar.zst) (or C(.tar.gz), C(.tar)) in a
    bundle directory, compressing and hashing on the fly; the archive is never held in memory.
  - Records in the bundle's C(manifest.json) what an export loses, the container's effective image
    configuration (C(CMD), C(ENTRYPOINT), C(ENV), C(WORKDIR), C(EXPOSE), C(USER), C(LABEL), C(STOPSIGNAL),
    C(HEALTHCHECK), and C(ONBUILD), C(SHELL), C(VOLUME) when set) under C(image_config), plus the
    container's run configuration, network and volume definitions.
  - Volumes and bind mounts are not part of an export; back them up with M(ferry.docker.docker_volume_backup).
  - Capturing into a bundle that already holds a filesystem artifact replaces it; when the new archive
    has the same bytes the old file is kept and the task reports no change.
extends_documentation_fragment:
  - ferry.docker.docker
  - ferry.docker.bundle_output
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Checks that the container exists and reports the file that would be written, without creating
        anything. It always reports a change because the archive's bytes are only known after reading it.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: partial
    details:
      - A second export of a stopped container gives the same bytes and reports no change. A running
        container's filesystem (logs, PID files) usually changes between runs.
options:
  container:
    description:
      - Name or ID of the container to export.
    type: str
    required: true
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
seealso:
  - module: ferry.docker.docker_commit_save
  - module: ferry.docker.docker_volume_backup
  - module: ferry.docker.docker_run_config_info
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Export the web container's filesystem into its bundle
  ferry.docker.docker_export:
    container: web
    dest: /var/backups/ferry/web

- name: Export with gzip, readable by the backup group
  ferry.docker.docker_export:
    container: web
    dest: /var/backups/ferry/web
    compression: gzip
    mode: '0640'
"""

RETURN = r"""
path:
  description: Path of the archive file.
  returned: always
  type: str
  sample: /var/backups/ferry/web/filesystem.tar.zst
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
  description: Uncompressed bytes read from the Docker engine.
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
artifact:
  description: The artifact entry recorded in the manifest (kind V(filesystem)).
  returned: success, not in check mode
  type: dict
  sample:
    kind: filesystem
    name: web
    file: filesystem.tar.zst
    compression: zstd
    size: 812345
    sha256: 3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555
    raw_size: 2048000
    container_id: 4f1c0d...
image_config:
  description: The image configuration keys recorded in the manifest (names only; values may hold secrets).
  returned: success, not in check mode
  type: list
  elements: str
  sample: [Cmd, Env, WorkingDir]
"""

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_export import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
