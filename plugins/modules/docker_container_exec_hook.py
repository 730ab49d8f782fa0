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

from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException, FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._exechook import hook_argv, hook_state, run_exec
from ansible_collections.ferry.docker.plugins.module_utils._health import log_tail
from ansible_collections.ferry.docker.plugins.module_utils._restore import RequestException, inspect_or_none

SUMMARY_KEYS = ("source", "status", "exit_code", "duration", "killed", "reason")


def finish(fm, result, msg=None):
    """Exit (or fail with msg) with the result and its summary."""
    result["summary"] = {key: result[key] for key in SUMMARY_KEYS}
    if msg is None:
        fm.exit(**result)
    fm.fail(msg, **result)


def main():
    fm = FerryModule(
        dict(
            container=dict(type="str", required=True),
            command=dict(type="raw"),
            from_label=dict(type="str"),
            exec_timeout=dict(type="int", default=300),
            on_error=dict(type="str", choices=["fail", "continue"], default="fail"),
            user=dict(type="str"),
            output_lines=dict(type="int", default=20),
        ),
        mutually_exclusive=[("command", "from_label")],
        required_one_of=[("command", "from_label")],
        supports_check_mode=True,
    )
    p = fm.params
    name = p["container"]
    if p["exec_timeout"] <= 0:
        fm.fail(f"exec_timeout must be more than 0 seconds, not {p['exec_timeout']}")
    result = dict(
        changed=False,
        status="none",
        reason="",
        source="command" if p["from_label"] is None else f"label:{p['from_label']}",
        exit_code=None,
        stdout_lines=[],
        stderr_lines=[],
        duration=0.0,
        killed=False,
    )
    client = fm.client
    try:
        inspect = inspect_or_none(client.inspect_container, name)
    except (DockerException, RequestException) as exc:
        finish(fm, result, f"Cannot inspect container {name}: {exc}.")
    if inspect is None:
        finish(fm, result, f"Container {name} does not exist; check the name (docker ps -a).")
    command = p["command"]
    if p["from_label"] is not None:
        command = ((inspect.get("Config") or {}).get("Labels") or {}).get(p["from_label"])
        if command is None:
            result["reason"] = f"container {name} has no label {p['from_label']}"
            finish(fm, result)
    try:
        argv = hook_argv(command)
    except ValueError as exc:
        finish(fm, result, f"The hook for container {name} ({result['source']}) is not usable: {exc}.")
    runnable, why = hook_state(inspect)
    if not runnable:
        result.update(status="skipped", reason=why)
        fm.module.warn(f"Hook {result['source']} of container {name} not run: {why}.")
        finish(fm, result)
    if fm.check_mode:
        result.update(changed=True, status="check", reason="check mode: the command would run")
        finish(fm, result)
    try:
        ran = run_exec(client, name, argv, p["exec_timeout"], user=p["user"], base_url=fm.base_url)
    except (DockerException, RequestException) as exc:
        finish(fm, result, f"Cannot run the hook ({result['source']}) in container {name}: {exc}.")
    env = (inspect.get("Config") or {}).get("Env") or []
    result.update(
        changed=True,
        status=ran["status"],
        exit_code=ran["rc"],
        duration=ran["duration"],
        killed=ran["killed"],
        stdout_lines=log_tail(ran["stdout"], env, p["output_lines"]),
        stderr_lines=log_tail(ran["stderr"], env, p["output_lines"]),
    )
    if ran["status"] == "ok":
        finish(fm, result)
    if ran["status"] == "timeout":
        result["reason"] = "the command did not end within %d s%s" % (
            p["exec_timeout"],
            "; its process was killed" if ran["killed"] else "; it may still be running in the container",
        )
    else:
        result["reason"] = f"the command exited with code {ran['rc']}"
    shown = result["stderr_lines"][-5:] or result["stdout_lines"][-5:]
    msg = f"Hook {result['source']} in container {name} failed: {result['reason']}." + (
        " Last output: " + " | ".join(shown) if shown else ""
    )
    if p["on_error"] == "continue":
        fm.module.warn(msg + " Going on (on_error=continue).")
        finish(fm, result)
    finish(fm, result, msg)


if __name__ == "__main__":
    main()
