#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_bundle_restore
short_description: Restore a group of containers from their bundles, check them, and undo it all on failure
version_added: 0.1.0
description:
  - Runs on the target host, as one task, what a migration does there for a group of containers that move
    together, in dependency order. For each member it loads the image (M(ferry.docker.docker_load)) or
    imports the filesystem (M(ferry.docker.docker_import)), restores the named volumes
    (M(ferry.docker.docker_volume_restore)) and creates the container with its networks
    (M(ferry.docker.docker_container_restore)), started if it was running. Then each running member must
    pass M(ferry.docker.docker_container_health) and the optional TCP port and URL checks. The received
    bundles are removed unless O(keep_bundle=true).
  - Every object is recorded in RV(created) as soon as it exists. When a step fails, exactly those are
    removed (container, networks, volumes, the image tag, and the image if it was not on the host before),
    and the task fails naming the phase and the member, with the container's last log lines when the health
    check failed.
  - O(state=absent) removes what an earlier call created (O(created)), for a failure further on.
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the task run on the controller.
    support: full
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: none
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  state:
    description: V(present) restores and checks the group; V(absent) removes what O(created) lists.
    type: str
    default: present
    choices: [present, absent]
  members:
    description: The group (or O(groups)), in dependency order.
    type: list
    elements: dict
    suboptions:
      container:
        description: Name of the source container (the key of RV(created)).
        type: str
        required: true
      name:
        description: The container's name on this host.
        type: str
        required: true
      running:
        description: Whether it is to be started and checked.
        type: bool
        default: false
      has_volumes:
        description: Whether the bundle has named volumes.
        type: bool
        default: false
      image_ref:
        description: Repository and tag to give the image.
        type: str
        required: true
      image_id:
        description: ID of the bundle's image (commit mode), to know whether the host had it before.
        type: str
        default: ""
      received:
        description: The bundle directory on this host.
        type: str
        required: true
      entry:
        description: C(port_map), C(bind_map) and C(network_map) for M(ferry.docker.docker_container_restore).
        type: dict
        default: {}
  groups:
    description:
      - Several independent groups at once, instead of O(members) - each C(id) with its C(members) (as
        O(members)). Their running members are watched together (one stable window for all); a group that
        fails is undone on its own and the others go on. The task then does not fail; RV(groups) says per
        group what happened. With O(state=absent), O(created) is keyed by group id.
    type: list
    elements: dict
    suboptions:
      id:
        description: The group's name.
        type: str
        required: true
      members:
        description: Its members, as O(members).
        type: list
        elements: dict
        required: true
  created:
    description: With O(state=absent), the RV(created) of an earlier call.
    type: dict
    default: {}
  mode:
    description: V(commit) bundles hold an image, V(export) bundles a filesystem.
    type: str
    default: commit
    choices: [commit, export]
  create_bind_paths:
    description: Create missing bind source directories.
    type: bool
    default: true
  allow_privileged:
    description: Apply the privilege-bearing settings of the bundles (see M(ferry.docker.docker_container_restore)).
    type: bool
    default: false
  stop_timeout:
    description: Stop timeout of the containers.
    type: int
    default: 10
  health_timeout:
    description: Seconds each member may take to become healthy, or stable.
    type: int
    default: 120
  health_stable_seconds:
    description: Seconds a member without a healthcheck must stay running with no restart.
    type: int
    default: 10
  health_tcp_port:
    description: A TCP port on this host that must answer (0 for none).
    type: int
    default: 0
  health_url:
    description: A URL that must answer with a success or redirect status (empty for none).
    type: str
    default: ""
  keep_bundle:
    description: Keep the received bundles after success.
    type: bool
    default: false
  trust:
    description: C(decrypt_identities) and C(trusted_signers), passed to every restore module.
    type: dict
    default: {}
seealso:
  - module: ferry.docker.docker_migrate_source
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Restore web on the target and check it
  ferry.docker.docker_bundle_restore:
    members:
      - {container: web, name: web, running: true, has_volumes: true, image_ref: "ferry-migrate/web:latest",
         received: /var/lib/ferry/incoming/run1-host1-web}
    allow_privileged: true
  delegate_to: host2
"""

RETURN = r"""
groups:
  description: With O(groups), per group id its result - C(ok), and the fields below (or C(msg), C(phase), C(member)).
  returned: with O(groups)
  type: dict
created:
  description:
    - Per member, what was created (C(container), C(image), C(image_id), C(networks), C(volumes), C(bind_paths)).
  returned: always
  type: dict
verified_at:
  description: When every member passed its checks (epoch seconds).
  returned: success
  type: float
phases:
  description: Seconds spent restoring and checking.
  returned: O(state=present)
  type: dict
phase:
  description: The phase that failed.
  returned: failure
  type: str
member:
  description: The member whose step failed.
  returned: failure
  type: str
log_tail:
  description: The last log lines of a container that failed its health check.
  returned: failure
  type: list
  elements: str
target_cleanup:
  description: C(done), or what could not be removed.
  returned: failure, or O(state=absent)
  type: str
"""
