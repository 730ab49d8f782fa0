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

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_import import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
