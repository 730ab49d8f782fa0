# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: backup_hook_list
short_description: The checked list of backup hooks of one container for one phase
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - "Reads the C(backup_hooks) variable of the C(ferry.docker.backup) role, a mapping from container
    name to C({pre: [hooks], post: [hooks]}), and returns the hooks of O(container) for O(phase),
    each with every field set."
  - A hook is a mapping with C(command) (a string run with C(sh -c), or a list that is the argv),
    and optionally C(timeout) (seconds), C(on_error) (C(fail) or C(continue)) and C(user).
  - Anything else (an unknown key, a phase other than C(pre) and C(post), a bad C(on_error), a
    timeout that is not a positive whole number, an empty command) fails with a message naming it.
positional: _input, container, phase
options:
  _input:
    description: The C(backup_hooks) mapping.
    type: dict
    required: true
  container:
    description: Name of the container, as the key in C(backup_hooks).
    type: str
    required: true
  phase:
    description: C(pre) or C(post).
    type: str
    required: true
    choices: [pre, post]
  timeout:
    description: Seconds a hook may run when it sets no C(timeout).
    type: int
    default: 300
  on_error:
    description: C(on_error) of a hook that sets none.
    type: str
    default: fail
    choices: [fail, continue]
"""

EXAMPLES = r"""
- name: Run the pre-backup hooks of redis
  ferry.docker.docker_container_exec_hook:
    container: redis
    command: "{{ item.command }}"
    exec_timeout: "{{ item.timeout }}"
    on_error: "{{ item.on_error }}"
  loop: "{{ backup_hooks | ferry.docker.backup_hook_list('redis', 'pre') }}"
"""

RETURN = r"""
_value:
  description: The hooks, in order, each with C(command), C(timeout), C(on_error) and C(user) (null when unset).
  type: list
  elements: dict
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

PHASES = ("pre", "post")
HOOK_KEYS = ("command", "timeout", "on_error", "user")
ON_ERROR = ("fail", "continue")


def _fail(msg):
    raise AnsibleFilterError(f"backup_hooks: {msg}")


def _command(value, where):
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value):
        return list(value)
    return _fail(f"{where}.command must be a non-empty string (run with sh -c) or list of strings (an argv)")


def _timeout(value, where):
    if isinstance(value, bool):
        _fail(f"{where}.timeout must be a whole number of seconds, not {value!r}")
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        return _fail(f"{where}.timeout must be a whole number of seconds, not {value!r}")
    if seconds <= 0 or str(seconds) != str(value).strip():
        _fail(f"{where}.timeout must be a whole number of seconds above 0, not {value!r}")
    return seconds


def backup_hook_list(hooks, container, phase, timeout=300, on_error="fail"):
    """The hooks of container for phase, each {command, timeout, on_error, user}."""
    if phase not in PHASES:
        _fail(f"phase must be pre or post, not {phase!r}")
    if on_error not in ON_ERROR:
        _fail(f"the default on_error must be fail or continue, not {on_error!r}")
    default_timeout = _timeout(timeout, "backup_hook_timeout")
    if hooks is None:
        return []
    if not isinstance(hooks, Mapping):
        _fail(f"must be a mapping of container name to {{pre: [...], post: [...]}}, not {type(hooks).__name__}")
    entry = hooks.get(container)
    if entry is None:
        return []
    if not isinstance(entry, Mapping):
        _fail(f"{container} must be a mapping with pre and/or post, not {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in PHASES)
    if unknown:
        _fail(f"{container} has unknown key(s) {', '.join(unknown)}; only pre and post are known")
    listed = entry.get(phase) or []
    if not isinstance(listed, (list, tuple)):
        _fail(f"{container}.{phase} must be a list of hooks")
    result = []
    for index, hook in enumerate(listed):
        where = f"{container}.{phase}[{index}]"
        if isinstance(hook, str):
            hook = {"command": hook}
        if not isinstance(hook, Mapping):
            _fail(f"{where} must be a mapping with command (or a command string)")
        unknown = sorted(str(k) for k in hook if k not in HOOK_KEYS)
        if unknown:
            _fail(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(HOOK_KEYS)}")
        if "command" not in hook:
            _fail(f"{where} has no command")
        hook_on_error = hook.get("on_error", on_error)
        if hook_on_error not in ON_ERROR:
            _fail(f"{where}.on_error must be fail or continue, not {hook_on_error!r}")
        user = hook.get("user")
        if user is not None and (not isinstance(user, str) or not user):
            _fail(f"{where}.user must be a user name or UID string")
        result.append(
            {
                "command": _command(hook["command"], where),
                "timeout": _timeout(hook["timeout"], where) if "timeout" in hook else default_timeout,
                "on_error": hook_on_error,
                "user": user,
            }
        )
    return result


class FilterModule:
    """ferry.docker backup hook filter."""

    def filters(self):
        return {"backup_hook_list": backup_hook_list}
