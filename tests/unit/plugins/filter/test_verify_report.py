# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The verify_report filter (the shaping itself: test_verify.py)."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.filter.verify_report import FilterModule, verify_report


def test_the_report_is_json_and_names_the_failure():
    records = [
        {"container": "redis", "marks": [["check", 10], ["restore", 11], ["cleanup", 15]], "finished": 16},
        {
            "container": "pg",
            "marks": [["check", 16], ["cleanup", 17]],
            "finished": 18,
            "error": {"task": "Check the bundle of pg", "msg": "bundle /b is damaged: volume artifact data: sha256"},
        },
    ]
    report = FilterModule().filters()["verify_report"](records, started=10, finished=18)
    assert json.loads(json.dumps(report)) == report
    assert (report["status"], report["passed"], report["failed"], report["duration"]) == ("fail", 1, 1, 8.0)
    redis, pg = report["drills"]
    assert redis["status"] == "pass" and redis["timings"] == {"check": 1, "restore": 4, "cleanup": 1, "total": 6}
    assert pg["failed_step"] == "check"
    assert pg["reason"].startswith("the bundle failed its check (task: Check the bundle of pg): bundle /b is damaged")


@pytest.mark.parametrize("records", [None, "x", [1]])
def test_bad_input(records):
    with pytest.raises(AnsibleFilterError, match="list of drill records"):
        verify_report(records)
