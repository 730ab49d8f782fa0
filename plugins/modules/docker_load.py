#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_load
short_description: Load the image archive of a ferry.docker bundle into the Docker engine
version_added: 0.1.0
description:
  - Streams the C(image) artifact of a bundle (written by M(ferry.docker.docker_commit_save)),
    decompressed, into C(docker load). The archive is never held in memory.
  - The size and sha256 of the archive are checked before anything is loaded.
  - A thin archive (captured with C(exclude_layers)) leaves out base layers. Before loading, the
    module checks that the engine already has every left-out layer, at the same position of the
    layer chain; if not, it fails naming the missing layers and nothing is loaded.
  - If the engine already has the image (same image ID), nothing is loaded; missing tags are added.
  - C(docker load) receives the archive without its own tags (C(RepoTags) of its C(manifest.json)
    emptied, C(repositories) left out, while streaming), so it moves no tag by itself. The module
    then sets the tags of the bundle, or O(tag), each checked against Docker's reference grammar
    first. A tag that already names another image on the engine is never moved unless
    O(force_tag=true); without it the task fails before anything is loaded.
  - If the load fails, or the loaded image is not the one the manifest names, the tags and the image
    this run added are removed again and tags it moved are put back.
attributes:
  check_mode:
    support: full
    description: Reports whether the image would be loaded or tagged; the checks still run.
  diff_mode:
    support: full
    description: Shows whether the image and its tags were present before and after.
  idempotent:
    support: full
    description: A second run reports no change, because the image ID is then present.
options:
  bundle:
    description: Bundle directory written by the capture modules (holds C(manifest.json)).
    type: path
    required: true
  name:
    description:
      - Name of the image artifact in the bundle; by default the first one.
    type: str
  tag:
    description:
      - Tag (C(repository:tag)) to give the loaded image instead of the tags recorded in the bundle.
      - Only this tag is set; the tags recorded in the bundle are not.
    type: str
  force_tag:
    description:
      - Move a tag that already names another image on the engine to the loaded image.
    type: bool
    default: false
  streamed:
    description:
      - The image is not in the bundle; the capture loaded it straight into this engine
        (M(ferry.docker.docker_commit_save) with O(ferry.docker.docker_commit_save#module:stream_to)), and the
        manifest records it under C(streamed). The engine must have exactly the image ID recorded there (the
        digest of its configuration, whose layers the engine checked while loading); it is then tagged.
        Nothing is read from the bundle but its manifest, whose signature is checked as for a load.
      - Without it, a bundle whose image was streamed fails with a message that says so.
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
  - module: ferry.docker.docker_commit_save
  - module: ferry.docker.docker_container_restore
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Load the committed image of a bundle
  ferry.docker.docker_load:
    bundle: /srv/backups/web

- name: Load it under another tag
  ferry.docker.docker_load:
    bundle: /srv/backups/web
    tag: restored/web:2024-01-31
"""

RETURN = r"""
image_id:
  description: ID of the image.
  returned: always
  type: str
tags:
  description: Tags that point at the image afterwards (as far as this module set them).
  returned: always
  type: list
  elements: str
operation:
  description: C(load), C(tag) or C(none).
  returned: always
  type: str
excluded_layers:
  description: Layers the archive leaves out, all found on the engine.
  returned: always
  type: list
  elements: str
path:
  description: Archive file (empty with O(streamed=true)).
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
  description: Bytes of the archive file read for loading.
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
from ansible_collections.ferry.docker.plugins.module_utils._step_load import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
