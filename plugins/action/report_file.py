# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of ferry.docker.report_file: writes a run's JSON report on the controller, in this process.

No module starts and no connection is opened (a module run on the controller, as ansible.builtin.command or
copy delegated to localhost, costs about 0.2 s for a file of a few KB)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.ferry.docker.plugins.module_utils._report import ReportError, write_report

SPEC = dict(
    path=dict(type="path", required=True),
    content=dict(type="raw", required=True),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=SPEC)
        # the run's output, not a managed state: never a change, and written in check mode too
        result.update(changed=False, path=args["path"])
        try:
            write_report(args["path"], args["content"])
        except ReportError as exc:
            result.update(failed=True, msg=str(exc))
        return result
