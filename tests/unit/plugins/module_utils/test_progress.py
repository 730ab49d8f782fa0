# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""_progress: an async job's results file, and how far the job has got."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.ferry.docker.plugins.module_utils._progress import (
    describe,
    job_finished,
    job_result,
    last_line,
    read_job,
    summary,
    tree_bytes,
)

RUNNING = {"started": 1, "finished": 0, "ansible_job_id": "j1", "results_file": "/r/j1"}


@pytest.mark.parametrize(
    ("data", "finished"),
    [
        (RUNNING, False),
        ({"started": 1, "finished": 1, "ansible_job_id": "j1"}, True),
        ({"changed": True, "size": 10}, True),
        ({"failed": True, "msg": "boom"}, True),
    ],
)
def test_job_finished(data, finished):
    assert job_finished(data) is finished


def test_read_job_empty_file_is_a_started_job():
    assert not job_finished(read_job(""))
    assert read_job(json.dumps(RUNNING)) == RUNNING


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", "42"])
def test_read_job_refuses_what_is_not_a_record(text):
    with pytest.raises(ValueError):
        read_job(text)


def test_job_result_drops_the_wrappers_keys():
    data = {"changed": True, "size": 7, "ansible_job_id": "j", "finished": 1, "_ansible_no_log": False}
    assert job_result(data) == {"changed": True, "size": 7}


def test_tree_bytes_counts_regular_files_only(tmp_path):
    assert tree_bytes(str(tmp_path / "missing")) is None
    (tmp_path / "a").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 23)
    os.symlink(tmp_path / "a", tmp_path / "sub" / "link")
    assert tree_bytes(str(tmp_path)) == 123
    assert tree_bytes(str(tmp_path / "a")) == 100
    assert tree_bytes(str(tmp_path / "sub" / "link")) == 0


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", ""),
        ("\n\n", ""),
        ("a\nb\n", "b"),
        (
            "      32,768   0%    0.00kB/s    0:00:00\r   1,048,576  50%  10.00MB/s    0:00:01\r",
            "1,048,576  50%  10.00MB/s    0:00:01",
        ),
    ],
)
def test_last_line(text, line):
    assert last_line(text) == line


@pytest.mark.parametrize(
    ("done", "total", "percent"),
    [(None, None, None), (0, None, None), (50, 200, 25.0), (300, 200, 100.0), (1, 3, 33.3), (5, 0, None)],
)
def test_summary(done, total, percent):
    assert summary(done, total)["percent"] == percent


def test_describe():
    assert describe(summary(None), False) == "running"
    assert describe(summary(50, 200), False) == "running: 50 bytes of 200 (25.0%)"
    assert describe(summary(50, None, "xfr#1"), True) == "done: 50 bytes, xfr#1"
