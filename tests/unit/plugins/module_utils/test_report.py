# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A run's report file: its text, its modes, and a failed write that leaves the old report whole."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.ferry.docker.plugins.module_utils._report import ReportError, report_text, write_report


def test_the_text_is_what_to_nice_json_writes_with_a_final_newline():
    from ansible.plugins.filter.core import to_nice_json

    doc = {
        "status": "ok",
        "containers": [{"name": "wéb", "bytes": 3, "ok": True, "none": None}],
        "a": {"z": 1, "b": []},
    }
    assert report_text(doc) == to_nice_json(doc) + "\n"


def test_a_report_gets_0700_directories_a_0600_file_and_replaces_the_old_one(tmp_path):
    path = tmp_path / "a" / "b" / "report.json"
    write_report(str(path), {"run": 1})
    write_report(str(path), {"run": 2})
    assert json.loads(path.read_text()) == {"run": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["report.json"], "no temporary file is left"


@pytest.mark.parametrize("path", ["relative/report.json", "/tmp/dir/", "", None])
def test_a_path_that_is_not_an_absolute_file_is_refused(path):
    with pytest.raises(ReportError, match="absolute file path"):
        write_report(path, {})


def test_a_failed_write_leaves_the_old_report_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    write_report(str(path), {"run": 1})

    def refuse(_src, _dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ReportError, match=f"{path}.*No space left"):
        write_report(str(path), {"run": 2})
    assert json.loads(path.read_text()) == {"run": 1}
    assert os.listdir(tmp_path) == ["report.json"]


def test_content_that_is_not_json_names_the_report(tmp_path):
    with pytest.raises(ReportError, match="cannot be written as JSON"):
        write_report(str(tmp_path / "r.json"), {"x": object()})
    assert not (tmp_path / "r.json").exists()
