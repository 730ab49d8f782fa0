# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Progress of a long step that Ansible runs as an async job (``async:`` with ``poll: 0``).

Ansible's async wrapper keeps one results file per job: ``{"started": 1, "finished": 0, ...}`` while
the job runs, then the module's own result (no ``started`` key) once it has ended. These pure
functions read that file and measure how far the step has got: the bytes written so far under a
path (a bundle directory, an archive), and the last line of a progress file (such as rsync's
``--info=progress2``).
"""

from __future__ import annotations

import json
import os
import stat

# Keys of the async wrapper's own bookkeeping, not part of the job's result.
_WRAPPER_KEYS = ("started", "finished", "ansible_job_id", "results_file")


def read_job(text):
    """The results file's JSON as a dict; a file not written yet (empty) is a job that has started."""
    if not text.strip():
        return {"started": 1, "finished": 0}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the async results file does not hold a JSON object")
    return data


def job_finished(data):
    """True once the job has ended (the wrapper replaced its 'started' record with the result)."""
    return "started" not in data or data.get("finished") in (1, True)


def job_result(data):
    """The module's own result out of a finished job's record."""
    return {
        key: value for key, value in data.items() if key not in _WRAPPER_KEYS and not str(key).startswith("_ansible")
    }


def tree_bytes(path):
    """Bytes in the regular files at or under path, symlinks not followed; None when path is missing."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(top.st_mode):
        return top.st_size if stat.S_ISREG(top.st_mode) else 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue  # removed while we looked (a temporary file moved into place)
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def last_line(text, limit=300):
    """The last non-empty line of a progress file, whose lines may end in CR (rsync) or LF."""
    for line in reversed(text.replace("\r", "\n").split("\n")):
        if line.strip():
            return line.strip()[:limit]
    return ""


def summary(done, total=None, line=""):
    """What the step has done so far, as the result's ``progress``."""
    percent = None
    if done is not None and total:
        percent = round(min(100.0, 100.0 * done / total), 1)
    return {"bytes": done, "total": total or None, "percent": percent, "line": line}


def describe(progress, finished):
    """One sentence for the task's msg, shown by AWX with every poll."""
    parts = []
    if progress["bytes"] is not None:
        parts.append(f"{progress['bytes']} bytes")
        if progress["percent"] is not None:
            parts[-1] += f" of {progress['total']} ({progress['percent']}%)"
    if progress["line"]:
        parts.append(progress["line"])
    state = "done" if finished else "running"
    return f"{state}: {', '.join(parts)}" if parts else state
