# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: migrate_guard_spec
short_description: What the migrate role arms the guard with, for one source host
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - Takes the containers the C(ferry.docker.migrate) role queued on one source host and returns the
    C(containers) and C(targets) options of M(ferry.docker.docker_migrate_guard) with O(state=armed).
  - Only the containers that move (action C(migrate)) are guarded; one already on its target is not
    touched by the run.
  - Each target is reached, when the guard fires, the way the run's rsync reaches it. With
    O(transfer=direct), through the run key in O(key_dir); with C(controller) the run has no key on the
    source, so the guard can only put back sources whose target copy cannot run yet.
positional: _input, hostvars, key_dir, key_comment
options:
  _input:
    description: The queued containers, each with C(container), C(name), C(target), C(action),
      C(source_state_before) and C(volumes) (its named volumes).
    type: list
    elements: dict
    required: true
  hostvars:
    description: Ansible's C(hostvars), for the targets' C(ansible_host), C(ansible_port) and C(ansible_user).
    type: dict
    required: true
  key_dir:
    description: Directory of the run's key pair and known_hosts file on the source.
    type: str
    required: true
  key_comment:
    description: Comment of the run key in the targets' authorized_keys.
    type: str
    required: true
  addresses:
    description: Addresses to reach targets by, by inventory name (C(migrate_target_address)).
    type: dict
    default: {}
  transfer:
    description: C(direct) or C(controller).
    type: str
    default: direct
  users:
    description: The login user of each target (what the run key is authorised for), by inventory name.
    type: dict
    default: {}
  cutover:
    description: The run's C(migrate_cutover), which the guard completes for a migrated container when the run is lost.
    type: str
    default: stop
  waves:
    description:
      - The run's waves (C(migrate_waves)). The volumes their groups pre-copy are each container's C(precopied);
        a guard that fires before the copy runs on the target removes them there.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
- name: Arm the guard
  ferry.docker.docker_migrate_guard:
    run_id: "{{ run_id }}"
    state: armed
    containers: "{{ __spec.containers }}"
    targets: "{{ __spec.targets }}"
  vars:
    __spec: "{{ todo | ferry.docker.migrate_guard_spec(hostvars, key_dir, key_comment) }}"
"""

RETURN = r"""
_value:
  description: C({containers, targets}), in the shape of the guard module's options.
  type: dict
"""

from ansible.errors import AnsibleFilterError


def migrate_guard_spec(
    todo, hostvars, key_dir, key_comment, addresses=None, transfer="direct", cutover="stop", users=None, waves=None
):
    addresses = addresses or {}
    users = users or {}
    containers, hosts = [], []
    # the volumes a pre-copy may create on the targets (from migrate_waves): a guard that fires before the
    # copy runs there removes them, also when the run was lost while it created them
    precopied = {}
    for wave in waves or []:
        for group in wave.get("groups") or []:
            for volume in (group.get("precopy") or {}).get("volumes") or []:
                if not volume.get("path"):  # bind data is journaled once the target made its directory
                    precopied.setdefault(volume["container"], []).append(volume["name"])
    for item in todo:
        if not isinstance(item, dict) or not {"container", "name", "target", "action"} <= set(item):
            raise AnsibleFilterError(f"migrate_guard_spec: {item!r} is not a queued container of the migrate role")
        if item["action"] != "migrate":
            continue
        containers.append(
            {
                "name": item["container"],
                "state_before": item.get("source_state_before") or "unknown",
                "target": item["target"],
                "target_name": item["name"],
                "target_volumes": list(item.get("volumes") or []),
                "cutover": cutover,
            }
        )
        if item["container"] in precopied:
            containers[-1]["precopied"] = precopied[item["container"]]
        if item["target"] not in hosts:
            hosts.append(item["target"])
    targets = []
    for host in hosts:
        if host not in hostvars:
            raise AnsibleFilterError(f"migrate_guard_spec: target {host!r} is not an inventory host")
        facts = hostvars[host]
        target = {
            "host": host,
            "address": str(addresses.get(host) or facts.get("ansible_host") or host),
            "port": int(facts.get("ansible_port") or 22),
            "user": str(users.get(host) or facts.get("ansible_user") or "root"),
        }
        if transfer == "direct":
            target.update(
                key=f"{key_dir}/id_ed25519",
                known_hosts=f"{key_dir}/known_hosts",
                key_comment=key_comment,
            )
        targets.append(target)
    return {"containers": containers, "targets": targets}


class FilterModule:
    """ferry.docker migrate guard filter."""

    def filters(self):
        return {"migrate_guard_spec": migrate_guard_spec}
