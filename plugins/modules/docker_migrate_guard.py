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
  phase:
    description:
      - The phase the containers enter. From V(restore) on, the guard stops the target's copy before it
        puts the source back.
    type: str
    choices: [preflight, stop, capture, transfer, restore, health, cutover, done]
  status:
    description:
      - The outcome to record for the containers; V(migrated) and V(rolled_back) close them.
    type: str
    choices: [in_progress, migrated, rolled_back, needs_decision]
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
        description: SSH user on the target.
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

import importlib.util
import inspect
import os
import sys
import time

from ansible_collections.ferry.docker.plugins.module_utils import _journal
from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule, connection_kwargs

START_SECONDS = 10  # how long arming waits for the guard to record itself
STOP_SECONDS = 10  # how long disarming waits for it to exit


def guard_script(journal):
    """Write this collection's journal code beside the journal, for the guard process to run."""
    path = os.path.join(journal.directory, f"{journal.run_id}.guard.py")
    _journal.write_atomically(path, inspect.getsource(_journal).encode())
    return path


def wait_for(predicate, seconds, poll=0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def arm(module, journal):
    params = module.params
    if importlib.util.find_spec("docker") is None:  # found, not imported: the guard process imports it
        module.fail(
            "the guard puts the sources back through the Docker SDK for Python, which this host lacks; "
            "install python3-docker (Docker SDK 5.0 or later). Nothing was changed"
        )
    missing = [c["name"] for c in params["containers"] if not c.get("state_before")]
    if not params["containers"] or missing:
        module.fail(
            f"arming the guard of run {journal.run_id} needs containers, each with state_before (missing: {missing})"
        )
    names = [c["name"] for c in params["containers"]]
    taken = _journal.holders(journal.directory, names, journal.run_id, _journal.guard_alive)
    if taken:
        module.fail(
            "another migration run still guards "
            + ", ".join(f"{name} (run {run})" for run, name in taken)
            + "; wait for it to finish, or run playbooks/recover.yml for it"
        )
    existing = journal.load()
    if existing and existing["guard"].get("status") in ("fired", "disarmed"):
        module.fail(
            f"run {journal.run_id} was already {existing['guard']['status']} on this host; "
            "start a new run (a new run id) or run playbooks/recover.yml"
        )
    wanted = {
        c["name"]: {
            k: c[k]
            for k in ("state_before", "target", "target_name", "target_volumes", "cutover")
            if c.get(k) is not None
        }
        for c in params["containers"]
    }
    unchanged = (
        existing is not None
        and existing["guard"].get("status") == "armed"
        and all({k: existing["containers"].get(n, {}).get(k) for k in fields} == fields for n, fields in wanted.items())
        and existing["targets"] == params["targets"]
        and _journal.guard_alive(existing)
    )
    if module.check_mode:
        return existing, not unchanged

    def change(doc):
        for name, fields in wanted.items():
            if name not in doc["containers"]:
                _journal.record(doc, name, phase="preflight", status="in_progress", **fields)
            else:
                doc["containers"][name].update(fields)
        doc["targets"] = params["targets"]
        doc["guard"].update(status="armed", timeout=params["timeout"], docker_host=module.base_url)

    with journal.locked():
        doc = journal.load() or _journal.new_document(journal.run_id, "source")
        change(doc)
        journal.save(doc)
        journal.renew()
    if not _journal.guard_alive(journal.load()):
        _journal.spawn(guard_script(journal), journal.directory, journal.run_id, sys.executable)
        if not wait_for(lambda: _journal.guard_alive(journal.load()), START_SECONDS):
            log = os.path.join(journal.directory, f"{journal.run_id}.guard.log")
            module.fail(f"the guard of run {journal.run_id} did not start within {START_SECONDS} s; see {log}")
    return journal.load(), not unchanged


def renew(module, journal):
    params = module.params
    doc = journal.load()
    if doc is None:
        module.fail(f"run {journal.run_id} has no journal in {journal.directory}; arm the guard first")
    if module.check_mode:
        return doc, bool(params["phase"] or params["status"])
    changed = False
    with journal.locked():
        doc = journal.load()
        status = doc["guard"].get("status")
        if status != "armed":
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(doc["guard"].get("fired_at", doc["updated"])))
            results = "; ".join(f"{r['container']}: {r['detail']}" for r in doc["guard"].get("results", []))
            module.fail(
                f"the guard of run {journal.run_id} is {status}"
                + (f" since {when} ({results})" if status == "fired" else "")
                + ": this run lost its lease and must not go on; run playbooks/recover.yml to finish or roll back"
            )
        journal.renew()
        names = [c["name"] for c in params["containers"]] or sorted(doc["containers"])
        updates = {k: params[k] for k in ("phase", "status") if params[k]}
        for name in names:
            entry = doc["containers"].get(name)
            if entry is None:
                module.fail(f"run {journal.run_id} does not journal a container {name!r}")
            if updates and any(entry.get(k) != v for k, v in updates.items()):
                _journal.record(doc, name, **updates)
                changed = True
        if changed:
            journal.save(doc)
    return doc, changed


def disarm(module, journal):
    doc = journal.load()
    if doc is None:
        return None, False
    status = doc["guard"].get("status")
    if status == "fired":
        module.fail(
            f"the guard of run {journal.run_id} fired before cutover; the journal in {journal.path} says what it "
            "did. Run playbooks/recover.yml"
        )
    if status != "armed" or module.check_mode:
        return doc, status == "armed"

    def change(current):
        current["guard"]["status"] = "disarmed"
        current["guard"]["disarmed_at"] = time.time()

    with journal.locked():
        current = journal.load()
        if current["guard"].get("status") == "fired":
            module.fail(f"the guard of run {journal.run_id} fired before cutover; run playbooks/recover.yml")
        change(current)
        journal.save(current)
        journal.drop_lease()
    _journal.wake_guard(current)  # it reads the journal, sees the disarm and exits
    if not wait_for(lambda: not _journal.guard_alive(current), STOP_SECONDS):
        module.fail(
            f"the guard of run {journal.run_id} (pid {current['guard'].get('pid')}) did not exit after disarming"
        )
    return journal.load(), True


def refuse_live(module, journal, doc):
    if doc is None:
        module.fail(f"run {journal.run_id} has no journal in {journal.directory}; nothing to recover")
    age = journal.lease_age()
    if doc["guard"].get("status") == "armed" and _journal.guard_alive(doc) and _journal.decide(doc, age) == "wait":
        module.fail(
            f"run {journal.run_id} is still in progress (its guard runs and its lease was renewed {age:.0f} s ago); "
            "let it finish, or wait for its guard to act"
        )


def roll_back(module, journal):
    doc = journal.load()
    refuse_live(module, journal, doc)
    if not _journal.open_containers(doc) or module.check_mode:
        return doc, bool(_journal.open_containers(doc))
    source_ops = _journal.SourceOps(module.base_url)
    doc = _journal.fire(
        journal,
        source_ops,
        _journal.TargetOps(doc.get("targets", [])),
        force=True,
        target_stopped=module.params["target_stopped"],
    )
    return doc, True


def finish(module, journal):
    doc = journal.load()
    refuse_live(module, journal, doc)
    names = [c["name"] for c in module.params["containers"]]
    unknown = [name for name in names if name not in doc["containers"]]
    if not names or unknown:
        module.fail(f"finishing run {journal.run_id} needs the names of its containers (unknown: {unknown})")
    todo = [name for name in names if doc["containers"][name].get("status") != "migrated"]
    if not todo or module.check_mode:
        return doc, bool(todo)

    def change(current):
        for name in todo:
            _journal.record(current, name, phase="done", status="migrated", guard="finished by recover.yml")
        if not _journal.open_containers(current):
            current["guard"]["status"] = (
                "disarmed" if current["guard"].get("status") == "armed" else current["guard"]["status"]
            )
        current["guard"]["recovered_at"] = time.time()

    return journal.update(change), True


def main():
    argument_spec = dict(
        run_id=dict(type="str"),
        state=dict(
            type="str",
            default="status",
            choices=["armed", "renewed", "disarmed", "status", "rolled_back", "finished"],
        ),
        target_stopped=dict(type="bool", default=False),
        remove_run_key=dict(type="bool", default=False),
        journal_dir=dict(type="path", default="/var/lib/ferry/journal"),
        timeout=dict(type="int", default=120),
        containers=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                name=dict(type="str", required=True),
                state_before=dict(type="str"),
                target=dict(type="str"),
                target_name=dict(type="str"),
                target_volumes=dict(type="list", elements="str"),
                cutover=dict(type="str", choices=["stop", "keep", "remove"]),
            ),
        ),
        phase=dict(type="str", choices=list(_journal.PHASES)),
        status=dict(type="str", choices=["in_progress", "migrated", "rolled_back", "needs_decision"]),
        targets=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                host=dict(type="str", required=True),
                address=dict(type="str", required=True),
                port=dict(type="int", default=22),
                user=dict(type="str", default="root"),
                key=dict(type="path", no_log=False),
                known_hosts=dict(type="path"),
                key_comment=dict(type="str"),
            ),
        ),
    )
    module = FerryModule(
        argument_spec=argument_spec,
        needs_docker=False,  # the journal steps never talk to the engine; what does imports the SDK then
        supports_check_mode=True,
        required_if=[
            ("state", state, ["run_id"]) for state in ("armed", "renewed", "disarmed", "rolled_back", "finished")
        ],
    )
    params = module.params
    if connection_kwargs(params).get("tls"):
        module.fail("the guard talks to the engine on its own host; use its local socket, without TLS options")
    if params["timeout"] < 5:
        module.fail(f"timeout={params['timeout']} is too short for a guard; give at least 5 seconds")
    if params["state"] == "status" and not params["run_id"]:
        try:
            found = _journal.unfinished(params["journal_dir"], _journal.guard_alive)
        except OSError as exc:
            module.fail(f"cannot read the journals in {params['journal_dir']}: {exc}")
        module.exit(changed=False, runs=found, journal={}, path=params["journal_dir"], guard_alive=False)
    extra = {}
    try:
        journal = _journal.Journal(params["journal_dir"], params["run_id"])
        if params["state"] == "armed":
            doc, changed = arm(module, journal)
        elif params["state"] == "renewed":
            doc, changed = renew(module, journal)
        elif params["state"] == "disarmed":
            doc, changed = disarm(module, journal)
            if params["remove_run_key"] and doc is not None and not module.check_mode:
                keys = _journal.remove_run_keys(doc, _journal.TargetOps(doc.get("targets", [])), whole_dir=True)
                extra.update(keys=keys, keys_removed=all(key["removed"] for key in keys))
        elif params["state"] == "rolled_back":
            doc, changed = roll_back(module, journal)
        elif params["state"] == "finished":
            doc, changed = finish(module, journal)
        else:
            doc, changed = journal.load(), False
    except (_journal.JournalError, OSError) as exc:
        module.fail(f"journal of run {params['run_id']} in {params['journal_dir']}: {exc}")
    module.exit(
        changed=changed,
        journal=doc or {},
        path=journal.path,
        guard_alive=_journal.guard_alive(doc),
        **extra,
    )


if __name__ == "__main__":
    main()
