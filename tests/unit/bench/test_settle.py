# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The harness waits for a quiet disk before each timed run: two quiet steps in a row, at most its limit."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.harness import SETTLE_BYTES, SETTLE_STEP, settle_disk  # noqa: E402  (the repository's root first)


class Disk:
    """Sectors written per step, then (written so far, in flight) as /proc/diskstats would give them."""

    def __init__(self, per_step, in_flight=None):
        self.per_step, self.in_flight = list(per_step), list(in_flight or [])
        self.written, self.now, self.reads = 0, 0.0, 0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.written += self.per_step.pop(0) if self.per_step else 0

    def activity(self):
        self.reads += 1
        return self.written, self.in_flight.pop(0) if self.in_flight else 0


def test_a_quiet_disk_costs_two_steps():
    disk = Disk([0, 0])
    assert settle_disk(clock=disk.clock, sleep=disk.sleep, activity=disk.activity) == 2 * SETTLE_STEP


def test_it_waits_for_the_writes_to_end_and_for_two_quiet_steps_in_a_row():
    busy = SETTLE_BYTES // 512 * 4  # 4 MiB a step
    disk = Disk([busy, busy, 0, busy, 0, 0])
    assert settle_disk(clock=disk.clock, sleep=disk.sleep, activity=disk.activity) == 6 * SETTLE_STEP


def test_io_in_flight_is_not_quiet():
    disk = Disk([0, 0, 0, 0], in_flight=[0, 3, 0, 0, 0])
    assert settle_disk(clock=disk.clock, sleep=disk.sleep, activity=disk.activity) == 3 * SETTLE_STEP


def test_a_disk_that_never_goes_quiet_costs_the_limit_only():
    disk = Disk([10**6] * 1000)
    assert settle_disk(limit=5, clock=disk.clock, sleep=disk.sleep, activity=disk.activity) == 5.0


def test_the_page_cache_is_dropped_by_writing_1_and_a_refusal_is_named(tmp_path):
    from benchmarks.harness import drop_page_cache

    control = tmp_path / "drop_caches"
    assert drop_page_cache(str(control)) == "" and control.read_text() == "1\n"
    assert drop_page_cache(str(tmp_path / "missing" / "drop_caches")).startswith("the page cache was not dropped")
