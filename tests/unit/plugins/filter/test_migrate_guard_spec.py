# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The guard's arming options built from the migrate role's queue."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.filter.migrate_guard_spec import FilterModule, migrate_guard_spec

HOSTVARS = {
    "h2": {"ansible_host": "192.0.2.12", "ansible_port": 2222, "ansible_user": "deploy"},
    "h3": {"ansible_host": "192.0.2.13"},
}
TODO = [
    {"container": "web", "name": "web", "target": "h2", "action": "migrate", "source_state_before": "running"},
    {
        "container": "db",
        "name": "db-new",
        "target": "h3",
        "action": "migrate",
        "source_state_before": "paused",
        "volumes": ["pgdata"],
    },
    {"container": "old", "name": "old", "target": "h2", "action": "cutover", "source_state_before": "running"},
    {"container": "cache", "name": "cache", "target": "h2", "action": "migrate", "source_state_before": "exited"},
]


def test_registered():
    assert FilterModule().filters()["migrate_guard_spec"] is migrate_guard_spec


def test_guards_only_moving_containers_and_reaches_each_target_once():
    spec = migrate_guard_spec(TODO, HOSTVARS, "/k/run", "ferry run", addresses={"h3": "198.51.100.3"})
    assert [c["name"] for c in spec["containers"]] == ["web", "db", "cache"]
    assert spec["containers"][1] == {
        "name": "db",
        "state_before": "paused",
        "target": "h3",
        "target_name": "db-new",
        "target_volumes": ["pgdata"],
        "cutover": "stop",
    }
    assert spec["containers"][0]["target_volumes"] == []
    assert spec["targets"] == [
        {
            "host": "h2",
            "address": "192.0.2.12",
            "port": 2222,
            "user": "deploy",
            "key": "/k/run/id_ed25519",
            "known_hosts": "/k/run/known_hosts",
            "key_comment": "ferry run",
        },
        {
            "host": "h3",
            "address": "198.51.100.3",
            "port": 22,
            "user": "root",
            "key": "/k/run/id_ed25519",
            "known_hosts": "/k/run/known_hosts",
            "key_comment": "ferry run",
        },
    ]


def test_controller_transfer_has_no_key():
    spec = migrate_guard_spec(TODO[:1], HOSTVARS, "/k", "c", transfer="controller")
    assert "key" not in spec["targets"][0] and "key_comment" not in spec["targets"][0]


def test_nothing_to_guard():
    assert migrate_guard_spec(TODO[2:3], HOSTVARS, "/k", "c") == {"containers": [], "targets": []}


@pytest.mark.parametrize(
    "todo, message",
    [
        ([{"container": "web"}], "not a queued container"),
        ([dict(TODO[0], target="h9")], "'h9' is not an inventory host"),
    ],
)
def test_refuses_what_it_cannot_guard(todo, message):
    with pytest.raises(AnsibleFilterError, match=message):
        migrate_guard_spec(todo, HOSTVARS, "/k", "c")


def test_the_login_user_the_run_key_was_authorised_for_wins():
    spec = migrate_guard_spec(TODO[:1], HOSTVARS, "/k", "c", users={"h2": "ferry"})
    assert spec["targets"][0]["user"] == "ferry"
