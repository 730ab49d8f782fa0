# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of ferry.docker.docker_migrate_source: runs _migration.SourceRun for the task's host.

The configured hooks are resolved here (a filter of this collection). Then the whole task runs as the
module, in one process on the source (every step in-process, see _steps), unless a member is large
enough to run its capture as an async job whose progress is displayed: then each step runs as its own
module from here. A cutover that keeps the sources, without a journal, runs no step at all.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.ferry.docker.plugins.filter.backup_hook_list import backup_hook_list
from ansible_collections.ferry.docker.plugins.filter.dict_input import dict_input
from ansible_collections.ferry.docker.plugins.module_utils._migration import (
    SOURCE_KWARGS,
    SOURCE_SPEC,
    quiet_caller,
    runs_stepwise,
    source_members,
    source_task,
)

MODULE = "ferry.docker.docker_migrate_source"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        checks = {k: v for k, v in SOURCE_KWARGS.items() if k != "supports_check_mode"}
        _validation, args = self.validate_argument_spec(argument_spec=SOURCE_SPEC, **checks)

        host = task_vars.get("inventory_hostname", "") if task_vars else ""
        # A large capture runs as an async job whose progress is displayed: AWX shows it while the task runs.
        call = quiet_caller(self, task_vars, display=lambda text: Display().display(f"{host}: {text}"))

        hooks = args.get("hooks") or {}
        try:
            configured = dict_input(hooks.get("configured") or {}, "migrate_hooks")
            hooks["lists"] = {
                m["container"]: backup_hook_list(
                    configured,
                    m["container"],
                    "pre",
                    timeout=hooks.get("timeout", 300),
                    on_error=hooks.get("on_error", "fail"),
                )
                for m in source_members(args)
            }
        except AnsibleFilterError as exc:
            result.update(failed=True, msg=f"migrate_hooks: {exc}", phase="hooks", member="")
            return result
        hooks["configured"] = {}  # resolved into lists
        args["hooks"] = hooks
        if runs_stepwise(args):
            result.update(source_task(call, args, check_mode=bool(self._task.check_mode)))
        else:
            done = call(MODULE, {k: v for k, v in args.items() if v is not None})
            done.pop("invocation", None)  # the module's arguments hold the hooks' commands
            result.update(done)
        return result
