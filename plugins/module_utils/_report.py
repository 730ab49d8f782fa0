# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""A run's JSON report, written where it is read: on the controller (the report_file action) or on a host.

A report holds what the run did, never a secret, but it names hosts, containers and paths, so only its
owner may read it: every directory made for it is 0700 and the file is 0600. It is written to a temporary
file beside it and renamed over it, so a reader sees the old report or the new one, never part of one.
The text is the same as Ansible's ``to_nice_json`` (indent 4, sorted keys) with a final newline.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


class ReportError(Exception):
    """The report could not be written; the message names the path and why."""


def report_text(doc):
    """``doc`` as the report's text."""
    return json.dumps(doc, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"


def _make_directories(directory):
    """Make ``directory`` and its missing parents, each 0700 (os.makedirs applies its mode to the last one only)."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for each in reversed(missing):
        try:
            os.mkdir(each, 0o700)
        except FileExistsError:
            if not os.path.isdir(each):
                raise


def write_report(path, doc):
    """Write ``doc`` to ``path`` (absolute) as the report's text; its directories are made 0700 as needed.
    Raises ReportError."""
    if not isinstance(path, str) or not os.path.isabs(path) or path.endswith("/"):
        raise ReportError(
            f"the report's path {path!r} is not an absolute file path; give one such as /var/lib/ferry/reports/run.json"
        )
    try:
        data = report_text(doc).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ReportError(f"the report for {path} cannot be written as JSON: {exc}") from None
    directory = os.path.dirname(path)
    try:
        _make_directories(directory)
        fd, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", dir=directory)
    except OSError as exc:
        raise ReportError(f"the report {path} cannot be written: {exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp made it 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ReportError(f"the report {path} cannot be written: {exc}") from None
