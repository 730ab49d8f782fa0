# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: migrate_recover_plan
short_description: What playbooks/recover.yml does for the unfinished runs of one source host
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - Takes the unfinished runs that M(ferry.docker.docker_migrate_guard) lists (O(state=status) without a run
    id) and returns one entry per container the runs left open, with what to do about it.
  - A run whose guard still runs with a fresh lease is not lost; its containers are left out and listed
    as C(in_progress).
positional: _input
options:
  _input:
    description: The C(runs) result of M(ferry.docker.docker_migrate_guard).
    type: list
    elements: dict
    required: true
  runs:
    description: Only these run ids (all when empty).
    type: list
    elements: str
    default: []
  hostvars:
    description: Ansible's C(hostvars); a container whose target is not in the inventory cannot be
      checked there, and is reported as such.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Plan the recovery
  ansible.builtin.set_fact:
    plan: "{{ listed.runs | ferry.docker.migrate_recover_plan(runs=recover_runs, hostvars=hostvars) }}"
"""

RETURN = r"""
_value:
  description:
    - C(containers), one entry per open container with C(run_id), C(container), C(state_before), C(phase),
      C(target), C(target_name), C(target_volumes), C(target_may_run) (the run reached the restore phase,
      so a copy may exist on the target) and C(guard_entry) (the container in the shape the guard module's
      C(containers) option takes).
    - C(runs), the run ids to recover; C(in_progress), runs left alone; C(unreadable), journals that could
      not be read, with the reason.
    - C(keys), the run keys of the runs to recover, one per target, with C(run_id), C(host), C(user) (whose
      authorized_keys holds it), C(comment) and C(target_known) (the host is in the inventory).
  type: dict
"""

from ansible.errors import AnsibleFilterError

TARGET_MAY_RUN = ("restore", "health", "cutover")


def migrate_recover_plan(listed, runs=None, hostvars=None):
    wanted = set(runs or [])
    hostvars = hostvars or {}
    plan = {"containers": [], "runs": [], "in_progress": [], "unreadable": [], "keys": []}
    for run in listed:
        if not isinstance(run, dict) or "run_id" not in run:
            raise AnsibleFilterError(f"migrate_recover_plan: {run!r} is not a run listed by docker_migrate_guard")
        if wanted and run["run_id"] not in wanted:
            continue
        if run.get("error"):
            plan["unreadable"].append({"run_id": run["run_id"], "error": run["error"]})
            continue
        if run.get("guard") == "armed" and run.get("guard_alive"):
            plan["in_progress"].append(run["run_id"])
            continue
        plan["runs"].append(run["run_id"])
        plan["keys"].extend(
            dict(key, run_id=run["run_id"], target_known=key.get("host") in hostvars) for key in run.get("keys") or []
        )
        for name in run.get("open", []):
            entry = run["containers"][name]
            target = entry.get("target") or ""
            plan["containers"].append(
                {
                    "run_id": run["run_id"],
                    "container": name,
                    "state_before": entry.get("state_before") or "unknown",
                    "phase": entry.get("phase"),
                    "target": target,
                    "target_name": entry.get("target_name") or name,
                    "target_volumes": list(entry.get("target_volumes") or []),
                    "target_known": target in hostvars,
                    "target_may_run": entry.get("phase") in TARGET_MAY_RUN,
                    "guard_entry": {"name": name},
                }
            )
    missing = sorted(wanted - {run.get("run_id") for run in listed})
    if missing:
        raise AnsibleFilterError(
            f"recover_runs names runs with no unfinished journal on this host: {', '.join(missing)}; "
            "run without recover_runs to list the unfinished ones"
        )
    return plan


class FilterModule:
    """ferry.docker recover plan filter."""

    def filters(self):
        return {"migrate_recover_plan": migrate_recover_plan}
