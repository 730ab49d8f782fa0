# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The benchmark names the filesystem under Docker's root: row 4's times depend on it."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.run import filesystem_of  # noqa: E402  (the repository's root first)

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
45 22 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/vdb rw
46 22 0:40 / /var/lib/dockerish rw - tmpfs tmpfs rw
47 22 0:41 / /srv/with\\040space rw - xfs /dev/vdc rw
"""


def _tree(tmp_path, journals):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    for device, task in journals.items():
        (tmp_path / "ext4" / device).mkdir(parents=True)
        (tmp_path / "ext4" / device / "journal_task").write_text(task + "\n")
    return dict(mountinfo=str(mountinfo), sysfs=str(tmp_path / "ext4"))


def test_the_longest_mount_holding_the_path_is_named(tmp_path):
    where = _tree(tmp_path, {"vda": "123", "vdb": "<none>"})
    assert filesystem_of("/var/lib/docker", **where) == "ext4 on /dev/vdb (no journal)"
    assert filesystem_of("/var/lib/docker/volumes/x/_data", **where) == "ext4 on /dev/vdb (no journal)"
    assert filesystem_of("/var/lib/dockerish/x", **where) == "tmpfs on tmpfs"
    assert filesystem_of("/var/lib/docke", **where) == "ext4 on /dev/vda"  # a prefix of a name is not inside it
    assert filesystem_of("/srv/with space/d", **where) == "xfs on /dev/vdc"


def test_an_ext4_with_a_journal_or_unknown_says_nothing_more(tmp_path):
    where = _tree(tmp_path, {"vda": "4242"})
    assert filesystem_of("/home", **where) == "ext4 on /dev/vda"
    assert filesystem_of("/var/lib/docker", **where) == "ext4 on /dev/vdb"  # no sysfs entry: nothing claimed


def test_no_mountinfo_gives_none(tmp_path):
    assert filesystem_of("/", mountinfo=str(tmp_path / "missing")) is None
