# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: transfer_authorized_keys_argv
short_description: The command that edits a login user's authorized_keys under a lock
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - Returns the C(sh -c) arguments that rewrite a login user's C(~/.ssh/authorized_keys) without the lines
    holding a fixed string as whole words (followed by a space or the line's end), then append a line if one is
    given, in one rename (mode 0600).
  - The edit holds C(flock) on the user's C(~/.ssh) for up to 30 seconds. Two runs that move containers onto
    the same host at once, or a guard that removes its key meanwhile, would otherwise lose each other's lines.
  - The C(ferry.docker.transfer) role and the migration guard (M(ferry.docker.docker_migrate_guard)) make the
    same edit.
positional: _input, add, user, then
options:
  _input:
    description: The fixed string whose lines are removed (a run key's base64 blob, or its comment).
    type: str
    required: true
  add:
    description: One line to append (empty for none).
    type: str
    default: ""
  user:
    description: Whose file it is, when the command runs as another user (root); empty for the user running it.
    type: str
    default: ""
  then:
    description: A shell command run after a successful edit, in the same round trip.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Remove a run's key from the login user's authorized_keys
  ansible.builtin.command:
    argv: "{{ 'ferry.docker migrate run-1' | ferry.docker.transfer_authorized_keys_argv }}"
  changed_when: true
"""

RETURN = r"""
_value:
  description: The command's arguments, starting with C(sh).
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.module_utils._journal import authorized_keys_argv


def transfer_authorized_keys_argv(drop, add="", user="", then=""):
    try:
        return authorized_keys_argv(str(drop), str(add or ""), str(user or ""), str(then or ""))
    except ValueError as exc:
        raise AnsibleFilterError(f"transfer_authorized_keys_argv: {exc}") from exc


class FilterModule:
    """ferry.docker transfer filter."""

    def filters(self):
        return {"transfer_authorized_keys_argv": transfer_authorized_keys_argv}
