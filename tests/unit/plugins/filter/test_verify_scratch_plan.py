# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The verify_scratch_plan filter: the plan of _verify, errors as filter errors (the logic: test_verify.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.filter.verify_scratch_plan import FilterModule, verify_scratch_plan

MANIFEST = {
    "container": {"name": "redis"},
    "run_config": {
        "name": "redis",
        "image": "redis:7",
        "host_config": {"Binds": ["redis-data:/data"], "PortBindings": {"6379/tcp": [{"HostPort": "6379"}]}},
        "networks": {"bridge": {}},
    },
    "artifacts": [{"kind": "volume", "name": "redis-data", "volume": "redis-data", "type": "volume"}],
}


def test_the_filter_returns_the_plan():
    plan = FilterModule().filters()["verify_scratch_plan"](MANIFEST, "r1", prefix="drill")
    assert plan["name"] == "drill-r1-redis"
    assert plan["image"] == "drill/redis:r1"
    assert plan["volume_map"] == {"redis-data": "drill-r1-redis-v1"}
    assert "PortBindings" not in plan["run_config"]["host_config"]


@pytest.mark.parametrize(
    ("manifest", "run", "message"),
    [
        ({}, "r1", "no run_config"),
        (MANIFEST, "Bad Run", "run ID"),
    ],
)
def test_errors_are_filter_errors(manifest, run, message):
    with pytest.raises(AnsibleFilterError, match=f"verify_scratch_plan: .*{message}"):
        verify_scratch_plan(manifest, run)
