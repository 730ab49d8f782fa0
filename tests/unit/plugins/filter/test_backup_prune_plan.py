# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""GFS retention over synthetic timelines of bundle names."""

from __future__ import annotations

import datetime

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.filter.backup_prune_plan import (
    FilterModule,
    backup_prune_plan,
    parse_timestamp,
)

UTC = datetime.timezone.utc
FMT = "%Y%m%dT%H%M%SZ"


def name(*args):
    return datetime.datetime(*args, tzinfo=UTC).strftime(FMT)


def hourly(start, hours):
    """One bundle every hour from start, as names."""
    return [(start + datetime.timedelta(hours=h)).strftime(FMT) for h in range(hours)]


def daily(start, days, hour=3):
    """One bundle a day at hour from start (a date), as names."""
    return [
        datetime.datetime(start.year, start.month, start.day, hour, tzinfo=UTC) + datetime.timedelta(days=d)
        for d in range(days)
    ]


def names_of(datetimes):
    return [d.strftime(FMT) for d in datetimes]


def test_registered_as_a_filter():
    assert FilterModule().filters()["backup_prune_plan"] is backup_prune_plan


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("20261130T052900Z", True),
        ("20260229T000000Z", False),  # 2026 is not a leap year
        ("20261330T000000Z", False),
        ("20261130T052900", False),
        ("latest", False),
        ("20261130T052900Z.tmp", False),
    ],
)
def test_parse_timestamp(text, valid):
    assert (parse_timestamp(text) is not None) is valid


def test_no_rule_keeps_everything():
    bundles = names_of(daily(datetime.date(2026, 1, 1), 40))
    plan = backup_prune_plan(bundles)
    assert plan["prune"] == []
    assert plan["keep"] == sorted(bundles, reverse=True)
    assert plan["reasons"][bundles[0]] == ["all"]


@pytest.mark.parametrize("keep_last", [1, 2, 7, 50])
def test_keep_last(keep_last):
    bundles = names_of(daily(datetime.date(2026, 1, 1), 10))
    plan = backup_prune_plan(bundles, keep_last=keep_last)
    assert plan["keep"] == sorted(bundles, reverse=True)[:keep_last]
    assert set(plan["prune"]) == set(bundles) - set(plan["keep"])


def test_keep_daily_takes_the_newest_of_each_day():
    # Four bundles a day for ten days: the daily rule keeps the 21:00 bundle of the last 3 days.
    bundles = hourly(datetime.datetime(2026, 3, 1, 3, tzinfo=UTC), 24 * 10)
    bundles = [b for b in bundles if b[9:11] in ("03", "09", "15", "21")]
    plan = backup_prune_plan(bundles, keep_daily=3)
    assert plan["keep"] == ["20260310T210000Z", "20260309T210000Z", "20260308T210000Z"]


def test_keep_daily_counts_days_with_bundles_not_calendar_days():
    bundles = [name(2026, 1, 1, 1), name(2026, 1, 5, 1), name(2026, 1, 20, 1)]
    plan = backup_prune_plan(bundles, keep_daily=2)
    assert plan["keep"] == [name(2026, 1, 20, 1), name(2026, 1, 5, 1)]
    assert plan["prune"] == [name(2026, 1, 1, 1)]


def test_keep_weekly_uses_iso_weeks():
    # 2026-01-04 is a Sunday (ISO week 1), 2026-01-05 a Monday (week 2).
    bundles = [name(2026, 1, 3, 12), name(2026, 1, 4, 12), name(2026, 1, 5, 12), name(2026, 1, 6, 12)]
    plan = backup_prune_plan(bundles, keep_weekly=2)
    assert plan["keep"] == [name(2026, 1, 6, 12), name(2026, 1, 4, 12)]


def test_keep_weekly_across_a_year_boundary():
    # 2026-12-31 (Thursday) and 2027-01-01 (Friday) are both in ISO week 53 of 2026.
    bundles = [name(2026, 12, 24, 1), name(2026, 12, 31, 1), name(2027, 1, 1, 1)]
    plan = backup_prune_plan(bundles, keep_weekly=2)
    assert plan["keep"] == [name(2027, 1, 1, 1), name(2026, 12, 24, 1)]


def test_gfs_timeline_of_two_years():
    # One bundle a day at 03:00 for two years; 7 daily, 4 weekly, 12 monthly, 3 yearly.
    bundles = names_of(daily(datetime.date(2025, 1, 1), 730))
    plan = backup_prune_plan(bundles, keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3)
    newest = "20261231T030000Z"
    assert plan["keep"][0] == newest
    daily_kept = [n for n, why in plan["reasons"].items() if "daily" in why]
    assert daily_kept == [f"202612{d:02d}T030000Z" for d in range(31, 24, -1)]
    # Sundays close ISO weeks: 2026-12-27, 20, 13 and the current week's newest (the 31st).
    weekly_kept = sorted((n for n, why in plan["reasons"].items() if "weekly" in why), reverse=True)
    assert weekly_kept == [newest, "20261227T030000Z", "20261220T030000Z", "20261213T030000Z"]
    monthly_kept = sorted((n for n, why in plan["reasons"].items() if "monthly" in why), reverse=True)
    assert monthly_kept[0] == newest
    assert monthly_kept[-1] == "20260131T030000Z"
    assert len(monthly_kept) == 12
    yearly_kept = sorted((n for n, why in plan["reasons"].items() if "yearly" in why), reverse=True)
    assert yearly_kept == [newest, "20251231T030000Z"]
    assert len(plan["keep"]) == len(set(daily_kept + weekly_kept + monthly_kept + yearly_kept))
    assert len(plan["keep"]) + len(plan["prune"]) == 730


def test_max_age_is_a_ceiling_over_the_count_rules():
    bundles = names_of(daily(datetime.date(2026, 1, 1), 60))
    now = datetime.datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()
    plan = backup_prune_plan(bundles, keep_monthly=12, max_age_days=20, now=now)
    # The monthly rule would keep 31 January too; it is older than 20 days, so it goes.
    assert "20260131T030000Z" in plan["prune"]
    assert plan["keep"] == ["20260301T030000Z", "20260228T030000Z"]


def test_max_age_alone_keeps_what_is_younger():
    bundles = names_of(daily(datetime.date(2026, 1, 1), 10))
    now = datetime.datetime(2026, 1, 10, 12, tzinfo=UTC).timestamp()
    plan = backup_prune_plan(bundles, max_age_days=3, now=now)
    assert plan["keep"] == ["20260110T030000Z", "20260109T030000Z", "20260108T030000Z"]


def test_newest_and_protected_survive_every_rule():
    bundles = names_of(daily(datetime.date(2000, 1, 1), 5))
    now = datetime.datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    plan = backup_prune_plan(bundles, keep_last=1, max_age_days=1, now=now, protected=["20000102T030000Z"])
    assert plan["keep"] == ["20000105T030000Z", "20000102T030000Z"]
    assert plan["reasons"]["20000105T030000Z"] == ["newest"]
    assert plan["reasons"]["20000102T030000Z"] == ["protected"]


def test_other_names_are_ignored_never_pruned():
    plan = backup_prune_plan(["latest", "20260101T000000Z", "20260102T000000Z", "notes"], keep_last=1)
    assert plan["ignored"] == ["latest", "notes"]
    assert plan["prune"] == ["20260101T000000Z"]


def test_empty_list():
    assert backup_prune_plan([], keep_last=3) == {"keep": [], "prune": [], "reasons": {}, "ignored": []}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_last": -1}, "keep_last must be 0 or more"),
        ({"keep_daily": "many"}, "keep_daily must be a whole number"),
        ({"keep_weekly": True}, "keep_weekly must be a whole number"),
        ({"max_age_days": 3}, "now (seconds since the epoch) is required"),
        ({"max_age_days": 3, "now": "soon"}, "now must be seconds since the epoch"),
    ],
)
def test_bad_options_fail_with_the_option_named(kwargs, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        backup_prune_plan(["20260101T000000Z"], **kwargs)


def test_not_a_list_fails():
    with pytest.raises(AnsibleFilterError, match="expects a list"):
        backup_prune_plan("20260101T000000Z")


# --- properties over random timelines ---------------------------------------------------------

EPOCH = datetime.datetime(2020, 1, 1, tzinfo=UTC)
timelines = st.lists(st.integers(min_value=0, max_value=6 * 365 * 24 * 3600), max_size=80).map(
    lambda offsets: [(EPOCH + datetime.timedelta(seconds=s)).strftime(FMT) for s in offsets]
)
counts = st.integers(min_value=0, max_value=12)


@settings(max_examples=300, deadline=None)
@given(
    bundles=timelines,
    last=counts,
    daily_n=counts,
    weekly=counts,
    monthly=counts,
    yearly=counts,
    max_age=st.integers(min_value=0, max_value=3000),
    data=st.data(),
)
def test_properties(bundles, last, daily_n, weekly, monthly, yearly, max_age, data):
    protected = data.draw(st.lists(st.sampled_from(bundles), max_size=2)) if bundles else []
    now = (EPOCH + datetime.timedelta(days=6 * 365)).timestamp()
    plan = backup_prune_plan(
        bundles,
        keep_last=last,
        keep_daily=daily_n,
        keep_weekly=weekly,
        keep_monthly=monthly,
        keep_yearly=yearly,
        max_age_days=max_age,
        now=now,
        protected=protected,
    )
    keep, prune = set(plan["keep"]), set(plan["prune"])
    # Every bundle is decided exactly once.
    assert keep | prune == set(bundles)
    assert not keep & prune
    # Never the newest bundle, never a protected one (such as latest's target).
    if bundles:
        assert max(bundles) in keep
    assert set(protected) <= keep
    # Each count rule keeps at most its count, so the kept set is bounded by their union.
    for rule, count in (("last", last), ("daily", daily_n), ("weekly", weekly), ("monthly", monthly)):
        assert sum(rule in why for why in plan["reasons"].values()) <= count
    assert sum("yearly" in why for why in plan["reasons"].values()) <= yearly
    if any((last, daily_n, weekly, monthly, yearly)):
        assert len(keep) <= last + daily_n + weekly + monthly + yearly + 1 + len(set(protected))
    # keep_last keeps exactly the newest ones (unless the age ceiling removes them).
    if not max_age:
        assert set(sorted(set(bundles), reverse=True)[:last]) <= keep
    # Nothing older than the ceiling is kept except the newest and the protected.
    if max_age and bundles:
        cutoff = datetime.datetime.fromtimestamp(now, tz=UTC) - datetime.timedelta(days=max_age)
        for kept in keep - set(protected) - {max(bundles)}:
            assert parse_timestamp(kept) >= cutoff
    # Every kept bundle carries a reason.
    assert all(plan["reasons"][k] for k in keep)
