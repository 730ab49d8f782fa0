#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_migrate_guard
short_description: Journal a migration on its source host and guard the source against a lost controller
version_added: 0.1.0
description:
  - Keeps the journal of one migration run on this host (the source) and a guard process that puts
    the source containers back as they were when the run stops renewing its lease, for example
    because the controller was interrupted, rebooted or lost its network.
  - O(state=armed) records each container's state before the run, the targets and the run key, and
    starts the guard. Run it before the source is stopped or paused.
  - O(state=renewed) renews the lease and records the phase or status of containers. It fails when the
    guard has already fired, so a run that lost its lease stops instead of going on.
  - O(state=disarmed) ends the guard. Run it at cutover, when the target serves.
  - O(state=status) reads the journal and changes nothing. Without O(run_id) it lists, in RV(runs),
    every run of O(journal_dir) that left containers unfinished (what C(playbooks/recover.yml) shows).
  - O(state=rolled_back) and O(state=finished) are for C(playbooks/recover.yml), after a run was lost.
    V(rolled_back) does at once what the guard does when it fires (with O(target_stopped=true) when the
    caller has already stopped the target copies); V(finished) records O(containers) as migrated, after
    the caller checked that their target copies serve and stopped their sources. Both refuse a run whose
    guard still runs with a fresh lease, since that run is not lost.
  - Every step of a run carries C(FERRY_MIGRATE_RUN=<run_id>) in its environment (the migrate role sets
    it). While such a process runs on the host, the guard counts the lease as renewed, so long steps
    (a capture of many GB, an rsync) need no renewals of their own; once the controller is lost, its
    SSH sessions and with them those processes end, and the lease lapses.
  - When the lease is older than O(timeout) seconds, the guard, for each container whose migration
    is unfinished, stops the target's copy first if the run had reached the restore phase (over ssh
    with the run key), then starts, unpauses or pauses the source as it was before the run, and
    removes the run key from every target it reaches. If the target cannot be reached when its copy
    may be running, the source is left as it is and the journal says C(needs_decision), so that two
    copies never run; C(playbooks/recover.yml) decides.
  - The guard is a detached process (its own session) running a copy of this collection's journal
    code with the same Python interpreter; it needs only the Docker SDK for Python and an ssh
    client. Its log is C(<run_id>.guard.log) in O(journal_dir).
extends_documentation_fragment:
  - ferry.docker.docker
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - In check mode nothing is written and no guard is started.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: partial
    details:
      - Arming twice with the same containers changes nothing the second time.
      - Renewing always moves the lease forward; it reports a change only when a phase or status changes.
options:
  run_id:
    description:
      - The migration run, as the journal file name (letters, digits, C(_), C(.), C(-)).
      - Required unless O(state=status).
    type: str
  state:
    description:
      - What to do; see the description.
    type: str
    choices: [armed, renewed, disarmed, status, rolled_back, finished]
    default: status
  remove_run_key:
    description:
      - With O(state=disarmed), also remove the run key, once the guard has exited. Each target's
        C(authorized_keys) loses the line of O(targets[].key_comment), over ssh with the run key itself.
        The run's key directory on this host is removed, with the key pair, C(known_hosts) and the
        rsync progress file.
      - RV(keys) says what was removed and RV(keys_removed) whether all of it was. A caller removes what
        is left with its own connection.
    type: bool
    default: false
  report:
    description:
      - With O(state=disarmed), once the guard is disarmed, write this report of the run on this host, as
        M(ferry.docker.report_file) writes one on the controller (JSON, directories made C(0700), the file C(0600),
        renamed into place). The migrate role writes the host's part of its report so, one module start less at
        the end of a run. Not in check mode.
      - When it cannot be written, the call fails with the path and why; the guard is disarmed all the same.
    type: dict
    suboptions:
      path:
        description: Absolute path of the report on this host.
        type: path
        required: true
      content:
        description: The report, a mapping or a list.
        type: raw
        required: true
  target_stopped:
    description:
      - With O(state=rolled_back), the caller has stopped the run's copies on the targets (with its own
        connection), so the sources are put back without stopping them over ssh first.
    type: bool
    default: false
  journal_dir:
    description:
      - Directory of the journals on this host (created with mode 0700).
    type: path
    default: /var/lib/ferry/journal
  timeout:
    description:
      - Seconds without a renewal after which the guard acts.
    type: int
    default: 120
  containers:
    description:
      - With O(state=armed), the containers this run migrates from this host; with O(state=renewed),
        the containers whose O(phase) or O(status) to record (all of the run's when omitted).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Name of the source container.
        type: str
        required: true
      state_before:
        description:
          - Its state before the run (V(running), V(paused), or any other state, which the guard leaves
            as it finds it). Required when arming.
        type: str
      target:
        description: The target host, as named in O(targets[].host).
        type: str
      target_name:
        description: The container's name on the target.
        type: str
      cutover:
        description:
          - What the run does with the source once its copy serves. When the run is lost after it journaled the
            container as migrated but before this cutover, the guard stops (V(stop)) or removes (V(remove), volumes
            kept) the source, so that only the copy serves.
        type: str
        choices: [stop, keep, remove]
      target_volumes:
        description:
          - The named volumes the run creates for it on the target. When the guard stops a copy that this
            collection restored there, it removes the copy and these volumes, so that the target is as it
            was before the run.
        type: list
        elements: str
      streamed_images:
        description:
          - With O(state=renewed), the IDs of the images the capture loaded straight into the target's engine
            for it (they were not there before). A guard that fires removes them unless a container uses them.
        type: list
        elements: str
      precopied_paths:
        description:
          - With O(state=renewed), the bind directories a pre-copy made on the target for it (C(<dir>/.) for one
            that was there empty). A guard that fires removes them (empties the latter).
        type: list
        elements: str
      precopied:
        description:
          - The volumes a pre-copy creates on the target for it (with O(state=armed), or O(state=renewed) once
            known). A guard that fires removes them there unless a container uses them (the engine refuses to
            remove a volume in use).
        type: list
        elements: str
  phase:
    description:
      - The phase the containers enter. From V(restore) on, the guard stops the target's copy before it
        puts the source back.
    type: str
    choices: [preflight, precopy, stop, capture, transfer, restore, health, cutover, done]
  status:
    description:
      - The outcome to record for the containers; V(migrated) and V(rolled_back) close them.
    type: str
    choices: [in_progress, migrated, rolled_back, needs_decision]
  targets_known_hosts:
    description:
      - With O(state=armed), the lines of the known_hosts file (the targets' own host keys, read over
        Ansible's connection) that arming writes at each O(targets[].known_hosts) path (0600), for the run
        key's ssh (rsync, and the guard). The migrate role passes the transfer role's C(transfer_known_hosts).
    type: str
    default: ""
  targets:
    description:
      - The hosts this run sends to, and how the guard reaches them (with the run key).
    type: list
    elements: dict
    default: []
    suboptions:
      host:
        description: Inventory name of the target.
        type: str
        required: true
      address:
        description: Address ssh connects to.
        type: str
        required: true
      port:
        description: SSH port.
        type: int
        default: 22
      user:
        description:
          - SSH user on the target (the one the run key is authorised for).
          - When it is not V(root), what the guard does there as root (stop and remove the copy, its volumes and
            images, look for the run's processes) goes through C(sudo -n), which must not ask for a password.
        type: str
        default: root
      key:
        description: Private key of the run on this host.
        type: path
      known_hosts:
        description: known_hosts file holding the target's host key.
        type: path
      key_comment:
        description: Comment of the run key in the target's authorized_keys, to remove it.
        type: str
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
  - ssh (OpenSSH client), for the guard to reach the targets
seealso:
  - module: ferry.docker.docker_container_health
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Journal the run and guard the source before stopping it
  ferry.docker.docker_migrate_guard:
    run_id: "{{ run_id }}"
    state: armed
    timeout: 120
    containers:
      - name: web
        state_before: running
        target: host2
        target_name: web
    targets:
      - host: host2
        address: 192.0.2.12
        key: /var/lib/ferry/keys/run/id_ed25519
        known_hosts: /var/lib/ferry/keys/run/known_hosts
        key_comment: ferry.docker migrate run

- name: Renew the lease as the run enters the restore phase
  ferry.docker.docker_migrate_guard:
    run_id: "{{ run_id }}"
    state: renewed
    phase: restore

- name: Cut over - the target serves
  ferry.docker.docker_migrate_guard:
    run_id: "{{ run_id }}"
    state: disarmed
"""

RETURN = r"""
journal:
  description: The run's journal on this host after the call (run id, guard, targets, containers).
  returned: always
  type: dict
path:
  description: Path of the journal file.
  returned: always
  type: str
guard_alive:
  description: Whether the guard process runs after the call.
  returned: always
  type: bool
keys:
  description:
    - With O(state=disarmed) and O(remove_run_key=true), one entry per target of the run (C(host), C(removed),
      C(error)); a key directory on this host that could not be removed is an entry with C(host=localhost).
  returned: when O(state=disarmed) and O(remove_run_key=true)
  type: list
  elements: dict
keys_removed:
  description: Whether the run key is gone from every target and the key directory from this host.
  returned: when O(state=disarmed) and O(remove_run_key=true)
  type: bool
report:
  description: With O(state=disarmed) and O(report), where the report was written.
  returned: when O(state=disarmed) and O(report), not in check mode
  type: str
  sample: /var/lib/ferry/reports/migrate.json
runs:
  description:
    - With O(state=status) and no O(run_id), the unfinished runs of O(journal_dir), oldest first; each
      has C(run_id), C(guard), C(guard_alive), C(targets), C(keys) (per target the C(host), C(user) and
      C(comment) of the run key), C(open) (the containers left unfinished) and
      C(containers) (phase, status, state_before, target, target_name per container), or C(error) for a
      journal that cannot be read.
  returned: when O(state=status) and no O(run_id)
  type: list
  elements: dict
"""

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_guard import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
