#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_run_config_info
short_description: Show the portable run configuration of a container
version_added: 0.1.0
description:
  - Returns the settings of a container that were chosen when it was created (command, environment,
    ports, mounts, networks, restart policy, resources and so on), without the values the engine
    filled in, in the form the ferry.docker capture modules record in a bundle.
  - Also returns the definitions of its user-defined networks and of its volumes, so that they can be
    recreated on another host.
  - Environment values are replaced by C(********) unless O(show_env_values=true).
extends_documentation_fragment:
  - ferry.docker.docker
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - The module only reads; it behaves the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: full
options:
  container:
    description:
      - Name or ID of the container.
    type: str
    required: true
  show_env_values:
    description:
      - Return the container's environment variable values as they are.
      - By default every value is replaced by C(********) (names are kept), because environment
        variables often hold passwords and tokens and task results end up in logs. Only set this to
        V(true) when the result is not logged, or with C(no_log) on the task.
    type: bool
    default: false
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
- name: Show how the web container was created
  ferry.docker.docker_run_config_info:
    container: web
  register: web_config

- name: Read the real environment values without logging them
  ferry.docker.docker_run_config_info:
    container: web
    show_env_values: true
  no_log: true
  register: web_config_secret
"""

RETURN = r"""
run_config:
  description:
    - The portable run configuration, with env values redacted unless O(show_env_values=true).
  returned: always
  type: dict
  contains:
    name:
      description: Container name.
      type: str
    image:
      description: Image reference the container was created from.
      type: str
    config:
      description: The user-chosen part of the container's C(Config) (Docker key names).
      type: dict
    host_config:
      description: The user-chosen part of the container's C(HostConfig).
      type: dict
    networks:
      description: Endpoint settings by network name.
      type: dict
    network_definitions:
      description: Definitions of the user-defined networks (same as RV(network_definitions)).
      type: dict
    volume_definitions:
      description: Definitions of the mounted volumes (same as RV(volume_definitions)).
      type: dict
    mounts:
      description: Mounts (volumes, binds, tmpfs) sorted by destination.
      type: list
      elements: dict
  sample:
    name: web
    image: nginx:1.27
    config:
      Env: ["DB_PASSWORD=********"]
    host_config:
      RestartPolicy: {Name: always, MaximumRetryCount: 0}
    networks: {backend: {Aliases: [web]}}
    network_definitions: {}
    volume_definitions: {}
    mounts: []
network_definitions:
  description: Creatable definitions of the container's user-defined networks, by name.
  returned: always
  type: dict
volume_definitions:
  description: Creatable definitions (driver, options, labels, C(Anonymous)) of the container's volumes, by name.
  returned: always
  type: dict
image:
  description: Image reference the container was created from.
  returned: always
  type: str
  sample: nginx:1.27
image_id:
  description: ID of the container's image.
  returned: always
  type: str
state:
  description: The container's state.
  returned: always
  type: dict
  sample: {status: running, running: true, paused: false}
"""

from ansible_collections.ferry.docker.plugins.module_utils._capture import Lookups, container_facts
from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import redact


def main():
    fm = FerryModule(
        dict(container=dict(type="str", required=True), show_env_values=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    cap = Lookups(fm)
    inspect = cap.inspect_container(fm.params["container"])
    run_config = cap.run_config(inspect)
    if not fm.params["show_env_values"]:
        run_config = redact(run_config)
    facts = container_facts(inspect)
    fm.exit(
        changed=False,
        run_config=run_config,
        network_definitions=run_config["network_definitions"],
        volume_definitions=run_config["volume_definitions"],
        image=facts["image"],
        image_id=facts["image_id"],
        state=facts["state"],
    )


if __name__ == "__main__":
    main()
