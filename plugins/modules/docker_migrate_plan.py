#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_migrate_plan
short_description: Group the containers to migrate with the containers they depend on, in dependency order
version_added: 0.1.0
description:
  - Reads every container of this host and returns the dependency groups of O(containers) (see
    RV(groups)). Two containers are in one group when one names the other in a C(container:) network,
    IPC or PID mode, in C(volumes_from) or in C(links), or when both belong to one compose project
    (label C(com.docker.compose.project); C(com.docker.compose.depends_on) orders the services).
  - A group moves as one unit. With O(with_dependencies=true) the members that were not asked for are
    pulled in, and the C(pulled_in) list of each of RV(groups) names them; with V(false) such a group is a
    problem that names them.
  - A container that does not exist is listed in RV(missing), a group that cannot be moved (a cycle, a
    reference to a container that does not exist) in RV(problems); the other groups are planned.
  - Only reads. Returns names, ids and dependencies, never a run config.
extends_documentation_fragment:
  - ferry.docker.docker
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: full
options:
  containers:
    description: Names or ids of the containers asked for.
    type: list
    elements: str
    required: true
  with_dependencies:
    description: Pull in the rest of each group, or report the group as a problem.
    type: bool
    default: true
  name_map:
    description: Names on the target, by source name (members missing from it keep their names).
    type: dict
    default: {}
  probe:
    description:
      - Also return, in RV(probes), what a migration needs to know of each planned container before it
        checks the target - its run config, state, image layers and sizes.
      - The run configs hold environment values as they are (a restore needs them); run the task with
        C(no_log) and pass them on only to tasks that are C(no_log) too.
    type: bool
    default: false
  programs:
    description:
      - Programs that must be on PATH on this host (the source) before anything is touched, such as
        V(rsync) for a direct transfer. A missing one fails the task with a message that names the Debian
        package to install, and so does an V(rsync) older than 3.2.3, which lacks the C(--mkpath) the transfer
        passes.
    type: list
    elements: str
    default: []
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
seealso:
  - module: ferry.docker.docker_migrate_source
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Plan the groups of web and db
  ferry.docker.docker_migrate_plan:
    containers: [web, db]
  register: plan
"""

RETURN = r"""
groups:
  description:
    - The groups, in the order of their first requested member. C(id) is the group's first member;
      C(members) are in dependency order (a member after the ones it needs); C(requested) and
      C(pulled_in) split them; C(dependencies) are C(dependent -> dependency (how)) lines;
      C(shared_volumes) maps a named volume to the members that mount it; C(references) maps each
      member's id, short id and name to its name on the target (the C(references) option of
      M(ferry.docker.docker_container_restore)).
  returned: always
  type: list
  elements: dict
missing:
  description: Requested containers that do not exist on this host.
  returned: always
  type: list
  elements: str
problems:
  description: Requested containers whose group cannot be moved, with the reason.
  returned: always
  type: dict
resolved:
  description: The name of each requested container that exists, by the reference given (a name or an id).
  returned: always
  type: dict
probes:
  description:
    - With O(probe=true), per planned container - C(state_before) (V(running), V(paused) or the engine's
      status), C(image_id), C(layers) (the image's diff IDs), C(image_bytes), C(rw_bytes) (its writable
      layer), C(volumes) (its named volumes), C(volume_bytes), C(hook_label) (it has a C(ferry.docker.pre-migrate)
      label), and C(run_config) (environment values included).
  returned: when O(probe=true)
  type: dict
architecture:
  description: This engine's CPU architecture.
  returned: when O(probe=true)
  type: str
"""

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_plan import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
