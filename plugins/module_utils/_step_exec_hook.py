# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_container_exec_hook): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_migrate_source`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException
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


SPEC = dict(
    container=dict(type="str", required=True),
    command=dict(type="raw"),
    from_label=dict(type="str"),
    exec_timeout=dict(type="int", default=300),
    on_error=dict(type="str", choices=["fail", "continue"], default="fail"),
    user=dict(type="str"),
    output_lines=dict(type="int", default=20),
)
KWARGS = dict(
    mutually_exclusive=[("command", "from_label")],
    required_one_of=[("command", "from_label")],
    supports_check_mode=True,
)


def run(fm):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
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
