# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The migration journal and the guard's decisions, without an engine or ssh (fakes record the calls)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _journal as j

TARGET = {"host": "host2", "address": "192.0.2.12", "port": 22, "user": "root", "key": "/k", "key_comment": "run-1"}


def journal_with(tmp_path, phase="stop", state_before="running", status="in_progress", lease_age=None, timeout=30):
    journal = j.Journal(str(tmp_path), "run-1")

    def change(doc):
        j.record(doc, "web", phase=phase, status=status, state_before=state_before, target="host2", target_name="web")
        doc["targets"] = [TARGET]
        doc["guard"].update(status="armed", timeout=timeout)

    journal.update(change)
    if lease_age is not None:
        journal.renew()
        stamp = os.stat(journal.lease_path).st_mtime - lease_age
        os.utime(journal.lease_path, (stamp, stamp))
    return journal


class FakeTargets:
    def __init__(self, stop_ok=True):
        self.calls = []
        self.stop_ok = stop_ok

    def stop(self, host, name, volumes=()):
        self.calls.append(("stop", host, name))
        return self.stop_ok, "" if self.stop_ok else "ssh: connect to host 192.0.2.12 port 22: Connection timed out"

    def remove_key(self, host, comment):
        self.calls.append(("remove_key", host, comment))
        return True, ""

    def busy(self, host, run_id):
        self.calls.append(("busy", host, run_id))
        return bool(self.working and self.working.pop())

    working = ()


class FakeSource:
    def __init__(self):
        self.calls = []
        self.announced = {}

    def restore(self, name, state_before):
        self.calls.append((name, state_before))
        return state_before


@pytest.mark.parametrize("run_id", ["", "../x", "a/b", "-x", "x" * 129, "a b", None])
def test_run_ids_that_could_leave_the_directory_are_refused(run_id):
    with pytest.raises(j.JournalError, match="run id"):
        j.Journal("/tmp", run_id)


def test_record_keeps_a_bounded_history():
    doc = j.new_document("run-1", "source", now=1.0)
    for second in range(60):
        j.record(doc, "web", now=float(second), phase="capture")
    entry = doc["containers"]["web"]
    assert entry["phase"] == "capture" and len(entry["history"]) == 50 and entry["history"][-1]["at"] == 59.0
    with pytest.raises(j.JournalError, match="unknown phase"):
        j.record(doc, "web", phase="teleport")


def test_update_writes_atomically_and_reads_back(tmp_path):
    journal = journal_with(tmp_path)
    assert journal.load()["containers"]["web"]["state_before"] == "running"
    assert oct(os.stat(journal.path).st_mode & 0o777) == "0o600"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".journal-")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
        (json.dumps({"version": 9}).encode(), "version 1"),
        (json.dumps({**j.new_document("run-1", "source"), "containers": {"w": {"phase": "x"}}}).encode(), "phase"),
    ],
)
def test_damaged_journals_are_refused_with_their_path(tmp_path, content, message):
    path = tmp_path / "run-1.json"
    path.write_bytes(content)
    with pytest.raises(j.JournalError, match=message):
        j.read_document(str(path))


def test_a_journal_that_is_a_symlink_or_huge_is_refused(tmp_path):
    (tmp_path / "run-1.json").symlink_to("/dev/zero")
    with pytest.raises(j.JournalError, match="symbolic link"):
        j.read_document(str(tmp_path / "run-1.json"))
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (j.MAX_JOURNAL_BYTES + 1))
    with pytest.raises(j.JournalError, match="at most"):
        j.read_document(str(big))


def test_lease_age(tmp_path):
    journal = j.Journal(str(tmp_path), "run-1")
    assert journal.lease_age() is None
    journal.renew(now=1000.0)
    assert journal.lease_age(now=1042.5) == pytest.approx(42.5)
    journal.drop_lease()
    assert journal.lease_age() is None


@pytest.mark.parametrize(
    ("status", "age", "expected"),
    [
        ("armed", 5, "wait"),
        ("armed", 31, "fire"),
        ("armed", None, "fire"),
        ("disarmed", 99, "exit"),
        ("fired", 99, "exit"),
    ],
)
def test_decide(status, age, expected):
    doc = j.new_document("run-1", "source")
    doc["guard"].update(status=status, timeout=30)
    assert j.decide(doc, age) == expected
    assert j.decide(None, age) == "exit"


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("stop", [("restore_source", "running")]),
        ("transfer", [("restore_source", "running")]),
        ("restore", [("stop_target", "host2", "web", ()), ("restore_source", "running")]),
        ("health", [("stop_target", "host2", "web", ()), ("restore_source", "running")]),
        ("cutover", [("stop_target", "host2", "web", ()), ("restore_source", "running")]),
    ],
)
def test_fire_plan_stops_the_target_copy_first_once_it_may_run(tmp_path, phase, expected):
    doc = journal_with(tmp_path, phase=phase).load()
    assert j.fire_plan(doc) == [("web", expected)]


def test_fire_plan_holds_when_it_cannot_know_the_target_copy(tmp_path):
    journal = journal_with(tmp_path, phase="health")
    doc = journal.load()
    doc["targets"] = []
    ((name, steps),) = j.fire_plan(doc)
    assert name == "web" and steps[0][0] == "hold"


def test_fire_plan_skips_finished_containers(tmp_path):
    assert j.fire_plan(journal_with(tmp_path, status="migrated").load()) == []


def test_fire_restores_the_source_records_it_and_removes_the_key(tmp_path):
    journal = journal_with(tmp_path, phase="capture", state_before="paused", lease_age=40)
    source, targets = FakeSource(), FakeTargets()
    doc = j.fire(journal, source, targets)
    assert source.calls == [("web", "paused")]
    assert targets.calls == [("remove_key", "host2", "run-1")]
    assert doc["guard"]["status"] == "fired"
    assert doc["containers"]["web"]["status"] == "rolled_back"
    assert journal.load() == doc


def test_fire_records_the_bridges_a_restarted_source_was_announced_on(tmp_path):
    journal = journal_with(tmp_path, phase="capture", state_before="running", lease_age=40)
    source = FakeSource()
    source.announced = {"web": ["docker0"]}
    doc = j.fire(journal, source, FakeTargets())
    assert doc["containers"]["web"]["guard"].startswith("source is running (was running before the run); ")
    assert "asked for its addresses on docker0" in doc["containers"]["web"]["guard"]
    source.announced = {"web": "sending ARP requests needs root"}  # a reason: nothing to say in the journal
    journal = journal_with(tmp_path / "again", phase="capture", state_before="running", lease_age=40)
    assert j.fire(journal, source, FakeTargets())["containers"]["web"]["guard"].endswith("before the run)")


def test_fire_never_restarts_the_source_when_the_target_copy_cannot_be_stopped(tmp_path):
    journal = journal_with(tmp_path, phase="health", lease_age=40)
    source, targets = FakeSource(), FakeTargets(stop_ok=False)
    doc = j.fire(journal, source, targets)
    assert source.calls == []
    entry = doc["containers"]["web"]
    assert entry["status"] == "needs_decision" and "Connection timed out" in entry["guard"]


def test_fire_does_nothing_when_the_lease_was_renewed_meanwhile(tmp_path):
    journal = journal_with(tmp_path, lease_age=1)
    source, targets = FakeSource(), FakeTargets()
    assert j.fire(journal, source, targets)["guard"]["status"] == "armed"
    assert source.calls == [] and targets.calls == []


def test_watch_waits_while_renewed_then_fires(tmp_path):
    journal = journal_with(tmp_path, lease_age=0, timeout=30)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:  # the run stops renewing: the lease is now old
            stamp = os.stat(journal.lease_path).st_mtime - 60
            os.utime(journal.lease_path, (stamp, stamp))

    source = FakeSource()
    assert j.watch(journal, source, FakeTargets(), sleep=sleep, busy=lambda run: False) == "fired"
    assert len(sleeps) == 3 and source.calls == [("web", "running")]


def test_watch_exits_when_disarmed(tmp_path):
    journal = journal_with(tmp_path, lease_age=0)
    journal.update(lambda doc: doc["guard"].update(status="disarmed"))
    assert j.watch(journal, FakeSource(), FakeTargets(), sleep=lambda s: None, busy=lambda run: False) == "exit"


def test_watch_does_not_fire_while_a_step_of_the_run_works(tmp_path):
    """A long capture renews nothing itself: while one of its processes runs, the lease counts as renewed."""
    journal = journal_with(tmp_path, lease_age=600, timeout=30)
    working = [True, True, True]
    source = FakeSource()

    def busy(run):
        assert run == "run-1"
        return bool(working and working.pop())

    def sleep(seconds):
        if not working:  # the step ended and nothing renewed since: the lease ages past the timeout
            stamp = os.stat(journal.lease_path).st_mtime - 60
            os.utime(journal.lease_path, (stamp, stamp))

    assert j.watch(journal, source, FakeTargets(), sleep=sleep, busy=busy) == "fired"
    assert source.calls == [("web", "running")]


def test_watch_waits_while_the_target_restores_then_fires(tmp_path):
    """In the restore phase the run's step works on the target: the guard asks it before acting."""
    journal = journal_with(tmp_path, phase="restore", lease_age=600, timeout=30)
    targets = FakeTargets()
    targets.working = [True, True]
    source = FakeSource()
    ticks = iter(range(10_000))
    assert (
        j.watch(journal, source, targets, sleep=age_lease(journal), busy=lambda run: False, clock=lambda: next(ticks))
        == "fired"
    )
    assert targets.calls[:3] == [("busy", "host2", "run-1")] * 3
    assert ("stop", "host2", "web") in targets.calls and source.calls == [("web", "running")]


def test_target_busy_asks_only_reachable_targets_of_target_phases(tmp_path):
    targets = FakeTargets()
    targets.working = [True]
    doc = journal_with(tmp_path, phase="capture").load()
    assert not j.target_busy(doc, targets) and targets.calls == []
    doc["containers"]["web"]["phase"] = "health"
    doc["targets"][0].pop("key")
    assert not j.target_busy(doc, targets) and targets.calls == []
    doc["targets"][0]["key"] = "/k"
    assert j.target_busy(doc, targets)


def age_lease(journal):
    def sleep(seconds):
        stamp = os.stat(journal.lease_path).st_mtime - 60
        os.utime(journal.lease_path, (stamp, stamp))

    return sleep


def fake_proc(tmp_path, environments):
    proc = tmp_path / "proc"
    for pid, environ in environments.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "environ").write_bytes(b"\0".join(environ) + b"\0")
    (proc / "self").mkdir()
    return str(proc)


def test_run_busy_finds_a_process_carrying_the_run_but_not_itself(tmp_path):
    marker = f"{j.RUN_ENVIRONMENT}=run-1".encode()
    proc = fake_proc(tmp_path, {10: [b"PATH=/bin"], 11: [b"HOME=/root", marker], 12: [marker + b"0"]})
    assert j.run_busy("run-1", proc=proc, own_pid=1) == "11"
    assert not j.run_busy("run-1", proc=proc, own_pid=11)
    assert not j.run_busy("run-2", proc=proc, own_pid=1)
    assert not j.run_busy("run-1", proc=str(tmp_path / "absent"), own_pid=1)


def test_command_line_names_the_process_for_the_guard_log(tmp_path):
    proc = fake_proc(tmp_path, {11: [b"HOME=/root"]})
    (Path(proc) / "11" / "cmdline").write_bytes(b"/usr/bin/python3\0AnsiballZ_docker_migrate_source.py\0")
    assert j.command_line("11", proc=proc) == "pid 11 (/usr/bin/python3 AnsiballZ_docker_migrate_source.py)"
    assert j.command_line("12", proc=proc) == "pid 12"


def test_watch_logs_each_change_of_reason_once(tmp_path):
    """The guard's log says why it waited and when it acted: one line per change, not one per poll."""
    journal = journal_with(tmp_path, phase="restore", lease_age=0, timeout=30)
    lines, polls = [], []
    here = ["1234", "1234", None, None]  # a step works on the source for two polls, then none
    targets = FakeTargets()
    targets.working = [False, True]  # popped from the end: busy at the first look, then idle

    def sleep(seconds):
        polls.append(seconds)
        if len(polls) >= 3:  # nothing renews any more: the lease ages past the timeout
            stamp = time.time() - 60
            os.utime(journal.lease_path, (stamp, stamp))

    ticks = iter(range(0, 10_000, 5))
    outcome = j.watch(
        journal,
        FakeSource(),
        targets,
        sleep=sleep,
        busy=lambda run: here.pop(0) if here else None,
        clock=lambda: next(ticks),
        log=lines.append,
    )
    assert outcome == "fired"
    assert lines == [
        "waits: a step of the run works on this host: pid 1234",
        "waits: the lease is fresh",
        "waits: a step of the run works on host2",
        "waits: the lease is closing and the targets look idle",
        lines[-1],
    ]
    assert lines[-1].startswith("fires: the lease is ") and lines[-1].endswith(" s old")


def test_watch_logs_a_failed_poll_and_goes_on(tmp_path):
    """A poll that raises (here the look at this host's processes) is logged once and tried again: the guard
    still puts the source back."""
    journal = journal_with(tmp_path, lease_age=600, timeout=30)
    lines, failures = [], [OSError(24, "Too many open files"), OSError(24, "Too many open files")]

    def busy(run):
        if failures:
            raise failures.pop()
        return None

    source = FakeSource()
    outcome = j.watch(journal, source, FakeTargets(), sleep=lambda s: None, busy=busy, log=lines.append)
    assert outcome == "fired" and source.calls == [("web", "running")]
    assert lines[0] == "a poll failed, tries again: OSError: [Errno 24] Too many open files"
    assert lines[1].startswith("fires: the lease is ")


def test_fire_removes_the_run_key_pair_and_its_directory_on_the_source(tmp_path):
    keys = tmp_path / "keys" / "run-1"
    keys.mkdir(parents=True)
    for name in ("id_ed25519", "id_ed25519.pub", "known_hosts"):
        (keys / name).write_text(name)
    journal = journal_with(tmp_path, phase="capture", lease_age=40)
    journal.update(lambda doc: doc["targets"][0].update(key=str(keys / "id_ed25519")))
    doc = j.fire(journal, FakeSource(), FakeTargets())
    # nothing of the run's key is left here: a lost controller never disarms, which would remove it otherwise
    assert not keys.exists() and (tmp_path / "keys").is_dir()
    assert all(entry["removed"] for entry in doc["guard"]["keys"]), doc["guard"]["keys"]


def test_unfinished_lists_open_runs_with_what_recover_needs(tmp_path):
    journal_with(tmp_path, phase="restore", state_before="paused")
    done = j.Journal(str(tmp_path), "run-2")
    done.update(lambda doc: j.record(doc, "db", phase="done", status="migrated", state_before="running"))
    (tmp_path / "broken.json").write_text("{")
    found = j.unfinished(str(tmp_path), alive=lambda doc: False)
    assert {item["run_id"] for item in found} == {"broken", "run-1"}  # run-2 is finished
    run = next(item for item in found if item["run_id"] == "run-1")
    assert run["open"] == ["web"] and run["guard"] == "armed" and run["guard_alive"] is False
    assert run["containers"]["web"]["state_before"] == "paused" and run["containers"]["web"]["phase"] == "restore"
    assert run["targets"] == ["host2"]
    assert run["keys"] == [{"host": "host2", "user": TARGET.get("user") or "root", "comment": TARGET["key_comment"]}]
    broken = next(item for item in found if item["run_id"] == "broken")
    assert "not valid JSON" in broken["error"]


def test_holders_only_counts_live_guards_of_other_runs(tmp_path):
    journal_with(tmp_path)
    other = j.Journal(str(tmp_path), "run-2")
    other.update(lambda doc: doc["guard"].update(status="armed"))
    assert j.holders(str(tmp_path), ["web"], "run-2", alive=lambda doc: True) == [("run-1", "web")]
    assert j.holders(str(tmp_path), ["web"], "run-2", alive=lambda doc: False) == []
    assert j.holders(str(tmp_path), ["web"], "run-1", alive=lambda doc: True) == []
    assert j.holders(str(tmp_path), ["db"], "run-2", alive=lambda doc: True) == []


def test_runs_lists_damaged_journals_with_their_error(tmp_path):
    journal_with(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    found = j.runs(str(tmp_path))
    assert [doc["run_id"] for doc in found] == ["broken", "run-1"] or [d["run_id"] for d in found] == [
        "run-1",
        "broken",
    ]
    assert any("error" in doc for doc in found)


def test_guard_alive_checks_the_command_line(tmp_path):
    doc = j.new_document("run-1", "source")
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    (proc / "4242" / "cmdline").write_bytes(b"python3\0/x/run-1.guard.py\0guard\0/dir\0run-1\0")
    doc["guard"]["pid"] = 4242
    assert j.guard_alive(doc, proc=str(proc))
    doc["run_id"] = "run-2"
    assert not j.guard_alive(doc, proc=str(proc))
    doc["guard"]["pid"] = 99999999
    assert not j.guard_alive(doc, proc=str(proc))


def test_a_guard_blocked_on_the_wake_signal_is_woken_by_it_and_not_killed(tmp_path):
    # The guard runs as a copy of _journal.py (guard_script); so does this child, which blocks the
    # signal, says it is ready and waits. A disarm's wake_guard must wake it, not terminate it.
    script = tmp_path / "run-9.guard.py"
    script.write_text(open(j.__file__.replace(".pyc", ".py")).read())
    child = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('guard', sys.argv[1])\n"
        "guard = importlib.util.module_from_spec(spec); spec.loader.exec_module(guard)\n"
        "guard.block_wake_signal()\n"
        "print('ready', flush=True)\n"
        "print('woken', guard.wakeable_sleep(60), guard.wakeable_sleep(0.01), flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(script), "guard", str(tmp_path), "run-9"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        doc = j.new_document("run-9", "source")
        doc["guard"]["pid"] = proc.pid
        assert j.wake_guard(doc)
        out, _err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    # woken by the signal (True), and the signal was taken: the next sleep runs its full time (False)
    assert out.strip() == "woken True False"
    assert proc.returncode == 0


def test_wake_guard_signals_only_this_runs_guard():
    doc = j.new_document("run-1", "source")
    doc["guard"]["pid"] = os.getpid()  # alive, but its command line is not run-1's guard
    assert not j.wake_guard(doc)
    doc["guard"]["pid"] = None
    assert not j.wake_guard(doc)


def test_ssh_argv_has_timeouts_and_checks_the_host_key():
    argv = j.ssh_argv({**TARGET, "known_hosts": "/kh"}, "docker stop web")
    text = " ".join(argv)
    for option in ("BatchMode=yes", "ConnectTimeout=", "ServerAliveInterval=", "StrictHostKeyChecking=yes"):
        assert option in text
    assert argv[-2:] == ["192.0.2.12", "docker stop web"]


@given(st.text(min_size=1, max_size=40))
def test_target_commands_quote_names(name):
    seen = []
    ops = j.TargetOps([TARGET], run=lambda argv: seen.append(argv[-1]) or (0, "", ""))
    ops.stop("host2", name, [name])
    ops.remove_key("host2", name)
    for script in seen:
        assert shlex.quote(name) in script


def test_target_commands_run_as_root_through_sudo_for_another_login_user():
    """The run key logs in as the target's login user; what needs root goes through sudo -n, the key edit does not."""
    seen = []
    ops = j.TargetOps([{**TARGET, "user": "ferry"}], run=lambda argv: seen.append(argv) or (0, "", ""))
    ops.stop("host2", "web", ["web-data"])
    ops.drop_volumes("host2", ["web-data"])
    ops.drop_images("host2", ["sha256:" + "a" * 64])
    ops.drop_paths("host2", ["/srv/web/."])
    ops.busy("host2", "run-1")
    ops.remove_key("host2", "run-1")
    assert all(argv[argv.index("-l") + 1] == "ferry" for argv in seen)
    *privileged, key_edit = [argv[-1] for argv in seen]
    for command in privileged:
        words = shlex.split(command)
        assert words[:4] == ["sudo", "-n", "sh", "-c"] and len(words) == 5, command
    assert "docker stop" in shlex.split(privileged[0])[4]
    assert not key_edit.startswith("sudo")


def test_target_commands_for_root_are_run_as_they_are():
    seen = []
    ops = j.TargetOps([TARGET], run=lambda argv: seen.append(argv[-1]) or (0, "", ""))
    ops.stop("host2", "web")
    ops.busy("host2", "run-1")
    assert seen[0].startswith("docker stop") and not any(command.startswith("sudo") for command in seen)
    assert j.as_root({"user": ""}, "true") == "true"  # no user recorded: root, as ssh_argv logs in


def test_a_migrated_container_lost_before_its_cutover_gets_its_source_stopped(tmp_path):
    journal = journal_with(tmp_path, phase="cutover", status="migrated", lease_age=40)
    journal.update(lambda doc: doc["containers"]["web"].update(cutover="stop"))

    class Source(FakeSource):
        def cut_over(self, name, mode):
            self.calls.append(("cut_over", name, mode))
            return "exited"

    source = Source()
    doc = j.fire(journal, source, FakeTargets())
    assert source.calls == [("cut_over", "web", "stop")]
    assert doc["containers"]["web"]["status"] == "migrated" and doc["containers"]["web"]["phase"] == "done"


def test_fire_plan_leaves_kept_and_finished_migrations_alone(tmp_path):
    doc = journal_with(tmp_path, phase="cutover", status="migrated").load()
    doc["containers"]["web"]["cutover"] = "keep"
    assert j.fire_plan(doc) == []
    doc["containers"]["web"].update(cutover="stop", phase="done")
    assert j.fire_plan(doc) == []


def test_a_target_between_two_module_runs_is_not_taken_for_idle(tmp_path):
    """One idle look at the target (a gap between two steps' modules) does not fire the guard."""
    journal = journal_with(tmp_path, phase="restore", lease_age=600, timeout=30)
    targets = FakeTargets()
    pattern = [True, False, True, False, False]  # busy, a gap, busy again, then idle for good
    targets.busy = lambda host, run: pattern.pop(0) if pattern else False
    now = [0.0]

    def sleep(seconds):
        now[0] += 1.0
        age_lease(journal)(seconds)

    source = FakeSource()
    assert j.watch(journal, source, targets, sleep=sleep, busy=lambda run: False, clock=lambda: now[0]) == "fired"
    assert (
        now[0] >= j.TARGET_IDLE_SECONDS + 2
    )  # the gap reset nothing it should not: idle counted from the last busy look


def test_the_target_idle_window_runs_before_the_lease_lapses(tmp_path):
    """A target that stays idle: the guard fires as soon as the lease lapses, not TARGET_IDLE_SECONDS later;
    and it asks the target only in the last TARGET_IDLE_SECONDS of the lease."""
    journal = journal_with(tmp_path, phase="restore", lease_age=0, timeout=30)
    targets = FakeTargets()
    now = [0.0]
    asked_at = []
    targets.busy = lambda host, run: asked_at.append(now[0]) and False

    def sleep(seconds):  # one second passes, for the clock and for the lease
        now[0] += 1.0
        stamp = os.stat(journal.lease_path).st_mtime - 1
        os.utime(journal.lease_path, (stamp, stamp))

    source = FakeSource()
    assert j.watch(journal, source, targets, sleep=sleep, busy=lambda run: False, clock=lambda: now[0]) == "fired"
    assert 30 <= now[0] <= 32 and source.calls == [("web", "running")]
    assert asked_at and min(asked_at) >= 30 - j.TARGET_IDLE_SECONDS - 1


def test_target_watched_only_for_reachable_targets_in_target_phases(tmp_path):
    doc = journal_with(tmp_path, phase="capture").load()
    assert not j.target_watched(doc)
    doc["containers"]["web"]["phase"] = "restore"
    assert j.target_watched(doc)
    doc["targets"][0].pop("key")
    assert not j.target_watched(doc)


class _Gone(j.docker_exception()):
    response = type("Response", (), {"status_code": 404})()


class _GoneClient:
    def inspect_container(self, name):
        raise _Gone(f"No such container: {name}")


class _BrokenClient:
    def inspect_container(self, name):
        raise j.docker_exception()("500 Server Error: the engine is restarting")


def test_a_source_removed_since_the_run_has_nothing_to_put_back_and_closes():
    assert j.SourceOps("unix:///nowhere", client=_GoneClient()).restore("web", "running") == "absent"
    with pytest.raises(j.docker_exception(), match="restarting"):
        j.SourceOps("unix:///nowhere", client=_BrokenClient()).restore("web", "running")


class FailingKeyTargets(FakeTargets):
    def remove_key(self, host, comment):
        self.calls.append(("remove_key", host, comment))
        return False, "ssh: connect to host 192.0.2.12 port 22: Connection refused"


def test_removing_the_run_keys_at_disarm_takes_the_whole_key_directory_and_says_what_is_left(tmp_path):
    keys = tmp_path / "keys" / "run-1"
    keys.mkdir(parents=True)
    for name in ("id_ed25519", "id_ed25519.pub", "known_hosts", "rsync.progress"):
        (keys / name).write_text(name)
    doc = {"targets": [{"host": "host2", "key": str(keys / "id_ed25519"), "key_comment": "run-1"}]}
    targets = FakeTargets()
    assert j.remove_run_keys(doc, targets, whole_dir=True) == [{"host": "host2", "removed": True, "error": ""}]
    assert targets.calls == [("remove_key", "host2", "run-1")] and not keys.exists()
    # again: nothing left to remove is not an error; a target that cannot be reached is named
    left = j.remove_run_keys(doc, FailingKeyTargets(), whole_dir=True)
    assert left == [
        {"host": "host2", "removed": False, "error": "ssh: connect to host 192.0.2.12 port 22: Connection refused"}
    ]


def test_removing_the_key_directory_never_touches_a_file_it_does_not_know(tmp_path):
    keys = tmp_path / "run-1"
    keys.mkdir()
    (keys / "id_ed25519").write_text("private")
    (keys / "notes.txt").write_text("an operator's file")
    doc = {"targets": [{"host": "host2", "key": str(keys / "id_ed25519"), "key_comment": "run-1"}]}
    (entry_host2, entry_here) = j.remove_run_keys(doc, FakeTargets(), whole_dir=True)
    assert entry_host2["removed"] and not (keys / "id_ed25519").exists()
    assert entry_here["host"] == "localhost" and not entry_here["removed"] and str(keys) in entry_here["error"]
    assert (keys / "notes.txt").read_text() == "an operator's file"


def _edit_keys(home, drop, add=""):
    argv = j.authorized_keys_argv(drop, add)
    return subprocess.Popen(argv, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, stderr=subprocess.PIPE, text=True)


def test_runs_that_edit_authorized_keys_at_once_keep_each_others_lines(tmp_path):
    # Two runs onto the same host at once (and a guard removing its key meanwhile) rewrite the same file; each
    # rewrite is a read, a filter and a rename, so without the lock on ~/.ssh one of them loses the other's line.
    (tmp_path / ".ssh").mkdir(mode=0o700)
    (tmp_path / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAAowner owner@laptop\n")
    for round_ in range(3):
        adds = [
            _edit_keys(tmp_path, f"KEY{round_}x{i:02d}", f"restrict ssh-ed25519 KEY{round_}x{i:02d} run-{i}")
            for i in range(24)
        ]
        assert all(proc.wait(timeout=60) == 0 for proc in adds), [proc.stderr.read() for proc in adds]
        drops = [_edit_keys(tmp_path, f"KEY{round_}x{i:02d}") for i in range(0, 24, 2)]
        assert all(proc.wait(timeout=60) == 0 for proc in drops)
        lines = (tmp_path / ".ssh" / "authorized_keys").read_text().splitlines()
        assert lines[0] == "ssh-ed25519 AAAAowner owner@laptop"
        assert sorted(line.split()[2] for line in lines[1:]) == sorted(f"KEY{round_}x{i:02d}" for i in range(1, 24, 2))
        assert oct((tmp_path / ".ssh" / "authorized_keys").stat().st_mode & 0o777) == "0o600"
        drops = [_edit_keys(tmp_path, f"KEY{round_}x{i:02d}") for i in range(1, 24, 2)]
        assert all(proc.wait(timeout=60) == 0 for proc in drops)
    assert (tmp_path / ".ssh" / "authorized_keys").read_text() == "ssh-ed25519 AAAAowner owner@laptop\n"
    assert sorted(p.name for p in (tmp_path / ".ssh").iterdir()) == ["authorized_keys"]  # no temporary file left


def test_a_removal_drops_whole_words_only(tmp_path):
    (tmp_path / ".ssh").mkdir(mode=0o700)
    keys = tmp_path / ".ssh" / "authorized_keys"
    keys.write_text(
        "ssh-ed25519 AAAA1 ferry.docker migrate R from host1\n"
        "ssh-ed25519 AAAA10 ferry.docker migrate R from host10\n"
        "ssh-ed25519 AAAA1x owner\n"
    )
    assert _edit_keys(tmp_path, " ferry.docker migrate R from host1").wait(timeout=30) == 0
    assert _edit_keys(tmp_path, "AAAA1").wait(timeout=30) == 0  # nothing left with that blob: a no-op
    assert keys.read_text() == "ssh-ed25519 AAAA10 ferry.docker migrate R from host10\nssh-ed25519 AAAA1x owner\n"
    assert _edit_keys(tmp_path, "AAAA1x").wait(timeout=30) == 0
    assert keys.read_text() == "ssh-ed25519 AAAA10 ferry.docker migrate R from host10\n"


def test_removing_a_key_where_there_is_no_authorized_keys_creates_nothing(tmp_path):
    assert _edit_keys(tmp_path, "KEY").wait(timeout=30) == 0
    assert not (tmp_path / ".ssh").exists()


def test_an_authorized_keys_edit_takes_single_lines_and_login_names_only():
    refused = (
        ("", "x", ""),
        ("KEY", "a\nb", ""),
        ("KEY\n", "", ""),
        ("KEY", "", "root; rm -rf /"),
        ("KEY", "", "-r"),
        ("KEY", "", "../x"),
    )
    for drop, add, user in refused:
        with pytest.raises(ValueError):
            j.authorized_keys_argv(drop, add, user)
    assert j.authorized_keys_argv("KEY", "", "CORP\\Ferry.Admin@example")[-1] == "CORP\\Ferry.Admin@example"
    argv = j.authorized_keys_argv("KEY", "", "ferry", then="id -un")
    assert argv[3:] == ["sh", "KEY", "", "ferry"] and argv[2].endswith(" && id -un")


class _StoppedClient:
    def __init__(self, running=False, paused=False):
        self.state = {"Running": running, "Paused": paused, "Status": "running" if running else "exited"}
        self.calls = []

    def inspect_container(self, name):
        return {"State": dict(self.state)}

    def start(self, name):
        self.calls.append(("start", name))
        self.state.update(Running=True, Status="running")

    def unpause(self, name):
        self.calls.append(("unpause", name))
        self.state.update(Paused=False)


def test_a_source_started_again_is_announced_once_and_one_only_unpaused_is_not():
    announced = []
    client = _StoppedClient()
    ops = j.SourceOps("unix:///nowhere", client=client, announce=lambda c, name: announced.append((c, name)) or ["br0"])
    assert ops.restore("web", "running") == "running"
    assert client.calls == [("start", "web")] and announced == [(client, "web")]
    assert ops.announced == {"web": ["br0"]}
    paused = _StoppedClient(running=True, paused=True)
    ops = j.SourceOps("unix:///nowhere", client=paused, announce=lambda c, name: announced.append((c, name)))
    assert ops.restore("web", "running") == "running"
    assert paused.calls == [("unpause", "web")] and len(announced) == 1  # its network endpoint never went away


def test_the_guard_loads_its_copy_of_neighbour_and_goes_on_without_a_usable_one(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils import _neighbour

    source = open(_neighbour.__file__.replace(".pyc", ".py")).read()
    assert "ansible_collections" not in source.split('"""', 2)[2]  # a standalone file: no import of the collection
    path = j.neighbour_path(str(tmp_path), "run-1")
    assert path == str(tmp_path / "run-1.neighbour.py")
    assert j.load_announce(path) is None  # not written (an older run)
    (tmp_path / "run-1.neighbour.py").write_text(source)
    announce = j.load_announce(path)
    client = type("C", (), {"base_url": "tcp://192.0.2.1:2376", "api_version": "1.41"})()
    assert announce(client, "web") == "the Docker engine is not reached over a local unix socket"
    (tmp_path / "run-1.neighbour.py").write_text("raise RuntimeError('damaged')\n")
    assert j.load_announce(path) is None
