# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The migrate role's groups, their steps' arguments, and the report entries."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.filter import migrate_groups as g


def item(name, **extra):
    base = dict(
        container=name,
        source="h1",
        target="h2",
        name=name.upper(),
        source_state_before="running",
        action="migrate",
        running=True,
        has_volumes=False,
        exclude_layers=["l1"],
        probe_seconds=0.5,
        entry={"port_map": {"80/tcp": 8080}, "bind_map": {}, "network_map": {}, "target": "h2"},
    )
    return dict(base, **extra)


def plan(*items):
    return g.migrate_groups(list(items), "run1", "h1", "/w", "/in")


def test_registered():
    assert set(g.FilterModule().filters()) == {
        "migrate_groups",
        "migrate_plan_items",
        "migrate_group_gate",
        "migrate_item_names",
        "migrate_waves",
        "migrate_created",
        "migrate_wave_pick",
        "migrate_wave_results",
        "migrate_probe_items",
        "migrate_probe_decide",
        "migrate_preflight_checks",
        "migrate_check_results",
        "migrate_summary",
        "migrate_with_image_ids",
        "migrate_precopy_pick",
        "migrate_failure",
        "migrate_group_results",
    }


def test_one_group_per_container_unless_joined():
    groups = plan(item("db", group="db"), item("web", group="db"), item("cache"))
    assert [(grp["id"], [m["container"] for m in grp["members"]]) for grp in groups] == [
        ("db", ["db", "web"]),
        ("cache", ["cache"]),
    ]
    db = groups[0]
    assert db["transfers"]["direct"] == [{"src": "/w/run1/db", "dest": "/in/run1-h1-db"}]
    assert db["transfers"]["controller"][1] == {"src": "/w/run1/db/web", "dest": "/in/run1-h1-db/web"}
    assert db["source_members"][1] == {
        "container": "web",
        "name": "WEB",
        "state_before": "running",
        "running": True,
        "has_volumes": False,
        "exclude_layers": ["l1"],
        "image_ref": "ferry-migrate/web:latest",
        "bundle": "/w/run1/db/web",
        "hook_label": True,
        "expected_bytes": 0,
        "volumes": [],
    }
    assert db["target_members"][0]["entry"] == {
        "port_map": {"80/tcp": 8080},
        "bind_map": {},
        "network_map": {},
        "references": {},
    }
    assert db["guard_entries"] == [{"name": "db"}, {"name": "web"}]


def test_a_group_has_one_target_and_one_action():
    with pytest.raises(AnsibleFilterError, match="cannot move with group db"):
        plan(item("db", group="db"), item("web", group="db", target="h3"))
    with pytest.raises(AnsibleFilterError, match="not a queued container"):
        plan({"container": "x"})


def test_image_ids_from_the_capture():
    members = [{"container": "db"}, {"container": "web"}, {"container": "cache"}]
    captured = {
        "db": {"image_id": "sha256:1"},
        "web": {"image_id": "sha256:2", "image_streamed": {"new": True, "bytes": 9}},
        "cache": {"image_id": "sha256:3", "image_streamed": {"new": False, "bytes": 0}},
    }
    out = g.migrate_with_image_ids(members, {"members": captured})
    assert out == [
        {"container": "db", "image_id": "sha256:1", "precopied": {}, "image_streamed": ""},
        {"container": "web", "image_id": "sha256:2", "precopied": {}, "image_streamed": "new"},
        {"container": "cache", "image_id": "sha256:3", "precopied": {}, "image_streamed": "present"},
    ]
    assert g.migrate_with_image_ids([{"container": "x"}], None) == [
        {"container": "x", "image_id": "", "precopied": {}, "image_streamed": ""}
    ]
    assert [g._image_transfer(captured[name]) for name in ("db", "web", "cache")] == ["bundle", "stream", "present"]


def test_failure_keeps_no_run_config():
    assert g.migrate_failure({"msg": "x", "phase": "health", "run_config": {"env": ["A=1"]}, "failed": True}) == {
        "msg": "x",
        "phase": "health",
        "failed": True,
    }


SOURCE = {
    "members": {"db": {"bytes_captured": 300, "image_id": "i"}, "web": {"bytes_captured": 100}},
    "down_at": 100.0,
    "up_at": 0,
    "ended_at": 110.0,
    "phases": {"stop": 1.0, "capture": 9.0, "transfer": 0.0},
}
TARGET = {"started_at": 114.0, "verified_at": 130.0, "phases": {"restore": 6.0, "health": 10.0}}


def test_results_of_a_migrated_group():
    (group,) = plan(item("db", group="db"), item("web", group="db"))
    db, web = g.migrate_group_results(
        group,
        source=SOURCE,
        sent=[200],
        target=TARGET,
        cutover={"changed": True, "source_states": {"db": "exited", "web": "exited"}},
        started_at=99.0,
        ended_at=131.0,
    )
    assert db["status"] == "migrated" and db["source_state_after"] == "exited"
    assert db["bytes_sent"] == 150 and web["bytes_sent"] == 50
    assert db["image_transfer"] == web["image_transfer"] == "bundle"
    assert db["stop_timed_out"] is web["stop_timed_out"] is False
    members = dict(SOURCE["members"], web={"bytes_captured": 100, "stop_timed_out": True})
    _db, web = g.migrate_group_results(group, source=dict(SOURCE, members=members), sent=[200], target=TARGET)
    assert web["stop_timed_out"] is True  # the engine killed it at migrate_stop_timeout


def test_an_image_streamed_into_the_target_counts_as_sent_beside_the_bundle_rsync_sent():
    (group,) = plan(item("db", group="db"), item("web", group="db"))
    members = {
        "db": {"bytes_captured": 1300, "image_id": "i", "image_streamed": {"new": True, "bytes": 1000}},
        "web": {"bytes_captured": 100, "image_streamed": {"new": False, "bytes": 0}},
    }
    db, web = g.migrate_group_results(
        group, source=dict(SOURCE, members=members), sent=[200], target=TARGET, cutover={"changed": True}
    )
    assert (db["bytes_sent"], web["bytes_sent"]) == (1150, 50) and db["bytes_captured"] == 1300
    assert (db["image_transfer"], web["image_transfer"]) == ("stream", "present")
    assert db["downtime_seconds"] == 30.0
    assert db["phases"] == {
        "preflight": 0.5,
        "stop": 1.0,
        "capture": 9.0,
        "transfer": 4.0,
        "restore": 6.0,
        "health": 10.0,
    }
    assert db["group"] == ["db", "web"] and db["bundle"] == "/w/run1/db/db" and db["image"] == "ferry-migrate/db:latest"
    assert "entry" not in db and "received" not in db and db["name"] == "DB"


def test_results_of_a_failed_group_name_phase_cleanup_and_log():
    (group,) = plan(item("db"))
    failure = {
        "task": "Restore and check the group on its target, db",
        "result": {"msg": "health of DB: exited", "phase": "health", "log_tail": ["FATAL: wrong owner"]},
        "put_back": {"source_states": {"db": "running"}},
        "cleanup": "done",
    }
    (db,) = g.migrate_group_results(group, source=SOURCE, sent=[10], failure=failure, started_at=99.0, ended_at=140.0)
    assert (db["status"], db["phase"], db["target_cleanup"]) == ("failed", "health", "done")
    assert db["log_tail"] == ["FATAL: wrong owner"] and "health of DB: exited" in db["error"]
    assert db["source_state_after"] == "running" and db["downtime_seconds"] == 40.0


def test_a_journal_failure_is_placed_in_its_phase():
    (group,) = plan(item("db"))
    failure = {"task": "Journal as migrated the group db", "result": {"msg": "the guard of run r is fired"}}
    (db,) = g.migrate_group_results(group, failure=failure)
    assert db["phase"] == "cutover" and db["source_state_after"] == "running"


def test_a_failed_cutover_keeps_the_target():
    (group,) = plan(item("db"))
    (db,) = g.migrate_group_results(group, source=SOURCE, target=TARGET, cutover={"failed": True, "msg": "busy"})
    assert db["status"] == "failed" and db["phase"] == "cutover" and "finish it by hand" in db["error"]
    assert db["target_cleanup"] == "not needed (the target is kept)"


def test_an_already_migrated_container_is_unchanged_unless_its_source_was_stopped_now():
    (group,) = plan(item("db", action="cutover", running=False))
    (db,) = g.migrate_group_results(group, cutover={"changed": False, "source_states": {"db": "exited"}})
    assert db["status"] == "unchanged" and db["bundle"] == "" and db["downtime_seconds"] == 0
    (db,) = g.migrate_group_results(group, cutover={"changed": True, "source_states": {"db": "exited"}})
    assert db["status"] == "migrated"


PLAN = {
    "groups": [
        {"id": "main", "members": ["main", "side"], "references": {"abc": "main", "main": "main", "side": "side"}},
        {"id": "solo", "members": ["solo"], "references": {}},
    ],
    "missing": ["gone"],
    "problems": {"loop": "a cycle: loop -> loop2 -> loop"},
    "resolved": {"side": "side", "solo": "solo", "loop": "loop"},
}


def test_plan_items_pull_in_group_members_with_the_group_target():
    items = [{"container": "side", "target": "h3", "port_map": {"80/tcp": 81}}, "solo", "gone", "loop"]
    out = g.migrate_plan_items(items, PLAN, "h2", {"main": "main-new"}, "h1")
    got = {item["container"]: item for item in out["items"]}
    assert list(got) == ["main", "side", "solo", "gone"]
    assert got["main"] == {
        "container": "main",
        "pulled_in": True,
        "target": "h3",
        "group": "main",
        "references": PLAN["groups"][0]["references"],
        "name": "main-new",
    }
    assert got["side"]["port_map"] == {"80/tcp": 81} and got["side"]["group"] == "main"
    assert got["solo"]["target"] == "h2" and got["gone"] == {"container": "gone"}
    (failed,) = out["failed"]
    assert failed["container"] == "loop" and failed["status"] == "failed" and "cycle" in failed["error"]


def test_plan_items_refuse_one_group_sent_to_two_targets():
    items = [{"container": "main", "target": "h2"}, {"container": "side", "target": "h3"}]
    out = g.migrate_plan_items(items, dict(PLAN, resolved={"main": "main", "side": "side"}), "", {}, "h1")
    assert out["items"] == [] and {f["container"] for f in out["failed"]} == {"main", "side"}
    assert "give them one target" in out["failed"][0]["error"]


def test_group_gate_keeps_a_group_together():
    todo = [item("main", group="main"), item("side", group="main"), item("solo", group="solo")]
    results = [{"container": "db2", "group": "main", "status": "failed", "error": "port 80 is taken"}]
    out = g.migrate_group_gate(todo, results)
    assert [t["container"] for t in out["todo"]] == ["solo"]
    moved = out["results"][1:]
    assert [r["container"] for r in moved] == ["main", "side"]
    assert all("db2 (port 80 is taken)" in r["error"] and r["status"] == "failed" for r in moved)
    assert "entry" not in moved[0]


def test_group_gate_refuses_a_half_migrated_group():
    todo = [item("main", group="main", action="cutover"), item("side", group="main")]
    out = g.migrate_group_gate(todo, [])
    assert out["todo"] == [] and "main already run(s) on the target while side" in out["results"][0]["error"]


def test_item_names():
    assert g.migrate_item_names(["a", {"container": "b", "target": "h"}]) == ["a", "b"]


PROBES = {
    "probes": {
        "web": {
            "state_before": "running",
            "image_id": "sha256:w",
            "layers": ["l1", "l2"],
            "image_bytes": 1000,
            "rw_bytes": 100,
            "volumes": ["data"],
            "volume_bytes": 900,
            "run_config": {"env": ["SECRET=x"]},
        },
        "db": {
            "state_before": "exited",
            "image_id": "sha256:d",
            "layers": [],
            "image_bytes": 0,
            "rw_bytes": 0,
            "volumes": [],
            "volume_bytes": 0,
            "run_config": {},
        },
    }
}
DEFAULTS = {"target": "h2", "port_map": {}, "bind_map": {}, "network_map": {}, "name_map": {"db": "db2"}}


def test_probe_items_settle_and_split_without_the_run_config():
    items = [
        {"container": "web", "group": "web"},
        {"container": "db"},
        {"container": "gone"},
        {"container": "web2", "target": "h1"},
    ]
    out = g.migrate_probe_items(items, PROBES, "h1", ["h1", "h2"], DEFAULTS, margin_percent=10, margin_bytes=5)
    web, db = out["check"]
    assert web["required_bytes"] == 2205 and web["image_ref"] == "ferry-migrate/web:latest"
    assert web["layers"] == ["l1", "l2"] and web["volumes"] == ["data"] and web["source_state_before"] == "running"
    assert web["sizes"] == {"rw_bytes": 100, "image_bytes": 1000, "volume_bytes": 900}
    assert db["name"] == "db2" and "name_map" not in db
    assert "SECRET=x" not in repr(out)
    assert [m["container"] for m in out["missing"]] == ["gone"]
    (failed,) = out["failed"]
    assert failed["container"] == "web2" and "not another host of the inventory" in failed["error"]


def preflight(**extra):
    return dict(
        {
            "problems": [],
            "container_state": "absent",
            "container_running": False,
            "layers_present": ["l1"],
            "volumes_existing": [],
        },
        **extra,
    )


def on_h2(*results):
    """docker_bundle_restore's answer (state=checked) on h2, where the tests' checks run."""
    return [{"__migrate_target": "h2", "checks": list(results), "changed": False}]


def test_probe_decide_queues_reports_and_detects_what_is_in_place():
    probe = g.migrate_probe_items(
        [{"container": "web"}, {"container": "db"}, "gone", "lost"], PROBES, "h1", ["h1", "h2"], DEFAULTS
    )
    copies = [
        {"exists": True, "container": {"Config": {"Labels": {"ferry.docker.config-digest": "x"}}}},
        {"exists": False},
    ]
    # web's image is 1000 bytes: at that threshold, the layers h2 has are left out
    out = g.migrate_probe_decide(
        probe, on_h2(preflight(), preflight(container_state="same")), copies, "h1", thin_min_bytes=1000
    )
    web, db, gone = out["todo"]
    assert web["action"] == "migrate" and web["exclude_layers"] == ["l1"] and web["has_volumes"] and web["running"]
    assert db["action"] == "cutover" and db["name"] == "db2"
    assert gone["action"] == "cutover" and gone["source_state_before"] == "absent"
    (lost,) = out["results"]
    assert lost["container"] == "lost" and "no container lost on h1" in lost["error"]


def test_probe_decide_sends_a_small_image_whole():
    """Leaving out the layers the target has reads the image twice from the source's engine: below the threshold
    (8 MiB by default; web's image is 1000 bytes) the capture sends them along and reads it once."""
    probe = g.migrate_probe_items([{"container": "web"}], PROBES, "h1", ["h1", "h2"], DEFAULTS)
    (web,) = g.migrate_probe_decide(probe, on_h2(preflight()), [], "h1")["todo"]
    assert web["exclude_layers"] == []
    (web,) = g.migrate_probe_decide(probe, on_h2(preflight()), [], "h1", thin_min_bytes=1001)["todo"]
    assert web["exclude_layers"] == []
    (web,) = g.migrate_probe_decide(probe, on_h2(preflight()), [], "h1", thin_min_bytes=0)["todo"]
    assert web["exclude_layers"] == ["l1"]


@pytest.mark.parametrize(
    "present, image_bytes, min_bytes, expected",
    [
        (["l1", "l2"], 8 * 1024 * 1024, g.THIN_MIN_BYTES, ["l1", "l2"]),
        (["l1", "l2"], 8 * 1024 * 1024 - 1, g.THIN_MIN_BYTES, []),
        (["l1"], 0, 0, ["l1"]),
        ([], 10**9, 0, []),
        (None, 10**9, 0, []),
        (["l1"], None, 1, []),
    ],
)
def test_thin_layers(present, image_bytes, min_bytes, expected):
    assert g.thin_layers(present, image_bytes, min_bytes) == expected


@pytest.mark.parametrize(
    "result, words",
    [
        (preflight(problems=["port 80 is taken on h2"]), "port 80 is taken"),
        (preflight(volumes_existing=["data"]), "volume data already exists on h2"),
        (preflight(container_state="same", container_running=False), "an earlier migration did not finish"),
        ({"unreachable": True, "msg": "timed out"}, "cannot reach h2: timed out"),
        ({"msg": "Docker SDK missing"}, "checking h2 failed: Docker SDK missing"),
    ],
)
def test_probe_decide_failures(result, words):
    probe = g.migrate_probe_items([{"container": "web", "group": "web"}], PROBES, "h1", ["h1", "h2"], DEFAULTS)
    answer = on_h2(result) if "problems" in result else [dict(result, __migrate_target="h2")]
    out = g.migrate_probe_decide(probe, answer, [], "h1")
    (failed,) = out["results"]
    assert out["todo"] == [] and words in failed["error"] and failed["group"] == "web"
    assert failed["status"] == "failed" and failed["phase"] == "preflight"


def test_check_results_say_what_a_run_would_do():
    moving = item("web", volumes=["data"], entry={"required_bytes": 2205, "image_ref": "ferry-migrate/web:latest"})
    in_place = item("db", action="cutover", volumes=[])
    web, db = g.migrate_check_results([moving, in_place])
    assert web["status"] == "would_migrate" and web["bytes_to_capture_at_most"] == 2205
    assert web["volumes_to_create"] == ["data"] and web["excluded_layers"] == 1 and "entry" not in web
    assert db["status"] == "in_place" and db["bytes_to_capture_at_most"] == 0


def test_summary_for_awx_has_no_paths_or_configs():
    report = {
        "status": "ok",
        "run": "r1",
        "containers": [
            {"container": "web", "status": "migrated", "bundle": "/w/r1/web", "phases": {}, "downtime_seconds": 3.2}
        ],
    }
    assert g.migrate_summary(report) == {
        "status": "ok",
        "run": "r1",
        "check_mode": False,
        "containers": [{"container": "web", "status": "migrated", "downtime_seconds": 3.2}],
    }


def test_waves_hold_up_to_parallel_groups_of_one_target_and_action():
    groups = plan(item("a"), item("b"), item("c", target="h3"), item("d"), item("e", action="cutover"))
    waves = g.migrate_waves(groups, parallel=2)
    assert [[grp["id"] for grp in w["groups"]] for w in waves] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [(w["target"], w["action"]) for w in waves] == [
        ("h2", "migrate"),
        ("h3", "migrate"),
        ("h2", "migrate"),
        ("h2", "cutover"),
    ]
    assert waves[0]["source_groups"][1] == {
        "id": "b",
        "members": groups[1]["source_members"],
        "transfer": {"src": "/w/run1/b", "dest": "/in/run1-h1-b"},  # for a send right after the capture
    }


def test_wave_pick_follows_each_group_through_the_steps():
    (wave,) = g.migrate_waves(plan(item("a"), item("b"), item("c")), parallel=4)
    source = {
        "groups": {
            "a": {"ok": True, "members": {"a": {"image_id": "sha256:a", "bytes_captured": 7}, "a2": {}}},
            "b": {"ok": False},
            "c": {"ok": True, "members": {}},
        }
    }
    target = {"groups": {"a": {"ok": True}, "c": {"ok": False}}}
    transfers = g.migrate_wave_pick(wave, "transfers", source)
    assert [(t["group"], t["bytes"]) for t in transfers] == [("a", 7), ("c", 0)]
    assert g.migrate_wave_pick(wave, "guard_entries", source) == [{"name": "a"}, {"name": "c"}]
    (ta, tc) = g.migrate_wave_pick(wave, "target_groups", source)
    assert ta["members"][0]["image_id"] == "sha256:a" and tc["members"][0]["image_id"] == ""
    assert [grp["id"] for grp in g.migrate_wave_pick(wave, "failed_on_target", source, target)] == ["c"]
    assert g.migrate_wave_pick(wave, "rolled_back", source, target) == [{"name": "b"}, {"name": "c"}]
    assert g.migrate_wave_pick(wave, "migrated", source, target) == [{"name": "a"}]
    assert g.migrate_wave_pick(wave, "controller_steps", source) == ["transfers", "guard_entries"]
    with pytest.raises(AnsibleFilterError, match="unknown"):
        g.migrate_wave_pick(wave, "nope")


def test_a_capture_that_sent_its_groups_leaves_the_controller_no_step_before_the_restore():
    (wave,) = g.migrate_waves(plan(item("a"), item("b")), parallel=4)
    sent = {"ok": True, "sent": True, "members": {}}
    source = {"groups": {"a": sent, "b": sent}}
    assert g.migrate_wave_pick(wave, "controller_steps", source) == []
    source["groups"]["b"] = {"ok": False, "target_touched": True}  # its send failed half-way
    assert g.migrate_wave_pick(wave, "controller_steps", source) == ["failed_after_send"]
    assert g.migrate_wave_pick(wave, "controller_steps", source, transfer="controller") == [
        "failed_after_send",
        "transfers",
    ]


def test_wave_results_give_each_group_its_own_outcome():
    (wave,) = g.migrate_waves(plan(item("a"), item("b"), item("c")), parallel=4)
    source = {
        "groups": {
            "a": dict(SOURCE, ok=True, members={"a": {"bytes_captured": 10}}),
            "b": {
                "ok": False,
                "msg": "committing b: no space",
                "phase": "capture",
                "source_states": {"b": "running"},
                # stopped, then started again after its capture failed
                "down_at": 100.0,
                "up_at": 112.5,
            },
            "c": dict(SOURCE, ok=True, members={"c": {"bytes_captured": 10}}),
        }
    }
    target = {
        "groups": {
            "a": dict(TARGET, ok=True),
            "c": {
                "ok": False,
                "msg": "health of C: exited",
                "phase": "health",
                "log_tail": ["boom"],
                "target_cleanup": "done",
            },
        }
    }
    put_back = {"groups": {"c": {"ok": True, "source_states": {"c": "running"}}}}
    cut = {"groups": {"a": {"ok": True, "changed": True, "source_states": {"a": "exited"}}}}
    a, b, c = g.migrate_wave_results(
        wave,
        source=source,
        sent={"a": 7, "c": 9},
        target=target,
        put_back=put_back,
        cutover=cut,
        started_at=1.0,
        ended_at=2.0,
    )
    assert (a["status"], a["source_state_after"], a["bytes_sent"]) == ("migrated", "exited", 7)
    assert (b["status"], b["phase"], b["source_state_after"]) == ("failed", "capture", "running")
    assert "no space" in b["error"] and b["downtime_seconds"] == 12.5
    assert (c["status"], c["phase"], c["log_tail"], c["source_state_after"]) == (
        "failed",
        "health",
        ["boom"],
        "running",
    )


def test_wave_results_when_the_whole_wave_failed():
    (wave,) = g.migrate_waves(plan(item("a"), item("b")), parallel=4)
    failure = {"task": "Send the bundles in /w/run1/a", "result": {"msg": "rsync: connection refused"}}
    put_back = {"groups": {"a": {"ok": True, "source_states": {"a": "running"}}}}
    undone = {"groups": {"a": {"target_cleanup": "done"}}}
    a, b = g.migrate_wave_results(wave, failure=failure, put_back=put_back, undone=undone)
    assert a["status"] == b["status"] == "failed" and a["phase"] == "transfer" and "connection refused" in a["error"]
    assert a["target_cleanup"] == "done"


def test_a_group_whose_capture_failed_keeps_that_cause_when_the_wave_fails_after():
    """The early restore died (killed): its capture's handoff was withdrawn, then the wait for the restore failed the
    wave. The group's report names its own failure; the others get the wave's, said in words."""
    (wave,) = g.migrate_waves(plan(item("a"), item("b")), parallel=4)
    withdrawn = "handing off a: the restore did not take the handoff /in/r-h1-a.handoff within 10 s (withdrawn)"
    source = {"groups": {"a": {"ok": False, "msg": withdrawn, "phase": "capture", "source_states": {"a": "running"}}}}
    wrapper = (
        'Traceback (most recent call last):\n  File "/tmp/x/ansible/modules/async_wrapper.py", line 173, in '
        "_run_module\nValueError: No start of json char found\n"
    )
    failed = g.migrate_failure({"failed": True, "msg": wrapper, "ansible_job_id": "j1", "finished": 1})
    assert failed["msg"] == (
        "the module ended without a result (its process was killed or died); Ansible's async wrapper: "
        "ValueError: No start of json char found"
    )
    failure = {"task": "Wait for the restore started early on the target, wave1", "result": failed}
    put_back = {"groups": {"a": {"ok": True, "source_states": {"a": "running"}}}}
    undone = {"groups": {"a": {"target_cleanup": "done"}, "b": {"target_cleanup": "done"}}}
    a, b = g.migrate_wave_results(wave, source=source, failure=failure, put_back=put_back, undone=undone)
    assert a["status"] == "failed" and a["phase"] == "capture" and a["error"] == f"Stop and capture a: {withdrawn}"
    assert a["source_state_after"] == "running" and a["target_cleanup"] == "done"
    assert b["status"] == "failed" and b["error"].startswith("Wait for the restore started early on the target")
    assert "killed or died" in b["error"] and "Traceback" not in b["error"]
    assert g.migrate_failure({"msg": "rsync: connection refused"}) == {"msg": "rsync: connection refused"}


def test_created_by_group():
    out = {"a": {"ok": True, "created": {"a": {"container": "a"}}}, "b": {"ok": False}}
    assert g.migrate_created(out) == {"a": {"a": {"container": "a"}}, "b": {}}


def test_expected_bytes_count_the_image_only_when_no_layer_is_on_the_target():
    sizes = {"rw_bytes": 100, "image_bytes": 1000, "volume_bytes": 900}
    assert g.expected_bytes({"entry": {"sizes": sizes}, "exclude_layers": []}) == 2000
    assert g.expected_bytes({"entry": {"sizes": sizes}, "exclude_layers": ["l1"]}) == 1000
    assert g.expected_bytes({"entry": {}}) == 0
    (group,) = plan(item("web", entry={"sizes": sizes, "port_map": {}}, exclude_layers=[]))
    assert group["source_members"][0]["expected_bytes"] == 2000


def test_what_the_target_engine_does_not_carry_reaches_the_queue_and_the_report():
    ignored = ["Healthcheck.StartInterval (2s): Docker 20.10.24 (API 1.41) on host h2 ignores it"]
    probe = g.migrate_probe_items([{"container": "web"}, {"container": "db"}], PROBES, "h1", ["h1", "h2"], DEFAULTS)
    refused = "container db: HostConfig.Mounts[/data].VolumeOptions.Subpath (sub): Docker 20.10.24 would ignore it"
    out = g.migrate_probe_decide(
        probe, on_h2(preflight(not_carried_over=ignored), preflight(problems=[refused], not_carried_over=[])), [], "h1"
    )
    (web,) = out["todo"]
    assert web["not_carried_over"] == ignored
    (check,) = g.migrate_check_results([web])
    assert check["status"] == "would_migrate" and check["not_carried_over"] == ignored
    (db,) = out["results"]
    assert db["status"] == "failed" and "VolumeOptions.Subpath" in db["error"] and db["not_carried_over"] == []
    # an older preflight result without the key: an empty list, never a missing key
    out = g.migrate_probe_decide(probe, on_h2(preflight(), preflight()), [], "h1")
    assert [item["not_carried_over"] for item in out["todo"]] == [[], []]


def test_groups_sent_with_their_capture_are_neither_sent_nor_journaled_again():
    (wave,) = g.migrate_waves(plan(item("a"), item("b"), item("c")), parallel=4)
    source = {
        "groups": {
            "a": {"ok": True, "sent": True, "sent_bytes": 900, "members": {"a": {"bytes_captured": 7}}},
            "b": {"ok": False, "phase": "transfer", "msg": "rsync exit 11", "target_touched": True},
            "c": {"ok": True, "members": {"c": {"bytes_captured": 9}}},
        }
    }
    assert [t["group"] for t in g.migrate_wave_pick(wave, "transfers", source)] == ["c"]
    assert [t["group"] for t in g.migrate_wave_pick(wave, "transfers", source, transfer="controller")] == ["a", "c"]
    assert g.migrate_wave_pick(wave, "guard_entries", source) == [{"name": "c"}]
    (left,) = g.migrate_wave_pick(wave, "failed_after_send", source)
    assert left["id"] == "b" and left["members"][0]["received"].endswith("/b")
    undone = {"groups": {"b": {"target_cleanup": "failed: /in/run1-h1-b (permission denied)"}}}
    a, b, c = g.migrate_wave_results(wave, source=source, sent={"c": 50}, undone=undone)
    assert (a["bytes_sent"], c["bytes_sent"]) == (900, 50)
    assert b["status"] == "failed" and b["phase"] == "transfer" and "permission denied" in b["target_cleanup"]


def test_each_target_checks_its_own_containers_in_one_task_and_each_gets_its_own_answer():
    items = [{"container": "web"}, {"container": "db", "target": "h3"}, {"container": "web2", "target": "h2"}]
    plan_ = {"probes": dict(PROBES["probes"], web2=PROBES["probes"]["web"]), "architecture": "x86_64"}
    probe = g.migrate_probe_items(items, plan_, "h1", ["h1", "h2", "h3"], DEFAULTS)
    options = {"create_bind_paths": False, "mode": "export", "dest": "/in", "programs": ["rsync"]}
    web, web2 = g.migrate_preflight_checks(probe["check"], plan_, "h2", options)
    assert (web["name"], web2["name"], web["image"]) == ("web", "web2", "ferry-migrate/web:latest")
    assert web["run_config"] == {"env": ["SECRET=x"]} and web["architecture"] == "x86_64"
    assert web["layers"] == [] and web["programs"] == ["rsync"] and web["create_bind_paths"] is False
    assert web["required_bytes"] == web["docker_required_bytes"] > 0 and web["allow_privileged"] is True
    assert g.migrate_preflight_checks(probe["check"], plan_, "h2", dict(options, mode="commit"))[0]["layers"] == [
        "l1",
        "l2",
    ]
    (db,) = g.migrate_preflight_checks(probe["check"], plan_, "h3", options)
    assert db["name"] == "db2"
    # h2 answers both of its checks in order; h3 cannot be reached
    answers = on_h2(preflight(), preflight(problems=["port 80 is taken on h2"]))
    answers.append({"__migrate_target": "h3", "unreachable": True, "msg": "timed out"})
    out = g.migrate_probe_decide(probe, answers, [], "h1")
    assert [item["container"] for item in out["todo"]] == ["web"]
    errors = {entry["container"]: entry["error"] for entry in out["results"]}
    assert "cannot reach h3: timed out" in errors["db"] and "port 80 is taken" in errors["web2"]


def volumes_item(name, **extra):
    modes = {
        "big": {"kind": "plain", "detail": "local", "bytes": 10**9, "labels": {"k": "v"}},
        "small": {"kind": "plain", "detail": "local", "bytes": 10},
        "nfs": {"kind": "network", "detail": "local, type nfs", "bytes": 10**9},
    }
    entry = dict(item(name)["entry"], volume_modes=modes)
    return item(name, has_volumes=True, volumes=["big", "small", "nfs"], entry=entry, **extra)


def volume_waves(strategy, keep_bundle=False, consistency="stop"):
    options = {"strategy": strategy, "min_bytes": 1000, "keep_bundle": keep_bundle, "consistency": consistency}
    groups = g.migrate_groups([volumes_item("a")], "run1", "h1", "/w", "/in", options)
    return g.migrate_waves(groups, parallel=4)


@pytest.mark.parametrize("strategy, choice", [("precopy", "precopy"), ("stop", "stream")])
def test_a_big_plain_volume_goes_straight_to_the_target_with_either_strategy(strategy, choice):
    (wave,) = volume_waves(strategy)
    choices = {v["name"]: v["choice"] for v in wave["source_groups"][0]["members"][0]["volumes"]}
    assert choices == {"big": choice, "small": "copy", "nfs": "skip"}
    # the target prepares the volume either way (what it takes of each volume: not how the source moves it)
    (prepare,) = g.migrate_precopy_pick(wave, "prepare")
    assert prepare["volumes"] == [{"name": "big", "container": "a", "labels": {"k": "v"}}]
    prepared = {"groups": {"a": {"ok": True, "volumes": {"big": {"mountpoint": "/t/big"}}}}}
    source = g.migrate_precopy_pick(wave, "source", prepared)
    precopied = (
        {"groups": {"a": {"ok": True, "volumes": {"big": {"choice": "precopy", "attributes_since": 123.5}}}}}
        if source
        else {}
    )
    if strategy == "stop":  # no live pass and nothing to digest early: the volume moves in the capture
        assert source == [] and g.migrate_precopy_pick(wave, "hash", prepared, precopied) == []
    else:
        assert [grp["id"] for grp in source] == ["a"]
        assert g.migrate_precopy_pick(wave, "hash", prepared, precopied)[0]["volumes"][0]["name"] == "big"
    (capture,) = g.migrate_precopy_pick(wave, "capture", prepared, precopied)
    assert capture["precopy"]["volumes"] == {"big": {"mountpoint": "/t/big"}}
    # when the last live pass began: the capture's last delta carries ACLs and xattrs of what changed since
    assert capture["precopy"]["attributes_since"] == ({} if strategy == "stop" else {"big": 123.5})
    # the target checks the digest of either kind before use
    captured = {"members": {"a": {"volumes": {"big": {"choice": choice, "digest": "d1", "entries": 4}}}}}
    (member,) = g.migrate_with_image_ids(wave["groups"][0]["target_members"], captured)
    assert member["precopied"] == {"big": {"digest": "d1", "entries": 4}}


def test_keep_bundle_puts_every_copied_volume_in_the_bundle():
    for strategy in ("precopy", "stop"):
        (wave,) = volume_waves(strategy, keep_bundle=True)
        choices = {v["name"]: v["choice"] for v in wave["source_groups"][0]["members"][0]["volumes"]}
        assert choices == {"big": "copy", "small": "copy", "nfs": "skip"}
        assert g.migrate_precopy_pick(wave, "prepare") == []


def test_consistency_pause_prepares_nothing_on_the_target():
    # each volume is read while its container is paused, into the bundle: a volume the target made for a direct
    # copy would only be filled through the slower path for a volume that already exists
    for strategy in ("precopy", "stop"):
        (wave,) = volume_waves(strategy, consistency="pause")
        volumes = wave["source_groups"][0]["members"][0]["volumes"]
        assert {v["name"]: v["choice"] for v in volumes} == {"big": "copy", "small": "copy", "nfs": "skip"}
        assert "migrate_consistency is pause" in volumes[0]["reason"]
        assert g.migrate_precopy_pick(wave, "prepare") == []


def test_the_early_restore_waits_for_the_groups_the_capture_hands_off_with_their_prepared_volumes():
    groups = g.migrate_groups(
        [volumes_item("a"), volumes_item("b"), item("c")],
        "run1",
        "h1",
        "/w",
        "/in",
        {"strategy": "precopy", "min_bytes": 1000},
    )
    (wave,) = g.migrate_waves(groups, parallel=4)
    prepared = {
        "groups": {
            "a": {"ok": True, "volumes": {"big": {"mountpoint": "/t/big"}}},
            "b": {"ok": False, "msg": "disk full"},  # never captured: the restore must not wait for it
        }
    }
    early = g.migrate_precopy_pick(wave, "early", prepared, {})
    assert [grp["id"] for grp in early["groups"]] == ["a", "c"]
    (member,) = early["groups"][0]["members"]
    assert (member["image_id"], member["image_streamed"], member["precopied"]) == ("", "", {})
    assert member["received"] == "/in/run1-h1-a/a"
    assert early["volumes"] == {"a": {"big": {"mountpoint": "/t/big"}}}
    # a capture that failed and could not say so: the controller lets the restore go of that group only
    source = {"groups": {"a": {"ok": False, "let_go": True}, "c": {"ok": False}}}
    assert g.migrate_wave_pick(wave, "not_handed_off", source) == ["/in/run1-h1-c.cancel"]
    assert g.migrate_wave_pick(wave, "cancel_files") == [f"/in/run1-h1-{x}.cancel" for x in ("a", "b", "c")]


def test_the_report_says_whether_the_restore_took_the_captures_handoff():
    (wave,) = g.migrate_waves(plan(item("a"), item("b")), parallel=4)
    source = {
        "groups": {
            "a": dict(SOURCE, ok=True, handed_off=True, members={"a": {"bytes_captured": 10}}),
            "b": dict(SOURCE, ok=True, members={"b": {"bytes_captured": 10}}),
        }
    }
    target = {"groups": {"a": dict(TARGET, ok=True), "b": dict(TARGET, ok=True)}}
    entries = g.migrate_wave_results(wave, source=source, target=target, started_at=1, ended_at=2)
    assert {e["container"]: e["early_restore"] for e in entries} == {"a": True, "b": False}
    assert {e["container"]: e["handoff_note"] for e in entries} == {"a": "", "b": ""}
    # the write failed, but withdrawing it found that the restore had taken the handoff: the report says so
    source["groups"]["a"]["handoff_note"] = "writing the handoff failed, but the restore had taken it"
    entries = g.migrate_wave_results(wave, source=source, target=target, started_at=1, ended_at=2)
    assert entries[0]["handoff_note"].endswith("the restore had taken it") and entries[0]["early_restore"]
    # the image its capture committed on the source stayed there: named, and still a migration
    assert [e["image_note"] for e in entries] == ["", ""]
    source["groups"]["b"]["members"]["b"]["image_note"] = (
        "the committed image ferry-migrate/b:latest could not be removed"
    )
    entries = g.migrate_wave_results(wave, source=source, target=target, started_at=1, ended_at=2)
    assert entries[1]["image_note"].startswith("the committed image") and entries[1]["status"] == "migrated"


def test_the_report_says_which_volume_digests_the_target_began_before_the_handoff():
    (wave,) = volume_waves("stop")
    captured = {"big": {"choice": "stream", "digest": "d1", "entries": 4}, "small": {"choice": "copy"}}
    source = {"groups": {"a": dict(SOURCE, ok=True, handed_off=True, members={"a": {"volumes": captured}})}}
    for early, said in ((["big"], True), ([], False)):
        target = {"groups": {"a": dict(TARGET, ok=True, early_digests=early)}}
        (entry,) = g.migrate_wave_results(wave, source=source, target=target, started_at=1, ended_at=2)
        volumes = {v["name"]: v for v in entry["volumes"]}
        assert volumes["big"]["digest_started_early"] is said
        # only a volume whose digest the target checked has the field
        assert "digest_started_early" not in volumes["small"] and "digest_started_early" not in volumes["nfs"]


def test_the_report_says_how_the_target_read_each_volume_for_its_check():
    (wave,) = volume_waves("stop")
    captured = {"big": {"choice": "stream", "digest": "d1", "entries": 4}, "small": {"choice": "copy"}}
    source = {"groups": {"a": dict(SOURCE, ok=True, handed_off=True, members={"a": {"volumes": captured}})}}
    for checks, key, value in (
        ({"big": {"listed_paths": 7}}, "digest_listed_paths", 7),
        ({"big": {"walked": "a file has several names"}}, "digest_walked_whole", "a file has several names"),
    ):
        target = {"groups": {"a": dict(TARGET, ok=True, early_digests=["big"], digest_checks=checks)}}
        (entry,) = g.migrate_wave_results(wave, source=source, target=target, started_at=1, ended_at=2)
        volumes = {v["name"]: v for v in entry["volumes"]}
        assert volumes["big"][key] == value
        assert not {"digest_listed_paths", "digest_walked_whole"} & (set(volumes["big"]) - {key})
        assert "digest_listed_paths" not in volumes["small"] and "digest_walked_whole" not in volumes["small"]
