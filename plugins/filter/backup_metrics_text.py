# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: backup_metrics_text
short_description: A backup run's results as a Prometheus textfile
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - Turns the per-container results of one run of the C(ferry.docker.backup) role on one host into
    Prometheus text exposition format, for node_exporter's textfile collector.
  - Per container it gives the time of the last successful backup, and the status, bytes and
    duration of the last run.
  - A container whose backup failed in this run keeps the last success time found in O(previous)
    (the file the previous run wrote); containers that are in O(previous) but not in this run are kept as they were.
positional: _input
options:
  _input:
    description: The role's results, each with C(container), C(status) (C(ok) or C(failed)), C(bytes) and C(duration).
    type: list
    elements: dict
    required: true
  timestamp:
    description: When this run started, in seconds since the epoch.
    type: float
    required: true
  previous:
    description: The text of the file the previous run wrote; empty when there is none.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Write the metrics for node_exporter's textfile collector
  ansible.builtin.copy:
    content: "{{ results | ferry.docker.backup_metrics_text(timestamp=run_started) }}"
    dest: /var/lib/prometheus/node-exporter/ferry_backup.prom
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The metrics, in Prometheus text exposition format 0.0.4, ending with a newline.
  type: str
"""

import math
import re

from ansible.errors import AnsibleFilterError

PREFIX = "ferry_backup_"
METRICS = (
    ("last_success_timestamp_seconds", "Unix time of the last successful backup of the container."),
    ("last_run_timestamp_seconds", "Unix time the last backup run of the container started."),
    ("last_run_success", "1 if the last backup run of the container succeeded, else 0."),
    ("last_run_bytes", "Bytes written by the last backup run of the container."),
    ("last_run_duration_seconds", "Seconds the last backup run of the container took."),
)
SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{container="(?P<label>(?:[^"\\]|\\.)*)"\} (?P<value>\S+)$')


def escape_label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def unescape_label(value):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _number(value, what):
    if isinstance(value, bool):
        raise AnsibleFilterError(f"backup_metrics_text: {what} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"backup_metrics_text: {what} must be a number, not {value!r}") from exc
    if math.isnan(number) or math.isinf(number):
        raise AnsibleFilterError(f"backup_metrics_text: {what} must be a finite number, not {value!r}")
    return number


def _format(number):
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def read_previous(text):
    """{metric suffix: {container: value}} from a file this filter wrote; other lines are ignored."""
    values = {}
    # Split on "\n" only: container names may hold other characters str.splitlines() splits on.
    for line in (text or "").split("\n"):
        match = SAMPLE.match(line)
        if not match or not match.group("name").startswith(PREFIX):
            continue
        try:
            number = float(match.group("value"))
        except ValueError:
            continue
        suffix = match.group("name")[len(PREFIX) :]
        values.setdefault(suffix, {})[unescape_label(match.group("label"))] = number
    return values


def backup_metrics_text(results, timestamp, previous=""):
    """The Prometheus textfile for one host's backup run."""
    if not isinstance(results, (list, tuple)):
        raise AnsibleFilterError(f"backup_metrics_text: expects the list of results, got {type(results).__name__}")
    started = _number(timestamp, "timestamp")
    values = {suffix: dict(found) for suffix, found in read_previous(previous).items()}
    for suffix, _help in METRICS:
        values.setdefault(suffix, {})
    for result in results:
        if not isinstance(result, dict) or not result.get("container"):
            raise AnsibleFilterError(f"backup_metrics_text: each result needs a container, got {result!r}")
        name = str(result["container"])
        ok = result.get("status") == "ok"
        values["last_run_timestamp_seconds"][name] = started
        values["last_run_success"][name] = 1 if ok else 0
        values["last_run_bytes"][name] = _number(result.get("bytes", 0) or 0, f"bytes of {name}")
        values["last_run_duration_seconds"][name] = _number(result.get("duration", 0) or 0, f"duration of {name}")
        if ok:
            values["last_success_timestamp_seconds"][name] = started
    lines = []
    for suffix, help_text in METRICS:
        metric = PREFIX + suffix
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} gauge")
        for name in sorted(values[suffix]):
            lines.append(f'{metric}{{container="{escape_label(name)}"}} {_format(values[suffix][name])}')
    return "\n".join(lines) + "\n"


class FilterModule:
    """ferry.docker backup metrics filter."""

    def filters(self):
        return {"backup_metrics_text": backup_metrics_text}
