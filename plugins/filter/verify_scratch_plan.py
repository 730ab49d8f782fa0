# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: verify_scratch_plan
short_description: What a restore drill restores for one bundle, under scratch names and isolated
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - Reads the manifest of a ferry.docker bundle and returns the plan the C(ferry.docker.verify) role
    restores, so that the restored container cannot touch the host's real containers, data or network.
  - "Scratch names: container C(<prefix>-<run>-<name>), image C(<prefix>/<name>:<run>), network
    C(<prefix>-<run>-<name>-net), volumes C(<prefix>-<run>-<name>-v<N>), each checked against Docker's grammar."
  - The rewritten run config publishes no port, has no restart policy and no C(AutoRemove), logs with
    C(json-file), and is attached only to the scratch network, which is C(internal) (Docker lets no traffic out of it);
    links, static addresses, C(VolumesFrom) and C(container:) namespaces are dropped.
  - Every named volume and every bind mount becomes a scratch volume of the C(local) driver with no
    driver options, filled from the bundle's archive when there is one. No host path is mounted.
  - The container gets the label C(ferry.docker.verify=<run>). Host namespaces, privileged mode,
    capabilities and devices are left as recorded, for the restore modules' policy to refuse.
  - The result holds the container's environment in RV(_value.run_config); never print it.
positional: _input, run
options:
  _input:
    description: The bundle's manifest (the parsed C(manifest.json)).
    type: dict
    required: true
  run:
    description: The drill's run ID, 1-40 lowercase letters, digits and C(-).
    type: str
    required: true
  prefix:
    description: Prefix of every scratch name; lowercase letters and digits joined by C(-).
    type: str
    default: ferry-verify
"""

EXAMPLES = r"""
- name: Plan the drill of a bundle
  ansible.builtin.set_fact:
    plan: "{{ manifest | ferry.docker.verify_scratch_plan(run_id) }}"
  no_log: true  # the plan's run_config holds the container's environment
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    container:
      description: The recorded container name.
      type: str
    name:
      description: Scratch container name.
      type: str
    image:
      description: Scratch image reference to load or import the bundle's image as.
      type: str
    network:
      description: Scratch network name (empty when the container had no network, C(NetworkMode=none)).
      type: str
    label:
      description: The label put on the scratch container, network and volumes.
      type: dict
    volumes:
      description:
        - Each scratch volume with C(scratch), C(kind) (C(volume) or C(bind)), C(source), C(destination)
          and C(artifact).
      type: list
      elements: dict
    volume_names:
      description: Names of the scratch volumes.
      type: list
      elements: str
    volume_map:
      description: The bundle's volume artifacts to restore, and the scratch volume each goes into.
      type: dict
    empty_volumes:
      description: Scratch volumes the bundle has no archive for.
      type: list
      elements: str
    changes:
      description: What the drill changes from the recorded container, in sentences.
      type: list
      elements: str
    run_config:
      description: The rewritten run config for M(ferry.docker.docker_container_restore).
      type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.module_utils._verify import DEFAULT_PREFIX, VerifyError, scratch_plan


def verify_scratch_plan(manifest, run, prefix=DEFAULT_PREFIX):
    """The drill plan of one bundle (see ``_verify.scratch_plan``)."""
    try:
        return scratch_plan(manifest, run, prefix)
    except VerifyError as exc:
        raise AnsibleFilterError(f"verify_scratch_plan: {exc}") from exc


class FilterModule:
    """ferry.docker restore drill plan filter."""

    def filters(self):
        return {"verify_scratch_plan": verify_scratch_plan}
