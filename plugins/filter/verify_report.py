# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: verify_report
short_description: The JSON report of restore drills, from what the verify role recorded
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - Turns the records of the C(ferry.docker.verify) role, one per drill, into its report - per drill
    C(pass) or C(fail), the step that failed and the reason in a sentence, the seconds each step took,
    the scratch names and what the drill changed from the recorded container.
  - A drill whose clean-up left something behind fails, naming what is left.
  - A drill in check mode only checked its bundle; it is C(checked) unless that check failed.
  - The run's C(status) is C(pass) only when there was at least one drill and none failed.
positional: _input
options:
  _input:
    description:
      - One record per drill with C(container), C(target), C(bundle_host), C(bundle), C(marks) (a list of
        C([step, epoch seconds]) pairs, in order, each marking the start of a step), C(finished)
        (epoch seconds), C(error) (C(task) and C(msg), empty when it passed), C(log_tail), C(cleanup)
        (one C({kind, name, result}) per removal, C(result) the registered task result, or a registered
        loop item with C(kind) added), C(plan) (from P(ferry.docker.verify_scratch_plan#filter), without
        its run config), C(check_mode), C(deep), C(check), C(health) and C(command).
    type: list
    elements: dict
    required: true
  started:
    description: Epoch seconds the run started; adds C(started) and C(duration) to the report.
    type: float
  finished:
    description: Epoch seconds the run ended.
    type: float
"""

EXAMPLES = r"""
- name: Write the drill report
  ansible.builtin.copy:
    content: "{{ records | ferry.docker.verify_report(started=run_started, finished=run_ended) | to_nice_json }}"
    dest: /var/lib/ferry/verify-report.json
    mode: "0600"
"""

RETURN = r"""
_value:
  description: The report.
  type: dict
  contains:
    status:
      description: C(pass) or C(fail).
      type: str
    passed:
      description: Number of drills that passed.
      type: int
    failed:
      description: Number of drills that failed.
      type: int
    drills:
      description:
        - One entry per drill with C(container), C(target), C(bundle_host), C(bundle),
          C(status) (C(pass), C(fail) or C(checked)), C(failed_step), C(reason), C(log_tail), C(deep),
          C(check), C(health), C(command),
          C(timings) (seconds per step and C(total)), C(scratch), C(changes) and C(leftovers).
      type: list
      elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.module_utils._verify import drill_report


def verify_report(records, started=None, finished=None):
    """The drill report (see ``_verify.drill_report``)."""
    if not isinstance(records, (list, tuple)) or not all(isinstance(r, dict) for r in records):
        raise AnsibleFilterError("verify_report: the input must be a list of drill records (mappings)")
    return drill_report(records, started, finished)


class FilterModule:
    """ferry.docker restore drill report filter."""

    def filters(self):
        return {"verify_report": verify_report}
