# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup role's Prometheus textfile, parsed back with prometheus_client's own text parser."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.ferry.docker.plugins.filter.backup_metrics_text import FilterModule, backup_metrics_text

T1 = 1764480000
T2 = 1764566400


def samples(text):
    """{(metric name, container): value}, through the official parser (which rejects malformed text)."""
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        assert family.documentation
        for sample in family.samples:
            assert set(sample.labels) == {"container"}
            found[(sample.name, sample.labels["container"])] = sample.value
    return found


def test_registered():
    assert FilterModule().filters()["backup_metrics_text"] is backup_metrics_text


def test_one_run():
    text = backup_metrics_text(
        [
            {"container": "web", "status": "ok", "bytes": "2048", "duration": "1.5"},
            {"container": "db", "status": "failed", "bytes": 0, "duration": 0.25},
        ],
        timestamp=T1,
    )
    assert text.endswith("\n")
    got = samples(text)
    assert got[("ferry_backup_last_success_timestamp_seconds", "web")] == T1
    assert ("ferry_backup_last_success_timestamp_seconds", "db") not in got
    assert got[("ferry_backup_last_run_success", "web")] == 1
    assert got[("ferry_backup_last_run_success", "db")] == 0
    assert got[("ferry_backup_last_run_bytes", "web")] == 2048
    assert got[("ferry_backup_last_run_duration_seconds", "db")] == 0.25
    assert got[("ferry_backup_last_run_timestamp_seconds", "db")] == T1


def test_a_failed_run_keeps_the_last_success_time_and_other_containers():
    first = backup_metrics_text(
        [{"container": "web", "status": "ok", "bytes": 10, "duration": 1}, {"container": "old", "status": "ok"}],
        timestamp=T1,
    )
    second = backup_metrics_text([{"container": "web", "status": "failed", "bytes": 0, "duration": 2}], T2, first)
    got = samples(second)
    assert got[("ferry_backup_last_success_timestamp_seconds", "web")] == T1
    assert got[("ferry_backup_last_run_timestamp_seconds", "web")] == T2
    assert got[("ferry_backup_last_run_success", "web")] == 0
    assert got[("ferry_backup_last_success_timestamp_seconds", "old")] == T1


def test_each_metric_family_once_with_help_and_type():
    text = backup_metrics_text([{"container": "a", "status": "ok"}, {"container": "b", "status": "ok"}], T1)
    assert text.count("# TYPE ferry_backup_last_run_bytes gauge") == 1
    assert len(list(text_string_to_metric_families(text))) == 5


@pytest.mark.parametrize(
    ("results", "timestamp", "message"),
    [
        ("web", T1, "expects the list"),
        ([{"status": "ok"}], T1, "needs a container"),
        ([{"container": "a", "bytes": "lots"}], T1, "bytes of a must be a number"),
        ([{"container": "a"}], "now", "timestamp must be a number"),
        ([{"container": "a", "duration": float("nan")}], T1, "finite"),
    ],
)
def test_bad_input(results, timestamp, message):
    with pytest.raises(AnsibleFilterError, match=message):
        backup_metrics_text(results, timestamp)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "container": st.text(min_size=1, max_size=20).filter(lambda s: "\r" not in s),
                "status": st.sampled_from(["ok", "failed"]),
                "bytes": st.integers(min_value=0, max_value=2**50),
                "duration": st.floats(min_value=0, max_value=1e6, allow_nan=False),
            }
        ),
        max_size=8,
    )
)
def test_any_container_name_round_trips(results):
    """Quotes, backslashes, newlines in names are escaped; the parser reads back every value; a
    second run that reads the first file keeps every container."""
    text = backup_metrics_text(results, T1)
    got = samples(text)
    last = {r["container"]: r for r in results}
    for name, result in last.items():
        assert got[("ferry_backup_last_run_bytes", name)] == result["bytes"]
        assert got[("ferry_backup_last_run_success", name)] == (1 if result["status"] == "ok" else 0)
    again = samples(backup_metrics_text([], T2, text))
    assert again == got
