# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The group state machines of a migration, with a fake host that records every module call."""

from __future__ import annotations

import itertools
import threading

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _migration as m


class FakeHost:
    """Answers module calls from ``answers`` (module -> result, or a callable of the args)."""

    def __init__(self, **answers):
        self.calls = []
        self.answers = answers

    def __call__(self, module, args):
        self.calls.append((module, args))
        answer = self.answers.get(module.rsplit(".", 1)[-1], {})
        return dict(answer(args) if callable(answer) else answer)

    def modules(self):
        return [
            (module.rsplit(".", 1)[-1], args.get("name") or args.get("container") or args.get("bundle"))
            for module, args in self.calls
        ]


def clock():
    ticks = itertools.count(1000)
    return lambda: float(next(ticks))


def member(container, **extra):
    name = container
    base = dict(
        container=container,
        name=name,
        state_before="running",
        running=True,
        has_volumes=False,
        exclude_layers=[],
        image_ref=f"ferry-migrate/{name}:latest",
        bundle=f"/b/{name}",
        received=f"/r/{name}",
        image_id=f"sha256:{name}",
        entry={},
    )
    return dict(base, **extra)


SOURCE = dict(
    mode="commit",
    consistency="stop",
    cutover="stop",
    compression="zstd",
    stop_timeout=10,
    journal={"run_id": "r1", "journal_dir": "/j"},
)
TARGET = dict(
    mode="commit",
    create_bind_paths=True,
    allow_privileged=True,
    stop_timeout=10,
    health_timeout=30,
    health_stable_seconds=5,
    health_tcp_port=0,
    health_url="",
    keep_bundle=False,
)


def test_capture_stops_in_reverse_order_captures_in_order_and_journals():
    host = FakeHost(docker_commit_save={"image_id": "sha256:x", "size": 100}, docker_volume_backup={"bytes_written": 5})
    members = [member("db", has_volumes=True), member("web")]
    out = m.SourceRun(host, members, SOURCE, now=clock()).capture()
    assert [c for c in host.modules() if c[0] != "docker_migrate_guard"] == [
        ("docker_container", "web"),
        ("docker_container", "db"),
        ("docker_commit_save", "db"),
        ("docker_volume_backup", "db"),
        ("docker_commit_save", "web"),
    ]
    phases = [args["phase"] for module, args in host.calls if module.endswith("docker_migrate_guard")]
    assert phases == ["stop", "capture", "transfer"]
    assert out["members"]["db"] == {"bytes_captured": 105, "image_id": "sha256:x"}
    assert out["down_at"] > 0 and out["up_at"] == 0 and set(out["phases"]) == {"stop", "capture", "transfer"}


def test_pause_consistency_never_stops_and_counts_the_service_up_after_the_capture():
    host = FakeHost()
    out = m.SourceRun(host, [member("web")], dict(SOURCE, consistency="pause", journal=None), now=clock()).capture()
    assert ("docker_container", "web") not in host.modules()
    assert host.calls[0][1]["pause"] is True and out["up_at"] > out["down_at"] > 0


def test_cutover_keep_starts_the_sources_again():
    host = FakeHost()
    out = m.SourceRun(host, [member("web")], dict(SOURCE, cutover="keep"), now=clock()).capture()
    states = [args.get("state") for module, args in host.calls if module.endswith("docker_container")]
    assert states == ["stopped", "started"] and out["up_at"] > 0


def test_a_paused_capture_kept_serving_is_not_started_again_and_journals_no_stop_or_capture():
    # the engine's commit and the volume backup unpause the members themselves: nothing was stopped
    host = FakeHost()
    members = [member("db", has_volumes=True), member("web")]
    out = m.SourceRun(host, members, dict(SOURCE, consistency="pause", cutover="keep"), now=clock()).capture()
    assert [c for c in host.modules() if c[0] == "docker_container"] == []
    phases = [args["phase"] for module, args in host.calls if module.endswith("docker_migrate_guard")]
    assert phases == ["transfer"] and out["up_at"] > 0


def test_a_failed_capture_names_phase_and_member():
    host = FakeHost(docker_commit_save=lambda args: {"failed": args["container"] == "web", "msg": "disk full"})
    run = m.SourceRun(host, [member("db"), member("web")], SOURCE, now=clock())
    with pytest.raises(m.StepFailed) as caught:
        run.capture()
    assert (caught.value.phase, caught.value.member) == ("capture", "web") and "disk full" in str(caught.value)
    assert run.put_back() == {"db": "running", "web": "running"}
    started = [
        args for module, args in host.calls if module.endswith("docker_container") and args["state"] == "started"
    ]
    assert [a["name"] for a in started] == ["db", "web"]  # dependency order


def test_put_back_leaves_a_stopped_source_and_repauses_a_paused_one():
    host = FakeHost()
    states = m.SourceRun(
        host, [member("a", state_before="exited", running=False), member("b", state_before="paused")], SOURCE
    ).put_back()
    assert states == {"a": "exited", "b": "paused"}
    assert host.calls == [("community.docker.docker_container", {"name": "b", "state": "started", "paused": True})]


@pytest.mark.parametrize("cutover, state, after", [("stop", "stopped", "exited"), ("remove", "absent", "removed")])
def test_cut_over_in_reverse_order(cutover, state, after):
    host = FakeHost(docker_container={"changed": True})
    states, changed = m.SourceRun(host, [member("db"), member("web")], SOURCE).cut_over(cutover, 10)
    cuts = [args for module, args in host.calls if module.endswith("docker_container")]
    assert [args["name"] for args in cuts] == ["web", "db"]
    assert {args["state"] for args in cuts} == {state} and changed
    assert states == {"db": after, "web": after}
    assert host.calls[-1][1]["phase"] == "done"  # journaled once the sources are cut over


def test_cut_over_keep_touches_nothing():
    host = FakeHost()
    assert m.SourceRun(host, [member("web")], dict(SOURCE, journal=None)).cut_over("keep", 10) == (
        {"web": "running"},
        False,
    )
    assert host.calls == []


def restore_host(**answers):
    defaults = dict(
        docker_load={"changed": True, "operation": "load", "image_id": "sha256:loaded"},
        docker_volume_restore={"volumes": [{"name": "data", "action": "create"}, {"name": "old", "action": "none"}]},
        docker_container_restore={
            "operation": "create",
            "networks_created": ["net"],
            "volumes_created": [],
            "bind_paths_created": ["/srv/x"],
        },
    )
    return FakeHost(**dict(defaults, **answers))


def test_restore_records_what_it_creates_and_checks_running_members():
    host = restore_host()
    members = [member("db", has_volumes=True), member("job", running=False)]
    out = m.TargetRun(host, members, TARGET, now=clock()).restore()
    assert out["created"]["db"] == {
        "container": "db",
        "image": "ferry-migrate/db:latest",
        "image_id": "sha256:loaded",
        "networks": ["net"],
        "volumes": ["data"],
        "bind_paths": ["/srv/x"],
        "bind_data": [],
    }
    health = [args["name"] for module, args in host.calls if module.endswith("docker_container_health")]
    assert health == ["db"]
    removed = [args["path"] for module, args in host.calls if module.endswith(".file")]
    assert removed == ["/r"] and out["verified_at"] > 0  # the group's directory, with every member's bundle


def test_an_image_the_host_had_is_never_recorded_as_created():
    host = restore_host(docker_load={"changed": False, "operation": "none", "image_id": "sha256:db"})
    out = m.TargetRun(host, [member("db")], TARGET, now=clock()).restore()
    assert out["created"]["db"]["image_id"] == "" and out["created"]["db"]["image"] == ""


def test_a_failed_health_check_undoes_everything_newest_first():
    host = restore_host(
        docker_container_health=lambda args: {"failed": args["name"] == "web", "msg": "exit 1", "log_tail": ["FATAL"]}
    )
    run = m.TargetRun(host, [member("db"), member("web")], TARGET, now=clock())
    with pytest.raises(m.StepFailed) as caught:
        run.restore()
    assert (caught.value.phase, caught.value.member) == ("health", "web")
    assert caught.value.result["log_tail"] == ["FATAL"]
    host.calls.clear()
    assert run.undo() == []
    names = [(module.rsplit(".", 1)[-1], args.get("name") or args.get("path")) for module, args in host.calls]
    assert names[0] == ("docker_container", "web") and ("docker_container", "db") in names
    assert names.index(("docker_container", "web")) < names.index(("docker_container", "db"))
    assert ("docker_image", "sha256:loaded") in names
    # the received directory last, with the handoff and cancel files an early restore may have left beside it
    files = ("/r", "/r.handoff", "/r.handoff.tmp", "/r.handoff.taken", "/r.handoff.claimed", "/r.handoff.withdrawn")
    assert names[-9:] == [("file", p) for p in (*files, "/r.cancel", "/r.ready", "/r.ready.tmp")]


def test_a_failed_container_create_still_records_its_networks():
    host = restore_host(docker_container_restore={"failed": True, "msg": "port taken", "networks_created": ["n1"]})
    run = m.TargetRun(host, [member("web")], TARGET, now=clock())
    with pytest.raises(m.StepFailed, match="port taken"):
        run.restore()
    assert run.created["web"]["networks"] == ["n1"] and run.created["web"]["container"] == ""


def test_undo_reports_what_it_could_not_remove():
    host = FakeHost(docker_volume={"failed": True, "msg": "in use"})
    created = {"web": dict(m.empty_created(), volumes=["data"])}
    assert m.TargetRun(host, [member("web")], TARGET).undo(created) == ["data (in use)"]


def test_phases_add_up_and_close():
    phases = m.Phases(clock())
    phases.enter("a")
    phases.enter("b")
    phases.enter("a")
    assert phases.close() == {"a": 2.0, "b": 1.0}


def test_pre_migrate_hooks_run_in_running_members_before_anything_stops():
    host = FakeHost(
        docker_container_exec_hook=lambda args: {"summary": {"status": "ok" if "command" in args else "none"}}
    )
    options = dict(
        SOURCE,
        hooks={
            "from_labels": True,
            "timeout": 60,
            "on_error": "fail",
            "lists": {"db": [{"command": "redis-cli BGSAVE", "timeout": 30, "on_error": "fail"}]},
        },
    )
    members = [member("db"), member("job", running=False, state_before="exited")]
    out = m.SourceRun(host, members, options, now=clock()).capture()
    calls = [(module.rsplit(".", 1)[-1], args) for module, args in host.calls]
    hooks = [args for module, args in calls if module == "docker_container_exec_hook"]
    assert hooks == [
        {"container": "db", "from_label": "ferry.docker.pre-migrate", "exec_timeout": 60, "on_error": "fail"},
        {"container": "db", "command": "redis-cli BGSAVE", "exec_timeout": 30, "on_error": "fail"},
    ]
    first_stop = next(i for i, (module, args) in enumerate(calls) if module == "docker_container")
    assert all(i < first_stop for i, (module, _a) in enumerate(calls) if module == "docker_container_exec_hook")
    assert out["hooks"] == [{"status": "ok", "container": "db", "phase": "pre"}]


def test_a_failing_pre_migrate_hook_fails_the_group_before_it_stops():
    host = FakeHost(docker_container_exec_hook={"failed": True, "msg": "BGSAVE failed"})
    run = m.SourceRun(host, [member("db")], dict(SOURCE, hooks={"from_labels": True}), now=clock())
    with pytest.raises(m.StepFailed) as caught:
        run.capture()
    assert caught.value.phase == "hooks" and "BGSAVE failed" in str(caught.value)
    assert not any(module.endswith("docker_container") for module, _a in host.calls)


def test_capture_groups_isolates_a_failing_group():
    host = FakeHost(docker_commit_save=lambda args: {"failed": args["container"] == "b", "msg": "no space"})
    groups = [
        {"id": "a", "members": [member("a")]},
        {"id": "b", "members": [member("b")]},
        {"id": "c", "members": [member("c")]},
    ]
    out = m.capture_groups(host, groups, SOURCE, now=clock())
    assert out["a"]["ok"] and out["c"]["ok"]
    assert not out["b"]["ok"] and out["b"]["phase"] == "capture" and "no space" in out["b"]["msg"]
    assert out["b"]["source_states"] == {"b": "running"}
    started = [
        args["name"]
        for module, args in host.calls
        if module.endswith("docker_container") and args["state"] == "started"
    ]
    assert started == ["b"]  # only the failed group is put back


def test_restore_groups_watches_every_running_member_at_once_and_undoes_only_the_failed_group():
    def health(args):
        containers = {
            name: {
                "up": name != "B",
                "status": "running" if name != "B" else "exited",
                "reason": "" if name != "B" else "B exited",
                "log_tail": [] if name != "B" else ["x"],
            }
            for name in args["names"]
        }
        return {"failed": "B" in args["names"], "msg": "B: B exited", "containers": containers}

    host = restore_host(docker_container_health=health)
    groups = [
        {"id": "a", "members": [member("a", name="A")]},
        {"id": "b", "members": [member("b", name="B")]},
        {"id": "c", "members": [member("c", name="C", running=False)]},
    ]
    out = m.restore_groups(host, groups, TARGET, now=clock())
    watched = [args for module, args in host.calls if module.endswith("docker_container_health")]
    assert watched == [{"names": ["A", "B"], "timeout": 30, "stable_seconds": 5, "interval": m.HEALTH_POLL_SECONDS}]
    assert out["a"]["ok"] and out["c"]["ok"] and out["a"]["verified_at"] > 0
    assert not out["b"]["ok"] and out["b"]["phase"] == "health" and out["b"]["log_tail"] == ["x"]
    # the message carries the log's last lines too, as a single container's health check does
    assert out["b"]["msg"] == "health of B: B exited. Last 1 line(s) of its log:\nx"
    assert out["b"]["target_cleanup"] == "done"
    removed = [args["name"] for module, args in host.calls if module.endswith("docker_container")]
    assert removed == ["B"]


def test_restore_groups_with_a_failed_restore_never_watches_that_group():
    host = restore_host(
        docker_container_health=lambda args: {"containers": {name: {"up": True} for name in args["names"]}},
        docker_container_restore=lambda args: (
            {"failed": args["name"] == "A", "msg": "port taken"} if args["name"] == "A" else {"operation": "create"}
        ),
    )
    groups = [{"id": "a", "members": [member("a", name="A")]}, {"id": "b", "members": [member("b", name="B")]}]
    out = m.restore_groups(host, groups, TARGET, now=clock())
    assert not out["a"]["ok"] and "port taken" in out["a"]["msg"] and out["b"]["ok"]
    watched = [args["names"] for module, args in host.calls if module.endswith("docker_container_health")]
    assert watched == [["B"]]


def test_quiet_caller_hides_the_steps_output_and_restores_no_log():
    seen = []

    class Context:
        no_log = False

    class Action:
        _connection = type("Connection", (), {"_play_context": Context()})()

        def _execute_module(self, module_name, module_args, task_vars, wrap_async=False):
            seen.append((module_name, module_args, task_vars, self._connection._play_context.no_log))
            return {"ok": True}

    action = Action()
    assert m.quiet_caller(action, {"v": 1})("ferry.docker.x", {"a": 1}) == {"ok": True}
    assert seen == [("ferry.docker.x", {"a": 1}, {"v": 1}, True)]
    assert action._connection._play_context.no_log is False


class FakeAction:
    """The parts of an ActionBase that quiet_caller uses; ``answers`` are returned in order."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []
        self._task = type("Task", (), {"async_val": 0})()
        self._connection = type("Connection", (), {})()
        self._connection._play_context = type("PlayContext", (), {"no_log": False})()

    def _execute_module(self, module_name, module_args, task_vars, wrap_async=False):
        self.calls.append((module_name, dict(module_args), wrap_async, self._task.async_val))
        assert self._connection._play_context.no_log is True
        return dict(self.answers.pop(0))


def test_quiet_caller_runs_a_step_plainly_without_progress():
    action = FakeAction({"changed": True, "size": 5})
    call = m.quiet_caller(action, {})
    assert call("ferry.docker.docker_export", {"container": "web"}) == {"changed": True, "size": 5}
    assert action.calls == [("ferry.docker.docker_export", {"container": "web"}, False, 0)]
    assert action._connection._play_context.no_log is False


def test_quiet_caller_runs_a_large_step_as_a_job_and_displays_its_progress():
    action = FakeAction(
        {"started": 1, "finished": 0, "results_file": "/root/.ansible_async/j1", "changed": True},
        {"finished": False, "msg": "1.0 GiB written so far"},
        {"finished": False, "msg": "2.0 GiB written so far"},
        {"finished": True, "changed": True, "size": 123, "msg": "done"},
    )
    shown = []
    ticks = itertools.count(0, 10)
    call = m.quiet_caller(action, {}, display=shown.append, now=lambda: float(next(ticks)))
    progress = {"path": "/b/web", "label": "backing up the volumes of web", "interval": 7, "timeout": 600}
    result = call("ferry.docker.docker_volume_backup", {"container": "web"}, progress=progress)
    assert result == {"finished": True, "changed": True, "size": 123, "msg": "done"}
    # started as an async job with the step's own limit, then polled: the task's async setting is left as it was
    assert action.calls[0] == ("ferry.docker.docker_volume_backup", {"container": "web"}, True, 600)
    polls = action.calls[1:]
    assert [c[0] for c in polls] == [m.PROGRESS_MODULE] * 3
    assert polls[0][1] == {"results_file": "/root/.ansible_async/j1", "path": "/b/web", "wait": 7}
    assert action._task.async_val == 0
    assert shown == [
        "backing up the volumes of web: started in the background; the bytes written are shown every 7 s",
        "backing up the volumes of web: 1.0 GiB written so far (10 s)",
        "backing up the volumes of web: 2.0 GiB written so far (20 s)",
    ]


def test_quiet_caller_returns_a_job_that_could_not_start_or_failed():
    action = FakeAction({"failed": True, "msg": "async_wrapper could not start"})
    call = m.quiet_caller(action, {})
    progress = {"path": "/b", "label": "exporting web", "interval": 10, "timeout": 60}
    assert call("x", {}, progress=progress)["msg"] == "async_wrapper could not start"
    action = FakeAction({"started": 1, "results_file": "/j"}, {"failed": True, "finished": True, "msg": "disk full"})
    assert m.quiet_caller(action, {})("x", {}, progress=progress)["msg"] == "disk full"


class ProgressHost(FakeHost):
    """A fake host that also records the progress a step was asked to report."""

    def __call__(self, module, args, progress=None):
        args = dict(args, _progress=progress)
        self.calls.append((module, args))
        answer = self.answers.get(module.rsplit(".", 1)[-1], {})
        return dict(answer(args) if callable(answer) else answer)


def test_only_captures_expected_to_be_large_report_progress():
    def saved(args):
        return {"size": 1, "progress": {"bytes": 9}} if args["_progress"] else {"size": 1}

    host = ProgressHost(docker_commit_save=saved, docker_volume_backup={"bytes_written": 2})
    members = [
        member("big", expected_bytes=300, has_volumes=True),
        member("small", expected_bytes=299, has_volumes=True),
    ]
    options = dict(SOURCE, progress={"bytes": 300, "interval": 5, "timeout": 60})
    out = m.SourceRun(host, members, options, now=clock()).capture()
    # the last progress report of a step that ran in the background stays in the member's result
    assert out["members"]["big"]["progress"] == [{"bytes": 9}] and "progress" not in out["members"]["small"]
    captures = {
        (module.rsplit(".", 1)[-1], args["container"]): args["_progress"]
        for module, args in host.calls
        if module.endswith(("docker_commit_save", "docker_volume_backup"))
    }
    assert captures[("docker_commit_save", "big")] == {
        "path": "/b/big",
        "label": "committing and saving big",
        "interval": 5,
        "timeout": 60,
    }
    assert captures[("docker_volume_backup", "big")]["label"] == "backing up the volumes of big"
    assert captures[("docker_commit_save", "small")] is None and captures[("docker_volume_backup", "small")] is None
    # progress off
    host = ProgressHost()
    m.SourceRun(host, members, dict(SOURCE, progress={"bytes": 0}), now=clock()).capture()
    assert all(args["_progress"] is None for _module, args in host.calls if "_progress" in args)


def source_args(state, **extra):
    args = dict(SOURCE, state=state, members=None, groups=None, progress={"bytes": 1000}, hooks={}, capture_options={})
    return dict(args, **extra)


def test_the_source_task_runs_in_one_process_unless_a_capture_reports_progress_or_nothing_runs():
    small, large = member("a", expected_bytes=10), member("b", expected_bytes=5000)
    assert not m.runs_stepwise(source_args("captured", members=[small]))
    assert m.runs_stepwise(source_args("captured", groups=[{"id": "g", "members": [small, large]}]))
    assert not m.runs_stepwise(source_args("captured", members=[large], progress={"bytes": 0}))  # 0: never
    assert not m.runs_stepwise(source_args("restored", members=[large]))
    assert not m.runs_stepwise(source_args("cut_over", members=[small], cutover="stop"))
    assert not m.runs_stepwise(source_args("cut_over", members=[small], cutover="keep"))  # journals done
    assert m.runs_stepwise(source_args("cut_over", members=[small], cutover="keep", journal=None))


def test_an_export_capture_counts_the_filesystem_and_the_volumes():
    host = ProgressHost(docker_export={"size": 7}, docker_volume_backup={"bytes_written": 3})
    members = [member("web", expected_bytes=500, has_volumes=True)]
    options = dict(SOURCE, mode="export", progress={"bytes": 100, "interval": 5, "timeout": 60}, capture_options={})
    out = m.SourceRun(host, members, options, now=clock()).capture()
    assert out["members"]["web"]["bytes_captured"] == 10
    labels = {module.rsplit(".", 1)[-1]: args["_progress"]["label"] for module, args in host.calls if args["_progress"]}
    assert labels == {"docker_export": "exporting web", "docker_volume_backup": "backing up the volumes of web"}


def test_a_stop_that_ran_into_its_timeout_and_killed_the_source_is_reported():
    ticks = iter([1000.0, 1000.0] + [1000.0 + 0.5 * i for i in range(100)])

    def now():
        return next(ticks)

    def stopped(args):
        # web ignores SIGTERM: the engine kills it once the timeout ends (137); db ends by itself, slowly (0)
        return {"changed": True, "container": {"State": {"ExitCode": 137 if args["name"] == "web" else 0}}}

    host = FakeHost(docker_container=stopped, docker_commit_save={"image_id": "sha256:x", "size": 1})
    out = m.SourceRun(host, [member("db"), member("web")], dict(SOURCE, stop_timeout=0), now=now).capture()
    assert out["members"]["web"].get("stop_timed_out") is True
    assert "stop_timed_out" not in out["members"]["db"]
    # a kill before the timeout ran out (an OOM kill, the process's own SIGKILL) is not a stop that timed out
    host = FakeHost(docker_container=stopped, docker_commit_save={"image_id": "sha256:x", "size": 1})
    out = m.SourceRun(host, [member("web")], dict(SOURCE, stop_timeout=60), now=clock()).capture()
    assert "stop_timed_out" not in out["members"]["web"]
    assert not m._killed_at_timeout({}, 99, 10)  # a stop that says nothing of how it ended


def test_the_source_task_puts_the_members_back_when_a_capture_fails():
    host = FakeHost(docker_commit_save=lambda args: {"failed": args["container"] == "web", "msg": "disk full"})
    result = m.source_task(host, source_args("captured", members=[member("db"), member("web")]), now=clock())
    assert result["failed"] and "disk full" in result["msg"]
    assert (result["phase"], result["member"], result["source_states"]) == (
        "capture",
        "web",
        {"db": "running", "web": "running"},
    )
    done = m.source_task(host, source_args("cut_over", groups=[{"id": "g", "members": [member("db")]}]), now=clock())
    assert (
        done["changed"] is False
        and done["groups"]["g"]["ok"]
        and done["groups"]["g"]["source_states"] == {"db": "exited"}
    )


def test_a_small_capture_is_sent_right_away_and_journaled_for_the_restore():
    host = FakeHost(docker_commit_save={"image_id": "sha256:x", "size": 100})
    sent = []

    def send(src, dest):
        sent.append((src, dest))
        if src == "/w/b":
            raise m.StepFailed("transfer", "", "sending /w/b failed (rsync exit 23)")
        return 120

    options = dict(SOURCE, send={"max_bytes": 1000})
    groups = [
        {"id": "a", "members": [member("a")], "transfer": {"src": "/w/a", "dest": "/in/a"}},
        {"id": "b", "members": [member("b")], "transfer": {"src": "/w/b", "dest": "/in/b"}},
        {"id": "big", "members": [member("big")], "transfer": {"src": "/w/big", "dest": "/in/big"}},
    ]
    host.answers["docker_commit_save"] = lambda args: {"size": 5000 if args["container"] == "big" else 100}
    out = m.capture_groups(host, groups, options, now=clock(), send=send)
    assert sent == [("/w/a", "/in/a"), ("/w/b", "/in/b")]  # big is left for the role (with progress)
    assert out["a"]["ok"] and out["a"]["sent"] and out["a"]["sent_bytes"] == 120
    assert out["big"]["ok"] and "sent" not in out["big"]
    assert not out["b"]["ok"] and out["b"]["phase"] == "transfer" and out["b"]["target_touched"]
    assert out["b"]["source_states"] == {"b": "running"}  # put back
    phases = [(a["containers"], a["phase"]) for mod, a in host.calls if mod.endswith("guard") and "phase" in a]
    assert ([{"name": "a"}], "restore") in phases
    assert ([{"name": "b"}], "restore") not in phases and ([{"name": "big"}], "restore") not in phases


def test_planning_runs_the_plan_step_and_check_mode_changes_nothing_else():
    host = FakeHost(docker_migrate_plan={"groups": [], "missing": ["gone"]})
    plan = {"containers": ["gone"], "probe": True}
    assert m.source_task(host, source_args("planned", plan=plan), check_mode=True) == {
        "groups": [],
        "missing": ["gone"],
    }
    assert host.calls == [("ferry.docker.docker_migrate_plan", plan)]
    assert not m.runs_stepwise(source_args("planned", plan=plan))
    skipped = m.source_task(host, source_args("captured", members=[member("web")]), check_mode=True)
    assert skipped["changed"] and "check mode" in skipped["msg"] and len(host.calls) == 1


def test_planning_makes_the_run_key_pair_once_the_plan_is_read_and_never_in_check_mode(tmp_path):
    plan = {"containers": ["web"], "probe": True}
    key = {"dir": str(tmp_path / "work" / ".keys" / "run1"), "comment": "ferry.docker migrate run1 from h1"}
    host = FakeHost(docker_migrate_plan={"groups": []})
    assert "run_key_public" not in m.source_task(host, source_args("planned", plan=plan, run_key=key), check_mode=True)
    assert not (tmp_path / "work").exists()
    out = m.source_task(host, source_args("planned", plan=plan, run_key=key))
    assert out["run_key_public"].startswith("ssh-ed25519 ") and out["run_key_public"].endswith(key["comment"])
    for path in (tmp_path / "work", tmp_path / "work" / ".keys", tmp_path / "work" / ".keys" / "run1"):
        assert path.stat().st_mode & 0o777 == 0o700, path
    assert (tmp_path / "work/.keys/run1/id_ed25519").stat().st_mode & 0o777 == 0o600
    # a pair already there is kept (a retried step)
    assert (
        m.source_task(host, source_args("planned", plan=plan, run_key=key))["run_key_public"] == out["run_key_public"]
    )
    # a plan that failed makes no key
    other = dict(key, dir=str(tmp_path / "other"))
    failed = m.source_task(
        FakeHost(docker_migrate_plan={"failed": True, "msg": "no engine"}),
        source_args("planned", plan=plan, run_key=other),
    )
    assert failed["failed"] and "run_key_public" not in failed and not (tmp_path / "other").exists()


def test_a_run_key_pair_that_cannot_be_made_is_noted_not_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no ssh-keygen
    key = {"dir": str(tmp_path / "keys"), "comment": "c"}
    out = m.source_task(FakeHost(docker_migrate_plan={"groups": []}), source_args("planned", plan={}, run_key=key))
    assert not out.get("failed") and "run_key_public" not in out
    assert out["run_key_note"].startswith(f"the run's key pair could not be made in {key['dir']}: ")


# -- the image streamed into the target's engine (image=stream) ---------------------------------------------------

STREAM_TO = {"user": "root", "address": "192.0.2.12", "port": 22, "key_dir": "/k", "timeout": 600}


class FakeCopier:
    """The source's connection to the target, as far as the image goes: where to stream, what to remove."""

    def __init__(self, drop_answer=""):
        self.dropped = []
        self.drop_answer = drop_answer
        self.probes = 0

    def start_unpack_probe(self):
        self.probes += 1

    def stream_target(self):
        return dict(STREAM_TO)

    def drop_image(self, image_id):
        self.dropped.append(image_id)
        return self.drop_answer


def _streamed_commit(new=True):
    return lambda args: {
        "image_id": f"sha256:{args['container']}",
        "size": 70,
        "streamed": {"new": new, "bytes": 70, "sha256": "f" * 64} if args.get("stream_to") else None,
    }


def test_a_streamed_image_goes_to_the_target_and_is_journaled_for_the_guard():
    host = FakeHost(docker_commit_save=_streamed_commit())
    out = m.SourceRun(host, [member("web")], dict(SOURCE, image="stream"), now=clock()).capture(None, FakeCopier())
    commit = next(args for module, args in host.calls if module.endswith("docker_commit_save"))
    assert commit["stream_to"] == STREAM_TO
    web = out["members"]["web"]
    assert web["image_streamed"] == {"new": True, "bytes": 70, "sha256": "f" * 64} and web["bytes_captured"] == 70
    journaled = [args["containers"] for module, args in host.calls if module.endswith("docker_migrate_guard")]
    assert [{"name": "web", "streamed_images": ["sha256:web"]}] in journaled


def test_a_capture_that_streams_its_image_asks_how_the_target_unpacks_before_the_stop():
    order = []
    copier = FakeCopier()
    copier.start_unpack_probe = lambda: order.append("probe")
    host = FakeHost(
        docker_commit_save=_streamed_commit(), docker_container=lambda args: order.append(args["state"]) or {}
    )
    m.SourceRun(host, [member("web")], dict(SOURCE, image="stream"), now=clock()).capture(None, copier)
    assert order[:2] == ["probe", "stopped"]
    # an image that goes in the bundle streams nothing: nothing to ask
    copier = FakeCopier()
    m.SourceRun(
        FakeHost(docker_commit_save=_streamed_commit()), [member("web")], dict(SOURCE, image="bundle"), now=clock()
    ).capture(None, copier)
    assert copier.probes == 0


def test_an_image_goes_in_the_bundle_without_a_connection_or_with_image_bundle():
    for options, copier in ((dict(SOURCE, image="stream"), None), (dict(SOURCE, image="bundle"), FakeCopier())):
        host = FakeHost(docker_commit_save=_streamed_commit())
        out = m.SourceRun(host, [member("web")], options, now=clock()).capture(None, copier)
        commit = next(args for module, args in host.calls if module.endswith("docker_commit_save"))
        assert "stream_to" not in commit and "image_streamed" not in out["members"]["web"]


def test_a_group_that_fails_after_its_image_streamed_removes_it_from_the_target():
    def commit(args):
        if args["container"] == "b":
            return {"failed": True, "msg": "no space"}
        return _streamed_commit()(args)

    copier = FakeCopier()
    groups = [{"id": "g", "members": [member("a"), member("b")]}]
    out = m.capture_groups(FakeHost(docker_commit_save=commit), groups, dict(SOURCE, image="stream"), copier=copier)
    assert not out["g"]["ok"] and copier.dropped == ["sha256:a"]
    # an image the target had before is never removed; one that stays is named
    copier = FakeCopier(drop_answer="it is still there (exit 1)")
    out = m.capture_groups(FakeHost(docker_commit_save=commit), groups, dict(SOURCE, image="stream"), copier=copier)
    assert "the image of a streamed to the target (sha256:a) is still there" in out["g"]["msg"]
    copier = FakeCopier()
    host = FakeHost(
        docker_commit_save=lambda args: dict(_streamed_commit(new=False)(args), failed=args["container"] == "b")
    )
    m.capture_groups(host, groups, dict(SOURCE, image="stream"), copier=copier)
    assert copier.dropped == []


def test_the_target_checks_and_tags_a_streamed_image_and_a_failure_removes_only_a_new_one():
    for streamed, removed in (("new", True), ("present", False)):
        host = FakeHost(docker_load={"changed": True, "operation": "tag"}, docker_container_health={"failed": True})
        run = m.TargetRun(host, [member("web", image_streamed=streamed)], TARGET, now=clock())
        with pytest.raises(m.StepFailed):
            run.restore()
        load = next(args for module, args in host.calls if module.endswith("docker_load"))
        assert load["streamed"] is True and load["tag"] == "ferry-migrate/web:latest"
        run.undo()
        by_id = [a for mod, a in host.calls if mod.endswith("docker_image") and a["name"] == "sha256:web"]
        assert bool(by_id) is removed


# -- the early restore's handoff (send.handoff) --------------------------------------------------------------------


def test_with_a_handoff_every_group_is_sent_whatever_its_size_and_handed_off_after_the_journal_says_restore():
    host = FakeHost(docker_commit_save=lambda args: {"size": 5000, "image_id": "sha256:" + "c" * 64})
    order = []

    def send(src, dest):
        order.append(("send", dest))
        return 5000

    def handoff(dest, doc):
        order.append(("handoff", dest, doc["ok"], sorted(doc.get("members") or {})))

    host.answers["docker_migrate_guard"] = lambda args: order.append(("journal", args.get("phase"))) or {}
    groups = [{"id": "big", "members": [member("big")], "transfer": {"src": "/w/big", "dest": "/in/big"}}]
    options = dict(SOURCE, send={"max_bytes": 1000, "handoff": True})
    out = m.capture_groups(host, groups, options, now=clock(), send=send, handoff=handoff)
    assert out["big"]["ok"] and out["big"]["sent"] and out["big"]["handed_off"]
    assert order[-3:] == [("send", "/in/big"), ("journal", "restore"), ("handoff", "/in/big", True, ["big"])]
    # without send.handoff the same capture is left for the role to send with progress, and nothing is handed off
    order.clear()
    out = m.capture_groups(
        host, groups, dict(SOURCE, send={"max_bytes": 1000}), now=clock(), send=send, handoff=handoff
    )
    assert "sent" not in out["big"] and not [o for o in order if o[0] in ("send", "handoff")]


def test_a_failed_capture_is_handed_off_as_failed_and_its_source_put_back():
    host = FakeHost(docker_commit_save={"failed": True, "msg": "no space"})
    docs = []
    groups = [{"id": "g", "members": [member("web")], "transfer": {"src": "/w/g", "dest": "/in/g"}}]
    options = dict(SOURCE, send={"max_bytes": 0, "handoff": True})
    out = m.capture_groups(
        host, groups, options, now=clock(), send=lambda s, d: 1, handoff=lambda dest, doc: docs.append((dest, doc))
    )
    assert not out["g"]["ok"] and out["g"]["let_go"] and out["g"]["source_states"] == {"web": "running"}
    assert docs == [("/in/g", {"version": 1, "group": "g", "ok": False})]


def test_a_handoff_that_cannot_be_written_fails_the_group_which_is_put_back():
    host = FakeHost(docker_commit_save={"size": 10, "image_id": "sha256:" + "c" * 64})
    tries = []

    def handoff(dest, doc):
        tries.append(doc["ok"])
        raise m.StepFailed("transfer", "", "writing the handoff root@h2:/in/g.handoff failed (exit 255)")

    groups = [{"id": "g", "members": [member("web")], "transfer": {"src": "/w/g", "dest": "/in/g"}}]
    options = dict(SOURCE, send={"max_bytes": 0, "handoff": True})
    out = m.capture_groups(host, groups, options, now=clock(), send=lambda s, d: 1, handoff=handoff)
    failed = out["g"]
    assert not failed["ok"] and failed["phase"] == "transfer" and failed["target_touched"] and "let_go" not in failed
    assert "telling the target's restore failed too" in failed["msg"]
    assert failed["source_states"] == {"web": "running"} and tries == [True, False]


def test_a_handoff_the_restore_had_taken_although_its_write_failed_keeps_the_source_stopped():
    host = FakeHost(docker_commit_save={"size": 10, "image_id": "sha256:" + "c" * 64})
    docs = []

    def handoff(dest, doc):  # hand_off found out by withdrawing it: the group is the restore's
        docs.append(doc["ok"])
        return "writing the handoff failed (exit 255), but the restore had taken it: the group is the restore's"

    groups = [{"id": "g", "members": [member("web")], "transfer": {"src": "/w/g", "dest": "/in/g"}}]
    options = dict(SOURCE, send={"max_bytes": 0, "handoff": True})
    out = m.capture_groups(host, groups, options, now=clock(), send=lambda s, d: 1, handoff=handoff)
    assert out["g"]["ok"] and out["g"]["handed_off"] and "had taken it" in out["g"]["handoff_note"]
    assert docs == [True] and "source_states" not in out["g"]  # not put back: its copy is starting
    assert not [a for mod, a in host.calls if mod.endswith("docker_container") and a.get("state") == "started"]


def test_a_capture_that_fails_after_the_stop_says_when_its_sources_were_down():
    """The report's downtime of a failed group: from the stop until the sources were started again, not 0."""
    host = FakeHost(docker_commit_save={"failed": True, "msg": "no space"})
    groups = [{"id": "g", "members": [member("web")]}]
    failed = m.capture_groups(host, groups, SOURCE, now=clock())["g"]
    assert failed["source_states"] == {"web": "running"}
    assert 1000 < failed["down_at"] < failed["up_at"]
    # the same through the single-group task
    result = m.source_task(host, source_args("captured", members=[member("web")]), now=clock())
    assert result["failed"] and 1000 < result["down_at"] < result["up_at"]
    # a source that could not be started again has no up_at: the report counts until the group's end
    host.answers["docker_container"] = lambda args: {"failed": args["state"] == "started", "msg": "port taken"}
    failed = m.capture_groups(host, groups, SOURCE, now=clock())["g"]
    assert failed["down_at"] and failed["up_at"] == 0 and "putting the sources back failed" in failed["msg"]
    # a capture of a source that did not run took nothing down
    stopped = [{"id": "g", "members": [member("web", state_before="exited", running=False)]}]
    failed = m.capture_groups(host, stopped, SOURCE, now=clock())["g"]
    assert not failed["ok"] and "down_at" not in failed


# -- the committed image's removal beside the capture's last steps ---------------------------------------------------


def test_the_committed_image_is_removed_beside_the_handoff_and_before_the_task_ends():
    handed_off = threading.Event()
    order = []

    def remove(args):
        # the removal does not hold up the handoff: it is still running when the handoff is written
        order.append(("removal starts", args["name"], args["state"]))
        order.append(("handoff seen by the removal", handed_off.wait(timeout=10)))
        return {"changed": True}

    host = FakeHost(docker_commit_save=_streamed_commit(), docker_image=remove)

    def handoff(dest, doc):
        order.append(("handoff", doc["ok"]))
        handed_off.set()

    groups = [{"id": "g", "members": [member("web")], "transfer": {"src": "/w/g", "dest": "/in/g"}}]
    options = dict(SOURCE, image="stream", send={"max_bytes": 0, "handoff": True})
    out = m.capture_groups(
        host, groups, options, now=clock(), send=lambda s, d: 1, handoff=handoff, copier=FakeCopier()
    )
    assert out["g"]["ok"] and "image_note" not in out["g"]["members"]["web"]
    commit = next(args for module, args in host.calls if module.endswith("docker_commit_save"))
    assert commit["keep_image"] is True  # the step leaves it; the capture removes it
    assert ("removal starts", "ferry-migrate/web:latest", "absent") in order
    assert ("handoff seen by the removal", True) in order and ("handoff", True) in order


def test_without_this_process_the_step_removes_its_image_itself_and_a_failed_step_is_cleaned_up_at_once():
    host = FakeHost(docker_commit_save=_streamed_commit())
    m.capture_groups(host, [{"id": "g", "members": [member("web")]}], dict(SOURCE, image="stream"), now=clock())
    commit = next(args for module, args in host.calls if module.endswith("docker_commit_save"))
    assert "keep_image" not in commit and not [a for mod, a in host.calls if mod.endswith("docker_image")]
    # with the copier, a step that fails (its image may be there) gets its image removed before the put-back
    host = FakeHost(docker_commit_save={"failed": True, "msg": "no space"})
    out = m.capture_groups(
        host, [{"id": "g", "members": [member("web")]}], dict(SOURCE, image="stream"), now=clock(), copier=FakeCopier()
    )
    assert not out["g"]["ok"]
    calls = [(mod.rsplit(".", 1)[-1], a.get("name"), a.get("state")) for mod, a in host.calls]
    removal = calls.index(("docker_image", "ferry-migrate/web:latest", "absent"))
    started = calls.index(("docker_container", "web", "started"))
    assert removal < started and "image_note" not in (out["g"].get("members") or {}).get("web", {})
    # one that stays is named with the failure
    host = FakeHost(docker_commit_save={"failed": True, "msg": "no space"}, docker_image={"failed": True, "msg": "409"})
    out = m.capture_groups(
        host, [{"id": "g", "members": [member("web")]}], dict(SOURCE, image="stream"), now=clock(), copier=FakeCopier()
    )
    assert not out["g"]["ok"] and "could not be removed: 409" in out["g"]["members"]["web"]["image_note"]


def test_a_committed_image_that_cannot_be_removed_is_named_in_the_report_not_a_failure():
    host = FakeHost(
        docker_commit_save=_streamed_commit(),
        docker_image={"failed": True, "msg": "removing image ferry-migrate/web:latest failed: 409 conflict"},
    )
    groups = [{"id": "g", "members": [member("web")]}]
    out = m.capture_groups(host, groups, dict(SOURCE, image="stream"), now=clock(), copier=FakeCopier())
    assert out["g"]["ok"]
    note = out["g"]["members"]["web"]["image_note"]
    assert note.startswith("the committed image ferry-migrate/web:latest could not be removed") and "409" in note
    assert note.endswith("remove it by hand")
