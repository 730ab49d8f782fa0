# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: transfer_rsync_argv
short_description: The arguments of the direct transfer's rsync, with the run's key
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - Returns rsync's arguments (without the program name) to push a bundle directory to a receiving host
    over SSH with a run's key (the C(ferry.docker.transfer) role's C(keys_up)). The transfer role and
    M(ferry.docker.docker_migrate_source) use the same arguments.
  - Streamed and resumable (C(--partial)); every file is checked against a whole-file checksum; every
    received directory is made 0700; the host key is checked against the run's known_hosts file.
positional: _input, port, src_dir, user, address, dest_dir
options:
  _input:
    description: The run's key directory on the sending host (C(id_ed25519) and C(known_hosts)).
    type: str
    required: true
  port:
    description: SSH port of the receiving host.
    type: int
    required: true
  src_dir:
    description: Bundle directory on the sending host.
    type: str
    required: true
  user:
    description: Login user on the receiving host.
    type: str
    required: true
  address:
    description: Address of the receiving host, as the sending host reaches it.
    type: str
    required: true
  dest_dir:
    description: Receiving directory.
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Send a bundle
  ansible.builtin.command:
    argv: >-
      {{ ['rsync'] + key_dir | ferry.docker.transfer_rsync_argv(22, '/var/lib/ferry/migrate/run1/web', 'root',
                                                                  '192.0.2.12', '/var/lib/ferry/incoming/web') }}
"""

RETURN = r"""
_value:
  description: rsync's arguments.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.module_utils._transfer import rsync_argv


def transfer_rsync_argv(key_dir, port, src_dir, user, address, dest_dir):
    try:
        return rsync_argv(str(key_dir), int(port), str(src_dir), str(user), str(address), str(dest_dir))
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"transfer_rsync_argv: {exc}") from exc


class FilterModule:
    """ferry.docker transfer filter."""

    def filters(self):
        return {"transfer_rsync_argv": transfer_rsync_argv}
