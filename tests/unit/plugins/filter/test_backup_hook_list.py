# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""backup_hooks read and checked per container and phase."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.filter.backup_hook_list import FilterModule, backup_hook_list

HOOKS = {
    "redis": {
        "pre": [
            {"command": "redis-cli BGSAVE", "timeout": 60},
            {"command": ["sync"], "on_error": "continue", "user": "redis"},
            "echo plain string",
        ],
        "post": [{"command": "echo done"}],
    },
    "db": {"post": [{"command": "psql -c 'SELECT 1'"}]},
}


def test_registered():
    assert FilterModule().filters()["backup_hook_list"] is backup_hook_list


def test_pre_hooks_with_defaults_filled_in():
    assert backup_hook_list(HOOKS, "redis", "pre", timeout=120, on_error="fail") == [
        {"command": "redis-cli BGSAVE", "timeout": 60, "on_error": "fail", "user": None},
        {"command": ["sync"], "timeout": 120, "on_error": "continue", "user": "redis"},
        {"command": "echo plain string", "timeout": 120, "on_error": "fail", "user": None},
    ]


@pytest.mark.parametrize(
    ("hooks", "container", "phase"),
    [(HOOKS, "db", "pre"), (HOOKS, "web", "pre"), ({}, "redis", "post"), (None, "redis", "pre")],
)
def test_nothing_to_run(hooks, container, phase):
    assert backup_hook_list(hooks, container, phase) == []


def test_timeout_as_a_string_from_a_survey():
    assert backup_hook_list({"a": {"pre": [{"command": "x", "timeout": "30"}]}}, "a", "pre")[0]["timeout"] == 30


@pytest.mark.parametrize(
    ("hooks", "phase", "message"),
    [
        ({"a": {"pre": [{"command": "x"}]}}, "during", "phase must be pre or post"),
        (["a"], "pre", "must be a mapping of container name"),
        ({"a": ["x"]}, "pre", "a must be a mapping with pre and/or post"),
        ({"a": {"before": []}}, "pre", "unknown key\\(s\\) before"),
        ({"a": {"pre": "x"}}, "pre", "a.pre must be a list"),
        ({"a": {"pre": [{"cmd": "x"}]}}, "pre", "a.pre\\[0\\] has unknown key\\(s\\) cmd"),
        ({"a": {"pre": [{"timeout": 3}]}}, "pre", "a.pre\\[0\\] has no command"),
        ({"a": {"pre": [{"command": ""}]}}, "pre", "a.pre\\[0\\].command must be a non-empty"),
        ({"a": {"pre": [{"command": [1]}]}}, "pre", "a.pre\\[0\\].command must be"),
        ({"a": {"pre": [{"command": "x", "on_error": "ignore"}]}}, "pre", "on_error must be fail or continue"),
        ({"a": {"pre": [{"command": "x", "timeout": 0}]}}, "pre", "timeout must be a whole number of seconds above 0"),
        ({"a": {"pre": [{"command": "x", "timeout": 1.5}]}}, "pre", "timeout must be a whole number"),
        ({"a": {"pre": [{"command": "x", "timeout": True}]}}, "pre", "timeout must be a whole number"),
        ({"a": {"pre": [{"command": "x", "user": ""}]}}, "pre", "user must be"),
        ({"a": {"pre": [42]}}, "pre", "a.pre\\[0\\] must be a mapping"),
    ],
)
def test_bad_hooks_are_named(hooks, phase, message):
    with pytest.raises(AnsibleFilterError, match=message):
        backup_hook_list(hooks, "a", phase)


def test_bad_defaults():
    with pytest.raises(AnsibleFilterError, match="default on_error"):
        backup_hook_list({}, "a", "pre", on_error="maybe")
    with pytest.raises(AnsibleFilterError, match="backup_hook_timeout"):
        backup_hook_list({}, "a", "pre", timeout=-1)
