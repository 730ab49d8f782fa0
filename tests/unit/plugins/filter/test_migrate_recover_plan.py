# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""recover.yml's plan from the unfinished runs a source host journals."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.filter.migrate_recover_plan import FilterModule, migrate_recover_plan


def run(run_id, guard="fired", alive=False, **containers):
    return {
        "run_id": run_id,
        "guard": guard,
        "guard_alive": alive,
        "keys": [{"host": "h2", "user": "ferry", "comment": f"ferry.docker migrate {run_id} from h1"}],
        "open": sorted(name for name, entry in containers.items() if entry["status"] != "migrated"),
        "containers": containers,
    }


LISTED = [
    run(
        "r1",
        web={
            "phase": "health",
            "status": "needs_decision",
            "state_before": "running",
            "target": "h2",
            "target_name": "web2",
            "target_volumes": ["data"],
        },
        db={"phase": "cutover", "status": "migrated", "state_before": "running", "target": "h2", "target_name": "db"},
        job={"phase": "capture", "status": "in_progress", "state_before": "paused", "target": "h9"},
    ),
    run("r2", guard="armed", alive=True, web={"phase": "stop", "status": "in_progress", "target": "h2"}),
    {"run_id": "broken", "error": "not valid JSON"},
]


def test_registered():
    assert FilterModule().filters()["migrate_recover_plan"] is migrate_recover_plan


def test_open_containers_of_lost_runs_only():
    plan = migrate_recover_plan(LISTED, hostvars={"h2": {}})
    assert plan["runs"] == ["r1"] and plan["in_progress"] == ["r2"]
    assert plan["unreadable"] == [{"run_id": "broken", "error": "not valid JSON"}]
    assert [c["container"] for c in plan["containers"]] == ["job", "web"]
    job, web = plan["containers"]
    assert web == {
        "run_id": "r1",
        "container": "web",
        "state_before": "running",
        "phase": "health",
        "target": "h2",
        "target_name": "web2",
        "target_volumes": ["data"],
        "target_known": True,
        "target_may_run": True,
        "guard_entry": {"name": "web"},
    }
    assert job["target_may_run"] is False and job["target_known"] is False and job["target_name"] == "job"
    # the keys of the runs to recover only (r2's guard still runs and removes its own)
    assert plan["keys"] == [
        {
            "run_id": "r1",
            "host": "h2",
            "user": "ferry",
            "comment": "ferry.docker migrate r1 from h1",
            "target_known": True,
        }
    ]


def test_selected_runs():
    assert migrate_recover_plan(LISTED, runs=["r2"])["containers"] == []
    with pytest.raises(AnsibleFilterError, match="no unfinished journal on this host: r7"):
        migrate_recover_plan(LISTED, runs=["r7"])
