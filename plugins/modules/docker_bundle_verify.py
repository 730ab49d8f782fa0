#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_bundle_verify
short_description: Check a ferry.docker bundle without restoring it
version_added: 0.1.0
description:
  - Validates the bundle's manifest (schema, bounds, every name against Docker's grammar) and checks
    that every artifact file is a regular file of the bundle (never a link) with the recorded size.
  - With O(deep=true) it re-reads every artifact, like C(restic check --read-data) - the sha256 of the
    file against the manifest, then the data itself, decompressed and bounded by the recorded size;
    volume and filesystem archives go through the tar safety scan a restore applies, and an image
    archive must decompress to exactly its recorded size. An encrypted artifact is checked byte for
    byte (its sha256 is the ciphertext's); its data is read only by a restore that holds its identity.
  - Every artifact is checked, also after a damaged one, so that one run names every problem.
  - Reads only; nothing is changed. Needs no Docker engine.
attributes:
  check_mode:
    support: full
    description: Runs the same checks; it never changes anything.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
  idempotent:
    support: full
    description: Never changes anything.
options:
  bundle:
    description:
      - Bundle directory (holds C(manifest.json)), or a link to one such as C(latest).
    type: path
    required: true
  deep:
    description:
      - Re-read every artifact (sha256 and data) instead of only looking at its size.
    type: bool
    default: false
  allow_devices:
    description:
      - Accept device and FIFO nodes in volume and filesystem archives, as a restore with the same option would.
    type: bool
    default: false
  fail_on_problems:
    description:
      - Fail the task when a problem is found. With V(false) the problems are returned in RV(problems) and
        RV(ok) is false.
    type: bool
    default: true
requirements:
  - C(zstandard) Python library for zstd-compressed bundles (with O(deep=true))
seealso:
  - module: ferry.docker.docker_load
  - module: ferry.docker.docker_volume_restore
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Check the latest backup of web, reading every byte
  ferry.docker.docker_bundle_verify:
    bundle: /var/backups/ferry/web/latest
    deep: true
"""

RETURN = r"""
path:
  description: The bundle's real directory (a link such as C(latest) resolved).
  returned: always
  type: str
ok:
  description: Whether no problem was found.
  returned: always
  type: bool
problems:
  description: Every problem found, one sentence each, naming the artifact and its file.
  returned: always
  type: list
  elements: str
artifacts:
  description: One entry per artifact of the manifest.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Artifact name.
      type: str
    kind:
      description: C(image), C(filesystem) or C(volume).
      type: str
    file:
      description: File name in the bundle.
      type: str
    size:
      description: Recorded size of the file.
      type: int
    checked:
      description: C(size) (O(deep=false)), C(sha256) (encrypted, O(deep=true)) or C(data).
      type: str
    problem:
      description: What is wrong with it; empty when nothing is.
      type: str
container:
  description: The container the bundle was taken from, as recorded.
  returned: always
  type: str
created:
  description: When the bundle was made, as recorded (UTC).
  returned: always
  type: str
bytes_read:
  description: Bytes of artifact files read.
  returned: always
  type: int
duration:
  description: Seconds the check took.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ferry.docker.plugins.module_utils._bundlecheck import check_bundle
from ansible_collections.ferry.docker.plugins.module_utils._restore import Timer


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bundle=dict(type="path", required=True),
            deep=dict(type="bool", default=False),
            allow_devices=dict(type="bool", default=False),
            fail_on_problems=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    timer = Timer()
    p = module.params
    result = check_bundle(p["bundle"], deep=p["deep"], allow_devices=p["allow_devices"])
    result.update(changed=False, duration=timer.elapsed)
    if p["fail_on_problems"] and not result["ok"]:
        shown = result["problems"][:5]
        more = len(result["problems"]) - len(shown)
        module.fail_json(
            msg="bundle {} is damaged: {}{}. Restore from another bundle, or copy this one again from its "
            "source".format(p["bundle"], " | ".join(shown), f" (and {more} more)" if more > 0 else ""),
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
