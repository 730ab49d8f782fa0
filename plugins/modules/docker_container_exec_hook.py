#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_container_exec_hook
short_description: Run a hook command inside a running container, with a timeout
version_added: 0.1.0
description:
  - Runs a command inside a container (C(docker exec)), such as a database flush before a backup,
    and waits at most O(exec_timeout) seconds for it to end.
  - The command is O(command), or the value of the container's label O(from_label) (such as
    C(ferry.docker.pre-backup)), which runs with C(sh -c). A container without that label has no
    hook; nothing runs and the module reports C(status=none).
  - A container that is not running or is paused cannot run a hook; nothing runs and the module
    reports C(status=skipped) with the reason.
  - A command that exits with a non-zero code or runs too long fails the task when O(on_error=fail),
    or is reported with a warning when O(on_error=continue). When it runs too long and the engine is
    on this host (a C(unix://) socket), its process is killed.
  - Only the last O(output_lines) lines of its output are returned, with the values of the
    container's secret-looking environment variables (password, token, key, ...) masked. The
    container's environment itself is never returned.
extends_documentation_fragment:
  - ferry.docker.docker
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - In check mode the command is not run; the module reports whether it would run.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: none
    details:
      - Each run runs the command again and reports a change; whether the command is idempotent is up to it.
options:
  container:
    description:
      - Name or ID of the container.
    type: str
    required: true
  command:
    description:
      - The command. A string runs with C(sh -c) inside the container; a list is the argv itself.
      - Exactly one of O(command) and O(from_label) is required.
    type: raw
  from_label:
    description:
      - Name of a container label whose value is the command, run with C(sh -c).
    type: str
  exec_timeout:
    description:
      - Seconds the command may run.
    type: int
    default: 300
  on_error:
    description:
      - C(fail) fails the task when the command exits non-zero or runs too long; C(continue) returns
        C(failed=false) with a warning and the details.
    type: str
    choices: [fail, continue]
    default: fail
  user:
    description:
      - User (name or UID, optionally C(:group)) the command runs as; the container's user by default.
    type: str
  output_lines:
    description:
      - How many of the last lines of stdout and of stderr are returned.
    type: int
    default: 20
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
seealso:
  - module: community.docker.docker_container_exec
    description: Runs a command in a container without a time limit.
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Ask Redis for a snapshot and wait until it is written
  ferry.docker.docker_container_exec_hook:
    container: redis
    command: >-
      before=$(redis-cli LASTSAVE); redis-cli BGSAVE;
      while [ "$(redis-cli LASTSAVE)" = "$before" ]; do sleep 1; done
    exec_timeout: 120

- name: Run the container's own pre-backup hook, if it has one
  ferry.docker.docker_container_exec_hook:
    container: db
    from_label: ferry.docker.pre-backup
    on_error: continue
"""

RETURN = r"""
status:
  description:
    - C(ok) (exit code 0), C(failed) (non-zero exit code), C(timeout), C(skipped) (the container is
      not running or is paused), C(none) (no such label on the container), or C(check) in check mode.
  returned: always
  type: str
  sample: ok
reason:
  description: Why the hook did not run or did not succeed; empty when it succeeded.
  returned: always
  type: str
  sample: the command exited with code 1
source:
  description: C(command) or C(label:<name>).
  returned: always
  type: str
  sample: label:ferry.docker.pre-backup
exit_code:
  description:
    - The command's exit code; null when it did not run or did not end.
    - Not called C(rc), since Ansible takes a non-zero C(rc) as a failed task even with O(on_error=continue).
  returned: always
  type: int
  sample: 0
stdout_lines:
  description: Last O(output_lines) lines of its standard output, secret values masked.
  returned: always
  type: list
  elements: str
stderr_lines:
  description: Last O(output_lines) lines of its standard error, secret values masked.
  returned: always
  type: list
  elements: str
duration:
  description: Seconds the command ran.
  returned: always
  type: float
killed:
  description: Whether the process of a command that ran too long was killed.
  returned: always
  type: bool
summary:
  description: RV(source), RV(status), RV(exit_code), RV(duration), RV(killed) and RV(reason) in one dict, for a report.
  returned: always
  type: dict
  sample: {source: "label:ferry.docker.pre-backup", status: ok, exit_code: 0, duration: 0.05, killed: false, reason: ""}
"""

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_exec_hook import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
