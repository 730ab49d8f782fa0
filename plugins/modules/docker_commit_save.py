#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_commit_save
short_description: Commit a container to an image and save it into a ferry.docker bundle
version_added: 0.1.0
description:
  - Commits the container (C(docker commit)) to a temporary image and streams C(docker save) of it into
    C(image.tar.zst) (or C(.tar.gz), C(.tar)) in a bundle directory, compressing and hashing on the fly.
    Unlike M(ferry.docker.docker_export) this keeps the image layers and the full image configuration.
  - Layers the target host already has can be left out with O(exclude_layers); C(docker load) skips
    layers it already has, so the smaller archive still loads there.
  - Records the artifact, the container's run configuration, network and volume definitions in the
    bundle's C(manifest.json). The temporary image is removed afterwards, also on failure, unless
    O(keep_image=true).
  - Volumes and bind mounts are not part of a commit; back them up with M(ferry.docker.docker_volume_backup).
notes:
  - The engine prepares the whole save archive before it sends the first byte; for large images raise
    O(timeout) so the client does not give up waiting.
extends_documentation_fragment:
  - ferry.docker.docker
  - ferry.docker.bundle_output
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Checks that the container exists and reports the file that would be written; nothing is committed.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: none
    details:
      - Every commit creates a new image (with a new creation time), so the archive always differs.
options:
  container:
    description:
      - Name or ID of the container to commit.
    type: str
    required: true
  pause:
    description:
      - Pause the container while it is committed, for a consistent filesystem. Its state is as before afterwards.
    type: bool
    default: true
  exclude_layers:
    description:
      - Layer diff IDs (V(sha256:...), as in C(docker image inspect) C(RootFS.Layers)) whose C(layer.tar)
        is left out of the archive, typically the layers the target host already has.
      - IDs that are not layers of the committed image are ignored.
      - The archive is read twice when this is set; the first read only parses C(manifest.json) and
        discards layer data, so no layer is held in memory or spooled to disk.
    type: list
    elements: str
    default: []
  keep_image:
    description:
      - Keep the committed image on the host instead of removing it.
    type: bool
    default: false
  image_name:
    description:
      - Repository and tag (V(repository:tag)) of the committed image.
      - Defaults to V(ferry-commit/<container>:<UTC timestamp>).
    type: str
  stream_to:
    description:
      - Load the committed image straight into the Docker engine of another host instead of saving it into the
        bundle, over SSH with a key of the run (the way M(ferry.docker.docker_migrate_source) sends bundles;
        the host keys come from C(known_hosts) in O(stream_to.key_dir)). Nothing is staged on either disk.
      - The archive is saved by image ID, so the image arrives without a tag; the engine there checks every
        layer against the image's diff IDs while it loads, and the image ID it reports (the digest of the
        image's configuration) must be the committed one, or what it loaded is removed again and the task
        fails. When that host already has the image, nothing is sent.
      - The stream is compressed as O(compression) says; with V(zstd) only when that host has the C(zstd) program
        to unpack it (C(docker load) reads gzip itself), otherwise it goes uncompressed.
      - Runs C(docker image inspect) and C(docker load) there, as O(stream_to.user).
      - The bundle's manifest then records the image under C(streamed) (image ID, host, bytes and sha256 of
        the stream) instead of an image artifact, and an image archive of an earlier capture is removed.
        M(ferry.docker.docker_load) with O(ferry.docker.docker_load#module:streamed=true) tags it on that
        host; the bundle alone no longer holds the image.
    type: dict
    suboptions:
      user:
        description: Login user on the other host; it must be allowed to run C(docker).
        type: str
        default: root
      address:
        description: Address of the other host.
        type: str
        required: true
      port:
        description: SSH port of the other host.
        type: int
        default: 22
      key_dir:
        description:
          - Directory holding the private key C(id_ed25519) and the C(known_hosts) file to use.
        type: path
        required: true
      timeout:
        description: Seconds the whole load may take; past it the transfer is stopped and the task fails.
        type: int
        default: 3600
      unpack:
        description:
          - What the other host unpacks the stream with, when the caller knows it already (V(zstd) when it has the
            C(zstd) program, else V(none)). The stream then starts at once, and whether that host already has the
            image is asked beside it. The stream's last 64 KiB (the archive's end) wait for that answer, so the
            engine there cannot finish loading before it is known; when the host has the image, the load is cut
            off and nothing new is there.
          - Without it, both are asked first, in one round trip, before anything is sent.
        type: str
        choices: [zstd, none]
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
seealso:
  - module: ferry.docker.docker_export
  - module: ferry.docker.docker_volume_backup
  - module: ferry.docker.docker_run_config_info
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Commit and save the web container into its bundle
  ferry.docker.docker_commit_save:
    container: web
    dest: /var/backups/ferry/web

- name: Leave out the base layers the target already has
  ferry.docker.docker_commit_save:
    container: web
    dest: /var/backups/ferry/web
    exclude_layers: "{{ target_image.images[0].RootFS.Layers }}"
"""

RETURN = r"""
path:
  description: Path of the archive file (empty with O(stream_to)).
  returned: always
  type: str
  sample: /var/backups/ferry/web/image.tar.zst
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
  description: Uncompressed bytes of the archive (after leaving out excluded layers).
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
image_id:
  description: ID of the committed image.
  returned: success, not in check mode
  type: str
image_removed:
  description: Whether the committed image was removed from the host afterwards.
  returned: success, not in check mode
  type: bool
streamed:
  description:
    - With O(stream_to), what the manifest records under C(streamed) (C(new) is false when the other host had
      the image already, and nothing was sent). C(bytes) went over the wire (compressed as C(compression) says);
      C(raw_bytes) and C(sha256) are those of the archive.
  returned: success with O(stream_to), not in check mode
  type: dict
  sample:
    kind: image
    name: web
    image_id: sha256:0d7c...
    to: root@192.0.2.12
    new: true
    compression: zstd
    bytes: 2097152
    raw_bytes: 5242880
    sha256: 3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555
    excluded_layers: [sha256:8bc3...]
    image_ref: ferry-commit/web:20250101T120000Z
    layers: [sha256:8bc3..., sha256:5f70...]
    container_id: 4f1c0d...
artifact:
  description: The artifact entry recorded in the manifest (kind V(image)).
  returned: success without O(stream_to), not in check mode
  type: dict
  sample:
    kind: image
    name: web
    file: image.tar.zst
    compression: zstd
    size: 812345
    sha256: 3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555
    raw_size: 2048000
    image_id: sha256:0d7c...
    image_ref: ferry-commit/web:20250101T120000Z
    repo_tags: [ferry-commit/web:20250101T120000Z]
    layers: [sha256:8bc3..., sha256:5f70...]
    excluded_layers: [sha256:8bc3...]
    container_id: 4f1c0d...
"""

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_commit_save import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
