# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of ferry.docker.docker_bundle_restore: runs _migration.TargetRun on the task's host."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.ferry.docker.plugins.module_utils._migration import (
    StepFailed,
    TargetRun,
    quiet_caller,
    restore_groups,
)

MEMBER = dict(
    container=dict(type="str", required=True),
    name=dict(type="str", required=True),
    running=dict(type="bool", default=False),
    has_volumes=dict(type="bool", default=False),
    image_ref=dict(type="str", required=True),
    image_id=dict(type="str", default=""),
    received=dict(type="str", required=True),
    entry=dict(type="dict", default={}),
)
SPEC = dict(
    state=dict(type="str", default="present", choices=["present", "absent"]),
    members=dict(type="list", elements="dict", options=MEMBER),
    groups=dict(
        type="list",
        elements="dict",
        options=dict(
            id=dict(type="str", required=True),
            members=dict(type="list", elements="dict", required=True, options=MEMBER),
        ),
    ),
    created=dict(type="dict", default={}),
    mode=dict(type="str", default="commit", choices=["commit", "export"]),
    create_bind_paths=dict(type="bool", default=True),
    allow_privileged=dict(type="bool", default=False),
    stop_timeout=dict(type="int", default=10),
    health_timeout=dict(type="int", default=120),
    health_stable_seconds=dict(type="int", default=10),
    health_tcp_port=dict(type="int", default=0),
    health_url=dict(type="str", default=""),
    keep_bundle=dict(type="bool", default=False),
    trust=dict(type="dict", default={}),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(
            argument_spec=SPEC, required_one_of=[("members", "groups")], mutually_exclusive=[("members", "groups")]
        )

        call = quiet_caller(self, task_vars)

        if args["groups"] is not None:
            if args["state"] == "present":
                result.update(groups=restore_groups(call, args["groups"], args), changed=True)
            else:
                done = {}
                for group in args["groups"]:
                    left = TargetRun(call, group["members"], args).undo((args["created"] or {}).get(group["id"]) or {})
                    done[group["id"]] = {
                        "left": left,
                        "target_cleanup": "done" if not left else "failed: " + "; ".join(left),
                    }
                result.update(groups=done, changed=True)
            return result
        run = TargetRun(call, args["members"], args)
        if args["state"] == "absent":
            left = run.undo(args["created"])
            result.update(changed=True, left=left, target_cleanup="done" if not left else "failed: " + "; ".join(left))
            return result
        try:
            result.update(run.restore(), changed=True)
        except StepFailed as exc:
            left = run.undo()
            result.update(
                failed=True,
                changed=True,
                msg=str(exc),
                phase=exc.phase,
                member=exc.member,
                log_tail=exc.result.get("log_tail", []),
                phases=run.phases.close(),
                created=run.created,
                target_cleanup="done" if not left else "failed: " + "; ".join(left),
            )
        return result
