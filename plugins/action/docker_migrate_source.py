# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of ferry.docker.docker_migrate_source: runs _migration.SourceRun on the task's host."""

from __future__ import annotations

import time

from ansible.errors import AnsibleFilterError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.ferry.docker.plugins.filter.backup_hook_list import backup_hook_list
from ansible_collections.ferry.docker.plugins.filter.dict_input import dict_input
from ansible_collections.ferry.docker.plugins.module_utils._migration import (
    SourceRun,
    StepFailed,
    capture_groups,
    quiet_caller,
)

MEMBER = dict(
    container=dict(type="str", required=True),
    name=dict(type="str", required=True),
    state_before=dict(type="str", required=True),
    running=dict(type="bool", default=False),
    has_volumes=dict(type="bool", default=False),
    exclude_layers=dict(type="list", elements="str", default=[]),
    image_ref=dict(type="str", required=True),
    bundle=dict(type="str", required=True),
    hook_label=dict(type="bool", default=True),
    expected_bytes=dict(type="int", default=0),
)
SPEC = dict(
    state=dict(type="str", required=True, choices=["captured", "restored", "cut_over"]),
    members=dict(type="list", elements="dict", options=MEMBER),
    groups=dict(
        type="list",
        elements="dict",
        options=dict(
            id=dict(type="str", required=True),
            members=dict(type="list", elements="dict", required=True, options=MEMBER),
        ),
    ),
    mode=dict(type="str", default="commit", choices=["commit", "export"]),
    consistency=dict(type="str", default="stop", choices=["stop", "pause"]),
    cutover=dict(type="str", default="stop", choices=["stop", "keep", "remove"]),
    compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
    stop_timeout=dict(type="int", default=10),
    journal=dict(
        type="dict",
        options=dict(run_id=dict(type="str", required=True), journal_dir=dict(type="path", required=True)),
    ),
    capture_options=dict(type="dict", default={}),
    progress=dict(
        type="dict",
        default={},
        options=dict(
            bytes=dict(type="int", default=268435456),
            interval=dict(type="int", default=10),
            timeout=dict(type="int", default=21600),
        ),
    ),
    hooks=dict(
        type="dict",
        default={},
        options=dict(
            from_labels=dict(type="bool", default=True),
            timeout=dict(type="int", default=300),
            on_error=dict(type="str", default="fail", choices=["fail", "continue"]),
            configured=dict(type="raw", default={}),
        ),
    ),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(
            argument_spec=SPEC, required_one_of=[("members", "groups")], mutually_exclusive=[("members", "groups")]
        )

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
                for m in args["members"] or [m for group in args["groups"] for m in group["members"]]
            }
        except AnsibleFilterError as exc:
            result.update(failed=True, msg=f"migrate_hooks: {exc}", phase="hooks", member="")
            return result
        args["hooks"] = hooks
        if args["groups"] is not None:
            groups = self.wave(call, args)
            # a cutover that finds every source already stopped changes nothing (an idempotent re-run)
            changed = any(g.get("changed") for g in groups.values()) if args["state"] == "cut_over" else bool(groups)
            result.update(groups=groups, changed=changed)
            return result
        run = SourceRun(call, args["members"], args)
        try:
            if args["state"] == "captured":
                result.update(run.capture(), changed=True)
            elif args["state"] == "restored":
                result.update(source_states=run.put_back(), changed=True)
            else:
                states, changed = run.cut_over(args["cutover"], args["stop_timeout"])
                result.update(source_states=states, changed=changed)
        except StepFailed as exc:
            result.update(failed=True, msg=str(exc), phase=exc.phase, member=exc.member, changed=True)
            result["phases"] = run.phases.close()
            result["log_tail"] = exc.result.get("log_tail", [])
            if args["state"] == "captured":
                # The source's own undo: every member back as it was before the run.
                try:
                    result["source_states"] = run.put_back()
                except StepFailed as again:
                    result["msg"] += f"; putting the sources back failed too: {again}"
                    result["source_states"] = {}
        return result

    @staticmethod
    def wave(call, args):
        """Several independent groups: each goes on when another fails; ``{group id: result}``."""
        if args["state"] == "captured":
            return capture_groups(call, args["groups"], args)
        done = {}
        for group in args["groups"]:
            run = SourceRun(call, group["members"], args)
            started = time.monotonic()
            try:
                if args["state"] == "restored":
                    states = run.put_back()
                    done[group["id"]] = {
                        "ok": True,
                        "source_states": states,
                        "phases": {"rollback": round(time.monotonic() - started, 3)},
                    }
                else:
                    states, changed = run.cut_over(args["cutover"], args["stop_timeout"])
                    done[group["id"]] = {
                        "ok": True,
                        "source_states": states,
                        "changed": changed,
                        "phases": {"cutover": round(time.monotonic() - started, 3)},
                    }
            except StepFailed as exc:
                done[group["id"]] = {"ok": False, "msg": str(exc), "phase": exc.phase, "member": exc.member}
        return done
