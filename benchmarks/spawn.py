# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a command and write its resource use to a file: ``python -S spawn.py REPORT COMMAND...``.

The harness does not measure its children's peak memory itself: on Linux a process's
``ru_maxrss`` starts at the resident size of the process it was forked from (exec records the
old address space's high-water mark), so every child of the harness, which holds the Docker SDK,
would report at least the harness's own 47 MiB. This launcher, started without site-packages,
is about 9 MiB; the command's ``ru_maxrss`` is then its own peak, or 9 MiB if that is less.

REPORT receives one line: ``ru_maxrss (KiB) ru_utime ru_stime`` of the command and the children
it waited for. The exit status is the command's (128 + N for a signal N).
"""

from __future__ import annotations

import os
import sys


def main():
    report, argv = sys.argv[1], sys.argv[2:]
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    status, usage = os.wait4(pid, 0)[1:]
    with open(report, "w", encoding="ascii") as f:
        f.write(f"{usage.ru_maxrss} {usage.ru_utime} {usage.ru_stime}\n")
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
