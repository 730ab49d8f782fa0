# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""report_file writes on the controller in its own process: never a change, in check mode too."""

from __future__ import annotations

import json
import stat
from unittest import mock

import pytest
from ansible.errors import AnsibleActionFail
from ansible.playbook.play_context import PlayContext

from ansible_collections.ferry.docker.plugins.action.report_file import ActionModule


def run(args, check_mode=False):
    task = mock.MagicMock(args=args, async_val=0, check_mode=check_mode, diff=False, action="ferry.docker.report_file")
    connection = mock.MagicMock()
    action = ActionModule(task, connection, PlayContext(), loader=None, templar=None, shared_loader_obj=None)
    result = action.run(task_vars={})
    connection.exec_command.assert_not_called()
    return result


def test_the_report_is_written_and_is_not_a_change_even_in_check_mode(tmp_path):
    path = tmp_path / "reports" / "migrate-report.json"
    result = run({"path": str(path), "content": {"status": "ok", "containers": []}}, check_mode=True)
    assert not result.get("failed") and result["changed"] is False and result["path"] == str(path)
    assert json.loads(path.read_text()) == {"status": "ok", "containers": []}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_report_that_cannot_be_written_fails_the_task_naming_it(tmp_path):
    (tmp_path / "file").write_text("")
    result = run({"path": str(tmp_path / "file" / "r.json"), "content": {}})
    assert result["failed"] and str(tmp_path / "file" / "r.json") in result["msg"]


def test_missing_arguments_fail_the_task():
    with pytest.raises(AnsibleActionFail, match="missing required arguments: path"):
        run({"content": {}})
