#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_container_health
short_description: Wait until a container is up, or fail with why it is not and its last log lines
version_added: 0.1.0
description:
  - Polls the Docker engine until the container is up, has failed, or O(timeout) has passed.
  - A container with a healthcheck is up when its health is C(healthy), and has failed when it is
    C(unhealthy).
  - A container without a healthcheck is up only after it has stayed running for O(stable_seconds)
    with the same restart count and start time. The engine reports a container that waits for its
    next automatic restart as running, so one look cannot tell a crash loop from a service.
  - With or without a healthcheck, a container that restarts while it is watched, exits, dies or is
    removed has failed at once.
  - On failure the message and RV(log_tail) hold the last O(log_lines) lines of the container's log
    (stdout and stderr). Its configuration and environment are never returned, and the values of
    environment variables whose names look secret (password, token, key, ...) are masked if a log
    line prints them.
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
    details:
      - It never changes anything.
options:
  name:
    description:
      - Name or ID of the container.
      - One of O(name) and O(names) is required.
    type: str
  names:
    description:
      - Watch several containers at once, each with its own verdict, within one O(timeout); the task fails
        when any of them is not up, and RV(containers) says which and why.
    type: list
    elements: str
  timeout:
    description:
      - Seconds to wait, in all, for the container to be up.
      - Must be at least O(stable_seconds).
    type: int
    default: 120
  stable_seconds:
    description:
      - Seconds a container without a healthcheck must stay running, with the same restart count and
        start time, to count as up.
    type: int
    default: 10
  interval:
    description:
      - Seconds between two looks at the container, at most. An event of the container in the engine's event stream
        (its health check's result, a start, an end) ends the wait at once, so a container that turns healthy is
        seen within milliseconds; its state, read at each look, alone decides. Where no event stream can be opened,
        the looks are O(interval) apart.
    type: float
    default: 1.0
  log_lines:
    description:
      - How many of the last lines of the container's log a failure shows (0 for none).
    type: int
    default: 20
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
seealso:
  - module: ferry.docker.docker_container_restore
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Wait until db runs and stays up (healthy, if it has a healthcheck)
  ferry.docker.docker_container_health:
    name: db
    timeout: 120
    stable_seconds: 10
"""

RETURN = r"""
status:
  description:
    - C(healthy) (its healthcheck passed) or C(running) (no healthcheck, stayed running for O(stable_seconds)).
    - On failure C(missing), C(exited), C(restarting), C(unhealthy) or C(timeout).
  returned: always
  type: str
  sample: running
state:
  description: The container's state at the last look.
  returned: always
  type: dict
  contains:
    status:
      description: C(running), C(restarting), C(exited), ...
      type: str
    restart_count:
      description: Times the engine restarted the container.
      type: int
    started_at:
      description: When it was last started.
      type: str
    exit_code:
      description: Exit code of its last run.
      type: int
    health:
      description: C(healthy), C(unhealthy), C(starting), or C(none) without a healthcheck.
      type: str
    health_output:
      description: Output of the last healthcheck run.
      type: str
  sample: {exists: true, status: running, running: true, restarting: false, paused: false, restart_count: 0,
           started_at: "2026-11-30T05:00:00.123456789Z", exit_code: 0, oom_killed: false, error: "",
           health: none, health_output: ""}
log_tail:
  description: Last lines of the container's log; only when the check failed.
  returned: always
  type: list
  elements: str
  sample: ['FATAL:  data directory "/var/lib/postgresql/15/main" has wrong ownership']
waited:
  description: Seconds spent watching.
  returned: always
  type: float
checks:
  description: How many times the container was looked at.
  returned: always
  type: int
containers:
  description:
    - With O(names), per container its C(status) (as RV(status)), C(up), C(reason) and C(log_tail) (when
      not up).
  returned: with O(names)
  type: dict
"""

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_health import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
