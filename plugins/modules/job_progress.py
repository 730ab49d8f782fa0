#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: job_progress
short_description: Report how far an async job has got, and its result once it has ended
version_added: 0.1.0
description:
  - >-
    Reads the results file of a task started with C(async) and C(poll: 0), like
    M(ansible.builtin.async_status), and also measures the job's progress - the bytes written so far
    under O(path) and the last line of O(progress_file) - so that a long capture or transfer shows
    how far it has got while it runs.
  - >-
    Meant to be retried with C(until: result.finished), as the roles' captures and transfers do. Each
    try returns the progress in its result and in C(msg), so every retry event that AWX records while
    the step runs carries it (the job output prints it from verbosity 3 on; the event details always
    show it), and the step's final result carries the last progress as RV(progress).
  - Once the job has ended, returns the job's own result (its keys at the top level, as
    M(ansible.builtin.async_status) does), fails with the job's message if the job failed, and removes
    the results file unless O(cleanup=false).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Reads the same way in check mode; the job itself ran in check mode if its task did.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: none
    details:
      - Reports the job's C(changed). Once the job has ended its results file is removed, so a second
        call fails (O(cleanup=false) keeps it).
options:
  results_file:
    description:
      - The C(results_file) that the async task registered.
    type: path
    required: true
  path:
    description:
      - File or directory the job writes into; the bytes of the regular files there are its progress.
    type: path
  total:
    description:
      - Bytes the job will write in all, when known, to report a percentage.
    type: int
  progress_file:
    description:
      - A file the job writes its own progress into (for example rsync's C(--info=progress2)); its last
        line is reported.
    type: path
  cleanup:
    description:
      - Remove the results file once the job has ended.
    type: bool
    default: true
  wait:
    description:
      - Seconds to wait for the job to end before reporting it as still running. Polling with O(wait) equal to
        the task's C(delay) and C(delay) 0 returns as soon as the job ends instead of at the next poll.
    type: int
    default: 0
seealso:
  - module: ansible.builtin.async_status
    description: The same wait without the progress.
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Start the export of web
  ferry.docker.docker_export:
    container: web
    dest: /var/backups/ferry/web/20261130T080000Z
  async: 21600
  poll: 0
  register: export_job

- name: Wait for the export of web, showing the bytes written
  ferry.docker.job_progress:
    results_file: "{{ export_job.results_file }}"
    path: /var/backups/ferry/web/20261130T080000Z
  register: export
  until: export.finished
  retries: 4320
  delay: 5
"""

RETURN = r"""
finished:
  description: Whether the job has ended; its own result is then at the top level.
  returned: always
  type: bool
  sample: false
progress:
  description: How far the job has got, at the time of this try (the last try's once it has ended).
  returned: always
  type: dict
  contains:
    bytes:
      description: Bytes in the regular files under O(path); C(null) without O(path) or while it does not exist.
      type: int
    total:
      description: O(total), or C(null).
      type: int
    percent:
      description: RV(progress.bytes) in percent of O(total); C(null) without it.
      type: float
    line:
      description: The last line of O(progress_file); empty without it.
      type: str
  sample: {"bytes": 1048576, "total": 4194304, "percent": 25.0, "line": ""}
msg:
  description: While the job runs, its progress in a sentence; once it has ended, the job's own C(msg) if any.
  returned: always
  type: str
  sample: "running: 1048576 bytes of 4194304 (25.0%)"
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ferry.docker.plugins.module_utils._progress import (
    describe,
    job_finished,
    job_result,
    last_line,
    read_job,
    summary,
    tree_bytes,
)


def read_text(path, limit=65536):
    """The end of a text file (at most limit bytes), or '' when it does not exist."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            results_file=dict(type="path", required=True),
            path=dict(type="path"),
            total=dict(type="int"),
            progress_file=dict(type="path"),
            cleanup=dict(type="bool", default=True),
            wait=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not os.path.exists(p["results_file"]):
        module.fail_json(
            msg=f"No async job results at {p['results_file']}: the job was never started on this host, or its "
            "result was already collected. Start the task again."
        )
    deadline = time.monotonic() + max(0, p["wait"])
    while True:
        try:
            data = read_job(read_text(p["results_file"], limit=64 * 1024 * 1024))
        except ValueError as exc:
            module.fail_json(msg=f"Cannot read the async job results at {p['results_file']}: {exc}")
        finished = job_finished(data)
        if finished or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    done = tree_bytes(p["path"]) if p["path"] else None
    line = last_line(read_text(p["progress_file"])) if p["progress_file"] else ""
    progress = summary(done, p["total"], line)
    if not finished:
        module.exit_json(changed=False, finished=False, progress=progress, msg=describe(progress, False))
    result = job_result(data)
    if p["cleanup"]:
        os.remove(p["results_file"])
    result.update(finished=True, progress=progress)
    result.setdefault("msg", describe(progress, True))
    result["changed"] = bool(result.get("changed", False))
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
