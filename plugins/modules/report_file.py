#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: report_file
short_description: Write a run's JSON report to a file on the controller
version_added: 0.1.0
description:
  - Writes O(content) as JSON (indented, keys sorted, as C(to_nice_json) writes it) to O(path) on the
    Ansible controller, whatever host the task runs for.
  - Like M(ansible.builtin.debug), it runs only on the controller, in Ansible's own process. No module is
    started and no connection is opened.
  - The directories made for the report are C(0700) and the file is C(0600). The file is written beside
    O(path) and renamed over it, so a reader sees the previous report or the new one, never part of one.
  - A report is the run's output, not a managed state. Writing it is never reported as a change, and it is
    written in check mode too (then it says what a run would do).
  - The migrate role writes its run report with it.
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the task run on the controller.
    support: full
    details:
      - All of it runs on the controller.
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Writes the report in check mode too; it changes nothing that Ansible manages.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: full
options:
  path:
    description:
      - Absolute path of the report on the controller. Missing directories are made, C(0700).
    type: path
    required: true
  content:
    description:
      - The report, a mapping or a list.
    type: raw
    required: true
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Write the run report on the controller
  ferry.docker.report_file:
    path: "{{ playbook_dir }}/migrate-report.json"
    content:
      status: ok
      containers: "{{ results }}"
  run_once: true
"""

RETURN = r"""
path:
  description: Where the report was written.
  type: str
  returned: always
  sample: /srv/ansible/migrate-report.json
"""
