# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: backup_prune_plan
short_description: Decide which timestamped backup bundles a retention policy keeps and which it prunes
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - Takes the names of a container's bundles (UTC timestamps such as C(20261130T052900Z)) and
    returns which ones to keep, why, and which ones to prune.
  - The count rules (O(keep_last), O(keep_daily), O(keep_weekly), O(keep_monthly), O(keep_yearly))
    add up; a bundle is kept when any of them keeps it. When none is set, every bundle is kept by count.
  - O(keep_daily) keeps the newest bundle of each of the last N days that have a bundle; weekly
    uses ISO weeks, monthly calendar months and yearly calendar years, all in UTC.
  - O(max_age_days) is a ceiling applied after the count rules. A bundle older than that is pruned even
    when a count rule would keep it.
  - The newest bundle and every name in O(protected) are never pruned. Names that are not valid
    timestamps are never pruned either; they are listed under C(ignored).
positional: _input
options:
  _input:
    description: Names of the bundles, in any order.
    type: list
    elements: str
    required: true
  keep_last:
    description: Keep the N newest bundles; V(0) disables the rule.
    type: int
    default: 0
  keep_daily:
    description: Keep the newest bundle of each of the last N days that have one; V(0) disables the rule.
    type: int
    default: 0
  keep_weekly:
    description: Keep the newest bundle of each of the last N ISO weeks that have one; V(0) disables the rule.
    type: int
    default: 0
  keep_monthly:
    description: Keep the newest bundle of each of the last N months that have one; V(0) disables the rule.
    type: int
    default: 0
  keep_yearly:
    description: Keep the newest bundle of each of the last N years that have one; V(0) disables the rule.
    type: int
    default: 0
  max_age_days:
    description: Prune bundles older than this many days before O(now); V(0) disables the ceiling.
    type: int
    default: 0
  now:
    description:
      - The current time, as seconds since the epoch (UTC), for O(max_age_days).
      - Required when O(max_age_days) is set.
    type: float
  protected:
    description: Names never pruned, such as the bundle of this run and the target of C(latest).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Keep 7 daily, 4 weekly and 12 monthly bundles, and never the one latest points to
  ansible.builtin.set_fact:
    plan: >-
      {{ bundle_names | ferry.docker.backup_prune_plan(keep_daily=7, keep_weekly=4, keep_monthly=12,
                                                      protected=[latest_target]) }}

- name: Remove what the plan prunes
  ansible.builtin.file:
    path: "/var/backups/ferry/web/{{ item }}"
    state: absent
  loop: "{{ plan.prune }}"
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    keep:
      description: Names kept, newest first.
      type: list
      elements: str
    prune:
      description: Names to remove, newest first.
      type: list
      elements: str
    reasons:
      description:
        - For each kept name, the rules that keep it, such as C(last), C(daily), C(weekly),
          C(monthly), C(yearly), C(newest), C(protected), or C(all) when no count rule is set.
      type: dict
    ignored:
      description: Names that are not bundle timestamps; neither kept nor pruned.
      type: list
      elements: str
"""

import datetime

from ansible.errors import AnsibleFilterError

TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
RULES = ("last", "daily", "weekly", "monthly", "yearly")


def parse_timestamp(name):
    """The UTC datetime a bundle name stands for, or None when it is not one."""
    if not isinstance(name, str) or len(name) != 16:
        return None
    try:
        return datetime.datetime.strptime(name, TIMESTAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def _bucket(rule, when):
    if rule == "daily":
        return when.date()
    if rule == "weekly":
        return tuple(when.isocalendar())[:2]
    if rule == "monthly":
        return (when.year, when.month)
    if rule == "yearly":
        return when.year
    raise ValueError(rule)


def _count(value, option):
    """A non-negative int from an option value, or an error naming the option."""
    if isinstance(value, bool):
        raise AnsibleFilterError(f"backup_prune_plan: {option} must be a whole number, not {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"backup_prune_plan: {option} must be a whole number, not {value!r}") from exc
    if number < 0:
        raise AnsibleFilterError(f"backup_prune_plan: {option} must be 0 or more, not {number}")
    return number


def backup_prune_plan(
    names,
    keep_last=0,
    keep_daily=0,
    keep_weekly=0,
    keep_monthly=0,
    keep_yearly=0,
    max_age_days=0,
    now=None,
    protected=None,
):
    """Return {keep, prune, reasons, ignored} for the bundle names under the retention rules."""
    if not isinstance(names, (list, tuple)):
        raise AnsibleFilterError(f"backup_prune_plan: expects a list of bundle names, got {type(names).__name__}")
    counts = {
        "last": _count(keep_last, "keep_last"),
        "daily": _count(keep_daily, "keep_daily"),
        "weekly": _count(keep_weekly, "keep_weekly"),
        "monthly": _count(keep_monthly, "keep_monthly"),
        "yearly": _count(keep_yearly, "keep_yearly"),
    }
    max_age = _count(max_age_days, "max_age_days")
    cutoff = None
    if max_age:
        if now is None:
            raise AnsibleFilterError("backup_prune_plan: now (seconds since the epoch) is required with max_age_days")
        try:
            now_dt = datetime.datetime.fromtimestamp(float(now), tz=datetime.timezone.utc)
        except (TypeError, ValueError, OverflowError, OSError) as exc:
            raise AnsibleFilterError(f"backup_prune_plan: now must be seconds since the epoch, not {now!r}") from exc
        cutoff = now_dt - datetime.timedelta(days=max_age)
    protected_names = {str(name) for name in (protected or [])}

    dated = {}
    ignored = []
    for name in names:
        when = parse_timestamp(name)
        if when is None:
            if name not in ignored:
                ignored.append(name)
        else:
            dated[name] = when
    ordered = sorted(dated, key=lambda n: dated[n], reverse=True)

    reasons = {name: [] for name in ordered}
    any_rule = any(counts.values())
    for rule in RULES:
        left = counts[rule]
        if not left:
            continue
        seen = set()
        for name in ordered:
            if not left:
                break
            bucket = name if rule == "last" else _bucket(rule, dated[name])
            if bucket in seen:
                continue
            seen.add(bucket)
            reasons[name].append(rule)
            left -= 1
    if not any_rule:
        for name in ordered:
            reasons[name].append("all")
    if cutoff is not None:
        for name in ordered:
            if dated[name] < cutoff:
                reasons[name] = []
    if ordered:
        reasons[ordered[0]].append("newest")
    for name in ordered:
        if name in protected_names:
            reasons[name].append("protected")

    keep = [name for name in ordered if reasons[name]]
    prune = [name for name in ordered if not reasons[name]]
    return {
        "keep": keep,
        "prune": prune,
        "reasons": {name: reasons[name] for name in keep},
        "ignored": ignored,
    }


class FilterModule:
    """ferry.docker retention filter."""

    def filters(self):
        return {"backup_prune_plan": backup_prune_plan}
