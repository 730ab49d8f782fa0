# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_migrate_guard): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_migrate_source`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import time

from ansible_collections.ferry.docker.plugins.module_utils import _journal, _neighbour
from ansible_collections.ferry.docker.plugins.module_utils._client import connection_kwargs
from ansible_collections.ferry.docker.plugins.module_utils._report import ReportError, write_report

START_SECONDS = 10  # how long arming waits for the guard to record itself
STOP_SECONDS = 10  # how long disarming waits for it to exit


def guard_script(journal):
    """Write this collection's journal code beside the journal, for the guard process to run, and its copy of
    ``_neighbour`` (which imports nothing of the collection) for the sources it starts again."""
    path = os.path.join(journal.directory, f"{journal.run_id}.guard.py")
    _journal.write_atomically(
        _journal.neighbour_path(journal.directory, journal.run_id), inspect.getsource(_neighbour).encode()
    )
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
            for k in ("state_before", "target", "target_name", "target_volumes", "precopied", "cutover")
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
    # the targets' own host keys (read over Ansible's connection) for the run key's ssh: rsync and the guard
    if params["targets_known_hosts"]:
        for path in sorted({t["known_hosts"] for t in params["targets"] if t.get("known_hosts")}):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            _journal.write_atomically(path, params["targets_known_hosts"].encode())
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
        extra = {
            c["name"]: {k: c[k] for k in ("precopied", "precopied_paths", "streamed_images") if c.get(k) is not None}
            for c in params["containers"]
        }
        updates = {k: params[k] for k in ("phase", "status") if params[k]}
        for name in names:
            entry = doc["containers"].get(name)
            if entry is None:
                module.fail(f"run {journal.run_id} does not journal a container {name!r}")
            mine = dict(updates, **extra.get(name, {}))
            if mine and any(entry.get(k) != v for k, v in mine.items()):
                _journal.record(doc, name, **mine)
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
    source_ops = _journal.SourceOps(module.base_url, announce=_neighbour.announce)
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


SPEC = dict(
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
            precopied=dict(type="list", elements="str"),
            precopied_paths=dict(type="list", elements="str"),
            streamed_images=dict(type="list", elements="str"),
            cutover=dict(type="str", choices=["stop", "keep", "remove"]),
        ),
    ),
    targets_known_hosts=dict(type="str", default=""),
    report=dict(
        type="dict",
        options=dict(path=dict(type="path", required=True), content=dict(type="raw", required=True)),
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
KWARGS = dict(
    needs_docker=False,  # the journal steps never talk to the engine; what does imports the SDK then
    supports_check_mode=True,
    required_if=[("state", state, ["run_id"]) for state in ("armed", "renewed", "disarmed", "rolled_back", "finished")],
)


def run(module):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
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
            if params["report"] and not module.check_mode:
                # the host's report of the run, once the guard is gone: one module start less at the run's end
                try:
                    write_report(params["report"]["path"], params["report"]["content"])
                except ReportError as exc:
                    module.fail(f"the guard of run {journal.run_id} is disarmed, but {exc}")
                extra["report"] = params["report"]["path"]
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
