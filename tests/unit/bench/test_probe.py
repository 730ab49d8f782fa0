# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Row 11's client probe: the outage is the longest gap between acknowledged writes, and ``gap`` says what the
client saw during it, per host and in order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.rows_migrate import Probe  # noqa: E402  (the repository's root first)


@pytest.fixture(name="probe")
def fixture_probe():
    return Probe([("host1", "192.0.2.1", 1), ("host2", "192.0.2.2", 1)], "t")


def test_the_outage_is_the_longest_gap_between_acknowledged_writes(probe):
    probe.acked = [(10.0, "a"), (10.1, "b"), (12.0, "c"), (12.1, "d")]
    assert probe.outage() == pytest.approx(1.9)
    assert probe.written() == 4 * len(probe.value)


def test_the_gap_groups_each_hosts_failures_in_order_and_only_inside_the_longest_gap(probe):
    probe.acked = [(10.0, "a"), (10.1, "b"), (12.0, "c")]
    probe.attempts = [
        (10.05, 10.06, "host2", "ConnectionRefusedError"),  # before the longest gap: left out
        (10.2, 10.201, "host1", "ConnectionRefusedError"),
        (10.201, 10.202, "host2", "ConnectionRefusedError"),
        (10.3, 10.301, "host1", "ConnectionRefusedError"),
        (10.301, 10.302, "host2", "ConnectionRefusedError"),
        (10.5, 10.8, "host2", "TimeoutError"),
        (10.8, 10.801, "host1", "ConnectionRefusedError"),
        (10.9, 11.2, "host2", "TimeoutError"),
        (11.3, 11.31, "host2", "-LOADING"),
        (12.5, 12.6, "host1", "ConnectionRefusedError"),  # after it: left out
    ]
    assert probe.gap() == [
        ["host1", "ConnectionRefusedError", 0.1, 0.701, 3],
        ["host2", "ConnectionRefusedError", 0.101, 0.202, 2],
        ["host2", "TimeoutError", 0.4, 1.1, 2],
        ["host2", "-LOADING", 1.2, 1.21, 1],
    ]


def test_no_gap_without_two_acknowledged_writes(probe):
    probe.acked = [(10.0, "a")]
    probe.attempts = [(10.2, 10.3, "host2", "TimeoutError")]
    assert probe.gap() == [] and probe.outage() == 0.0
