# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: migrate_groups
short_description: The migrate role's groups, their steps' arguments, and their report entries
version_added: 0.1.0
author:
  - ferry.docker developers (@ferry-docker)
description:
  - C(migrate_groups) turns the containers the C(ferry.docker.migrate) role queued on one source host into
    groups, each moved as one unit to one target, and computes every argument the group's steps need
    (bundle directories, transfers, journal entries, the members of M(ferry.docker.docker_migrate_source)
    and M(ferry.docker.docker_bundle_restore)).
  - C(migrate_with_image_ids) adds the image IDs a capture returned to the target's members.
  - C(migrate_failure) keeps of a failed task's result what the report needs (never its run config).
  - C(migrate_group_results) shapes a group's report entries, one per container, with its status, phases,
    bytes and downtime.
positional: _input
options:
  _input:
    description: The queued containers (C(migrate_groups)), or a group (C(migrate_group_results)).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Plan the groups
  ansible.builtin.set_fact:
    groups: "{{ todo | ferry.docker.migrate_groups(run, inventory_hostname, work_dir, target_dir) }}"
"""

RETURN = r"""
_value:
  description: See the description of each filter.
  type: raw
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ferry.docker.plugins.module_utils import _handoff, _precopy
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import _remap_path

# Below this size of the container's image, a commit sends the layers the target has too (migrate_thin_min_bytes).
THIN_MIN_BYTES = 8 * 1024 * 1024

# Keys of a queued container that are the role's bookkeeping, not report fields.
INTERNAL = (
    "entry",
    "exclude_layers",
    "action",
    "running",
    "has_volumes",
    "probe_seconds",
    "volumes",
    "references",
    "volume_plan",
)


def _member_dirs(item, run, host, group_id, work_dir, target_dir):
    source_dir = f"{work_dir}/{run}/{group_id}"
    target_group_dir = f"{target_dir}/{run}-{host}-{group_id}"
    return source_dir, target_group_dir, f"{source_dir}/{item['container']}", f"{target_group_dir}/{item['container']}"


def volume_plan(item, options):
    """What happens to each volume of a queued container (``_precopy.choose``): ``[{name, choice, reason}]``.
    ``options``: ``strategy``, ``data``, ``data_map``, ``min_bytes``, ``keep_bundle``, ``bind_data`` and
    ``consistency`` (the role's migrate_strategy, migrate_volume_data, migrate_volume_data_map,
    migrate_precopy_min_bytes, migrate_keep_bundle, migrate_bind_data and migrate_consistency)."""
    modes = (item.get("entry") or {}).get("volume_modes") or {}
    plan = []
    for name in item.get("volumes") or []:
        mode = modes.get(name) or {"kind": "plain", "detail": "local", "bytes": 0}
        try:
            chosen = _precopy.choose(
                name,
                mode["kind"],
                mode["detail"],
                mode.get("bytes", 0),
                strategy=options.get("strategy", "precopy"),
                data=options.get("data", "auto"),
                data_map=options.get("data_map") or {},
                min_bytes=options.get("min_bytes", 0),
                keep_bundle=options.get("keep_bundle", False),
                consistency=options.get("consistency", "stop"),
            )
        except ValueError as exc:
            raise AnsibleFilterError(f"migrate_groups: {exc}") from None
        plan.append(dict(chosen, name=name))
    bind_map = (item.get("entry") or {}).get("bind_map") or {}
    for bind in (item.get("entry") or {}).get("binds") or []:
        target = _remap_path(bind["source"], bind_map) if bind_map else bind["source"]
        chosen = _precopy.choose_bind(
            bind["source"],
            target,
            bind.get("is_dir"),
            options.get("bind_data", False),
            strategy=options.get("strategy", "precopy"),
            consistency=options.get("consistency", "stop"),
        )
        plan.append(dict(chosen, name=f"bind:{bind['source']}", source=bind["source"], path=target))
    return plan


def migrate_groups(todo, run, host, work_dir, target_dir, volumes=None):
    """Groups of queued containers, in queue order; ``item['group']`` (when set) joins items into one.
    ``volumes`` (see ``volume_plan``, and ``delta_bytes``, ``max_passes``) decides how each volume moves."""
    volumes = volumes or {}
    groups, by_id = [], {}
    for item in todo:
        if not isinstance(item, dict) or not {"container", "name", "target", "action"} <= set(item):
            raise AnsibleFilterError(f"migrate_groups: {item!r} is not a queued container of the migrate role")
        group_id = item.get("group") or item["container"]
        if group_id not in by_id:
            by_id[group_id] = {"id": group_id, "target": item["target"], "action": item["action"], "members": []}
            groups.append(by_id[group_id])
        group = by_id[group_id]
        if item["target"] != group["target"] or item["action"] != group["action"]:
            raise AnsibleFilterError(
                f"migrate_groups: {item['container']} cannot move with group {group_id}: the members of a group "
                "go to one target and are either all migrated or all already there"
            )
        group["members"].append(item)
    for group in groups:
        source_dir, target_group_dir = _member_dirs(group["members"][0], run, host, group["id"], work_dir, target_dir)[
            :2
        ]
        group.update(source_members=[], target_members=[], guard_entries=[], transfers={"direct": [], "controller": []})
        group["transfers"]["direct"].append({"src": source_dir, "dest": target_group_dir})
        group["precopy"] = {
            "volumes": [],
            "target_dir": target_group_dir,
            "source_dir": f"{work_dir}/{run}",
            "delta_bytes": int(volumes.get("delta_bytes", 16777216)),
            "max_passes": int(volumes.get("max_passes", 5)),
        }
        seen = set()
        for item in group["members"]:
            _s, _t, bundle, received = _member_dirs(item, run, host, group["id"], work_dir, target_dir)
            image_ref = f"ferry-migrate/{item['name'].lower()}:latest"
            plan = volume_plan(item, volumes) if group["action"] == "migrate" else []
            item.update(bundle=bundle, received=received, image_ref=image_ref, volume_plan=plan)
            modes = (item.get("entry") or {}).get("volume_modes") or {}
            for volume in plan:
                if volume["choice"] in _precopy.DIRECT and volume["name"] not in seen:
                    seen.add(volume["name"])
                    labels = (modes.get(volume["name"]) or {}).get("labels") or {}
                    entry = {
                        "name": volume["name"],
                        "container": item["container"],
                        "labels": labels,
                        "choice": volume["choice"],
                    }
                    if volume.get("path"):
                        entry["path"] = volume["path"]
                    group["precopy"]["volumes"].append(entry)
            group["source_members"].append(
                {
                    "container": item["container"],
                    "name": item["name"],
                    "state_before": item.get("source_state_before") or "unknown",
                    "running": bool(item.get("running")),
                    "has_volumes": bool(item.get("has_volumes")),
                    "exclude_layers": list(item.get("exclude_layers") or []),
                    "image_ref": image_ref,
                    "bundle": bundle,
                    "hook_label": bool((item.get("entry") or {}).get("hook_label", True)),
                    "expected_bytes": expected_bytes(item),
                    "volumes": plan,
                }
            )
            entry = item.get("entry") or {}
            group["target_members"].append(
                {
                    "container": item["container"],
                    "name": item["name"],
                    "running": bool(item.get("running")),
                    "has_volumes": bool(item.get("has_volumes")),
                    "image_ref": image_ref,
                    "received": received,
                    "entry": {
                        key: entry.get(key) or {} for key in ("port_map", "bind_map", "network_map", "references")
                    },
                }
            )
            group["guard_entries"].append({"name": item["container"]})
            group["transfers"]["controller"].append({"src": bundle, "dest": received})
    return groups


def expected_bytes(item):
    """About how many bytes the capture of a queued container writes (before compression): its own changes
    and volumes, and its image unless the target already has some of its layers (then only the changes
    are saved); the capture reports progress from docker_migrate_source's progress.bytes on."""
    sizes = (item.get("entry") or {}).get("sizes") or {}
    image = 0 if item.get("exclude_layers") else int(sizes.get("image_bytes") or 0)
    # pre-copied and skipped volumes are not in the bundle
    modes = (item.get("entry") or {}).get("volume_modes") or {}
    elsewhere = sum(
        int((modes.get(v["name"]) or {}).get("bytes") or 0)
        for v in item.get("volume_plan") or []
        if v["choice"] != "copy"
    )
    volume_bytes = max(0, int(sizes.get("volume_bytes") or 0) - elsewhere)
    return int(sizes.get("rw_bytes") or 0) + volume_bytes + image


def _failed_entry(item, host, message):
    return dict(
        item,
        source=host,
        name=item.get("name") or item["container"],
        source_state_before=item.get("source_state_before", "unknown"),
        status="failed",
        phase="preflight",
        error=message,
        not_carried_over=list(item.get("not_carried_over") or []),
        problems=[message],
        source_state_after=item.get("source_state_before", "unknown"),
        log_tail=[],
        bytes_captured=0,
        bytes_sent=0,
        downtime_seconds=0,
        phases={"preflight": 0},
    )


def migrate_plan_items(items, plan, target, name_map, host):
    """The probe's items for this host: each requested container with the members of its dependency group
    (``plan`` is docker_migrate_plan's result), each with ``group`` and ``references``; ``failed`` holds
    report entries for the containers whose group cannot move."""
    entries = [item if isinstance(item, dict) else {"container": item} for item in items]
    resolved = plan.get("resolved") or {}
    by_name = {}
    for entry in entries:
        by_name.setdefault(resolved.get(entry["container"], entry["container"]), entry)
    out, failed, done = [], [], set()
    for group in plan.get("groups") or []:
        requested = [by_name[m] for m in group["members"] if m in by_name]
        if not requested:
            continue
        targets = sorted({entry.get("target") or target for entry in requested})
        base = requested[0] if requested else {}
        if len(targets) > 1:
            message = (
                f"{', '.join(group['members'])} depend on each other and move as one group, but the plan sends them "
                f"to {', '.join(targets)}; give them one target"
            )
            failed += [_failed_entry(dict(e, target=e.get("target") or target), host, message) for e in requested]
            done.update(group["members"])
            continue
        for member in group["members"]:
            entry = dict(by_name.get(member) or {"container": member, "pulled_in": True})
            entry["container"] = member
            entry.setdefault("target", base.get("target") or target)
            entry["group"] = group["id"]
            entry["references"] = group.get("references") or {}
            if member not in by_name and member in name_map:
                entry["name"] = name_map[member]
            out.append(entry)
            done.add(member)
    problems = plan.get("problems") or {}
    for entry in entries:
        name = resolved.get(entry["container"], entry["container"])
        if name in done:
            continue
        if name in problems:
            failed.append(_failed_entry(dict(entry, target=entry.get("target") or target), host, problems[name]))
            done.add(name)
        elif entry["container"] in (plan.get("missing") or []):
            out.append(entry)  # the probe reports it, or finds it already on its target
    return {"items": out, "failed": failed}


def migrate_group_gate(todo, results):
    """A group moves only when every member passed its checks: the members of a group with a failed member
    leave ``todo`` for ``results``, as failed, naming that member."""
    failed_by_group = {}
    for result in results:
        if result.get("status") == "failed" and result.get("group"):
            failed_by_group.setdefault(result["group"], []).append(
                f"{result['container']} ({result.get('error', '')}) failed its checks"
            )
    actions = {}
    for item in todo:
        if item.get("group"):
            actions.setdefault(item["group"], {}).setdefault(item["action"], []).append(item["container"])
    for group, by_action in actions.items():
        if len(by_action) > 1:
            failed_by_group.setdefault(group, []).append(
                f"{', '.join(by_action.get('cutover', []))} already run(s) on the target while "
                f"{', '.join(by_action.get('migrate', []))} would move now; run playbooks/recover.yml for this "
                "host, or remove the copies on the target, then migrate the group again"
            )
    keep, moved = [], []
    for item in todo:
        culprits = failed_by_group.get(item.get("group") or "")
        if not culprits:
            keep.append(item)
            continue
        message = "not moved: its group must move as one, and " + "; ".join(culprits)
        entry = {key: value for key, value in item.items() if key not in INTERNAL}
        moved.append(_failed_entry(entry, item.get("source", ""), message))
    return {"todo": keep, "results": list(results) + moved}


def migrate_probe_items(items, plan, host, hosts, defaults, margin_percent=10, margin_bytes=0):
    """Settle each planned item (target, name, maps) and split them: ``check`` (the source container exists
    and the target is another inventory host: its preflight arguments, without the run config), ``missing``
    (no such container here: is it already on its target?) and ``failed`` (report entries)."""
    probes = (plan or {}).get("probes") or {}
    out = {"check": [], "missing": [], "failed": []}
    for item in items:
        entry = dict(defaults)
        entry.update(item if isinstance(item, dict) else {"container": item})
        entry["name"] = (
            entry.get("name") or (defaults.get("name_map") or {}).get(entry["container"]) or entry["container"]
        )
        entry.pop("name_map", None)
        target = entry.get("target") or ""
        if not target or target not in hosts or target == host:
            message = (
                f"target '{target}' is not another host of the inventory; set migrate_target (or the entry's target "
                "in migrate_plan) to the inventory name of the host to migrate to"
            )
            out["failed"].append(_failed_entry(entry, host, message))
            continue
        found = probes.get(entry["container"])
        if found is None:
            out["missing"].append(entry)
            continue
        estimate = found["rw_bytes"] + found["image_bytes"] + found["volume_bytes"]
        entry.update(
            source_state_before=found["state_before"],
            image_ref=f"ferry-migrate/{entry['name'].lower()}:latest",
            layers=found["layers"],
            volumes=found["volumes"],
            hook_label=bool(found.get("hook_label", True)),
            required_bytes=int(estimate * (100 + int(margin_percent)) / 100) + int(margin_bytes),
            sizes={key: int(found[key]) for key in ("rw_bytes", "image_bytes", "volume_bytes")},
            volume_modes=found.get("volume_modes") or {},
            binds=found.get("binds") or [],
        )
        out["check"].append(entry)
    return out


def _problems(entry, preflight, host):
    if preflight.get("unreachable"):
        return [f"cannot reach {entry['target']}: {preflight.get('msg', '')}"]
    if "problems" not in preflight:  # the module failed (the task does not fail: its result is not shown)
        return [f"checking {entry['target']} failed: {preflight.get('msg', 'unknown error')}"]
    problems = list(preflight.get("problems") or [])
    same = preflight.get("container_state") == "same"
    if same and not preflight.get("container_running") and entry["source_state_before"] in ("running", "paused"):
        problems.append(
            f"{entry['name']} exists on {entry['target']} with the same config but is not running, while "
            f"{entry['container']} runs here: an earlier migration did not finish. Run playbooks/recover.yml for "
            f"{host}, or remove {entry['name']} and its volumes on {entry['target']}"
        )
    if not same:
        problems += [
            f"volume {volume} already exists on {entry['target']}; remove it there, or the migration would mix "
            "data with it"
            for volume in preflight.get("volumes_existing") or []
        ]
    return problems


REPORT_FIELDS = ("container", "source", "target", "name", "source_state_before", "group", "pulled_in")


def migrate_preflight_checks(checks, plan, target, options):
    """The ``checks`` of docker_bundle_restore (``state=checked``) on ``target``: the preflight arguments of each
    entry of ``probe.check`` bound there, with its run config from the plan. ``options``: ``create_bind_paths``,
    ``mode`` (layers are only compared in commit mode), ``dest`` and ``programs``."""
    probes = (plan or {}).get("probes") or {}
    return [
        {
            "run_config": probes[entry["container"]]["run_config"],
            "name": entry["name"],
            "image": entry["image_ref"],
            "port_map": entry.get("port_map") or {},
            "bind_map": entry.get("bind_map") or {},
            "network_map": entry.get("network_map") or {},
            "references": entry.get("references") or {},
            "create_bind_paths": bool(options.get("create_bind_paths", True)),
            "allow_privileged": True,  # a migration keeps full fidelity: the operator chose the source
            "architecture": (plan or {}).get("architecture"),
            "layers": list(entry.get("layers") or []) if options.get("mode", "commit") == "commit" else [],
            "dest": options.get("dest"),
            "required_bytes": int(entry.get("required_bytes") or 0),
            "docker_required_bytes": int(entry.get("required_bytes") or 0),
            "programs": list(options.get("programs") or []),
        }
        for entry in checks or []
        if entry.get("target") == target
    ]


def _by_entry(checks, answers):
    """Each entry of ``checks`` with its own preflight result, from the per-target answers of
    docker_bundle_restore (``state=checked``, one task item per target: ``__migrate_target`` and ``checks``,
    or the whole result when the target failed or was unreachable)."""
    queues = {}
    for answer in answers or []:
        target = answer.get("__migrate_target")
        if answer.get("checks") is not None and not answer.get("failed") and not answer.get("unreachable"):
            queues[target] = list(answer["checks"])
        else:
            queues[target] = answer
    results = []
    for entry in checks or []:
        queue = queues.get(entry.get("target"), {"failed": True, "msg": "no check ran"})
        results.append(
            (queue.pop(0) if queue else {"failed": True, "msg": "no check ran"}) if isinstance(queue, list) else queue
        )
    return results


def thin_layers(present, image_bytes, min_bytes=THIN_MIN_BYTES):
    """The layers a commit leaves out of what it sends: those the target has (``present``), unless the container's
    image is smaller than ``min_bytes``. That image (``image_bytes``) holds every one of them, so its size bounds
    theirs; below it they go along, and the source's engine is read once instead of twice (see _capture)."""
    if not present or int(image_bytes or 0) < int(min_bytes):
        return []
    return list(present)


def migrate_probe_decide(probe, preflights, copies, host, thin_min_bytes=THIN_MIN_BYTES):
    """The queue (``todo``) and the failures (``results``) after the targets were checked.

    ``probe`` is migrate_probe_items' result; ``preflights`` the results of docker_bundle_restore
    (``state=checked``), one per target (see ``_by_entry``); ``copies`` the docker_container_info results on
    the targets for ``probe.missing``; ``thin_min_bytes``: see ``thin_layers``."""
    todo, results = [], list(probe.get("failed") or [])
    checks = probe.get("check") or []
    for entry, preflight in zip(checks, _by_entry(checks, preflights)):
        base = {key: entry.get(key) for key in REPORT_FIELDS}
        base.update(source=host, group=entry.get("group") or "", pulled_in=bool(entry.get("pulled_in")))
        base["not_carried_over"] = list((preflight or {}).get("not_carried_over") or [])
        problems = _problems(entry, preflight or {}, host)
        if problems:
            results.append(_failed_entry(dict(base), host, " ".join(problems)) | {"problems": problems})
            continue
        same = preflight.get("container_state") == "same"
        running = entry["source_state_before"] in ("running", "paused")
        todo.append(
            dict(
                base,
                action="cutover" if same else "migrate",
                entry=entry,
                running=running and not same,
                exclude_layers=[]
                if same
                else thin_layers(
                    preflight.get("layers_present"), (entry.get("sizes") or {}).get("image_bytes"), thin_min_bytes
                ),
                has_volumes=bool(entry.get("volumes")) and not same,
                volumes=list(entry.get("volumes") or []),
                probe_seconds=0,
            )
        )
    for entry, copy in zip(probe.get("missing") or [], copies or []):
        base = {key: entry.get(key) for key in REPORT_FIELDS}
        base.update(source=host, source_state_before="absent", group=entry.get("group") or "", not_carried_over=[])
        labels = ((copy or {}).get("container") or {}).get("Config", {}).get("Labels") or {}
        if (copy or {}).get("exists") and labels.get("ferry.docker.config-digest"):
            todo.append(
                dict(
                    base,
                    action="cutover",
                    entry=entry,
                    running=False,
                    exclude_layers=[],
                    has_volumes=False,
                    volumes=[],
                    probe_seconds=0,
                )
            )
        else:
            message = f"no container {entry['container']} on {host} (check the name)"
            results.append(_failed_entry(dict(base), host, message))
    return {"todo": todo, "results": results}


def migrate_check_results(todo):
    """Check mode: one report entry per queued container saying what a run would do, with the bytes it would
    capture (an upper bound of what it sends: layers the target has are left out)."""
    entries = []
    for item in todo:
        entry = {key: value for key, value in item.items() if key not in INTERNAL}
        settled = item.get("entry") or {}
        moving = item["action"] == "migrate"
        entry.update(
            status="would_migrate" if moving else "in_place",
            phase="",
            error="",
            excluded_layers=len(item.get("exclude_layers") or []),
            bytes_to_capture_at_most=int(settled.get("required_bytes") or 0) if moving else 0,
            volumes_to_create=list(item.get("volumes") or []) if moving else [],
            image=settled.get("image_ref", ""),
            downtime_seconds=0,
        )
        entries.append(entry)
    return entries


def migrate_summary(report):
    """The per-container summary AWX gets through set_stats: no run config, no paths on the hosts."""
    keep = ("container", "target", "name", "status", "phase", "error", "downtime_seconds", "bytes_sent", "group")
    return {
        "status": report.get("status"),
        "run": report.get("run"),
        "check_mode": report.get("check_mode", False),
        "containers": [{key: entry.get(key) for key in keep if key in entry} for entry in report.get("containers", [])],
    }


def migrate_item_names(items):
    """The container names or ids of the role's items (names, or plan entries)."""
    return [item["container"] if isinstance(item, dict) else str(item) for item in items]


def migrate_waves(groups, parallel=4):
    """The groups of one source host in waves: up to ``parallel`` independent groups with one target and one
    action, moved together (captured one after the other, restored, then watched at once)."""
    parallel = max(1, int(parallel))
    waves, open_waves = [], {}
    for group in groups:
        key = (group["target"], group["action"])
        wave = open_waves.get(key)
        if wave is None or len(wave["groups"]) >= parallel:
            wave = {"id": f"wave{len(waves) + 1}", "target": group["target"], "action": group["action"], "groups": []}
            waves.append(wave)
            open_waves[key] = wave
        wave["groups"].append(group)
    for wave in waves:
        wave["source_groups"] = [
            {"id": g["id"], "members": g["source_members"], "transfer": g["transfers"]["direct"][0]}
            for g in wave["groups"]
        ]
    return waves


def _ok(out, group_id):
    return bool(((out or {}).get("groups") or {}).get(group_id, {}).get("ok"))


def _sent(out, group_id):
    """Whether docker_migrate_source sent the group's bundles itself (a small capture, see its ``send``)."""
    return bool(((out or {}).get("groups") or {}).get(group_id, {}).get("sent"))


def _captured_bytes(out):
    return sum(int(m.get("bytes_captured") or 0) for m in ((out or {}).get("members") or {}).values())


def migrate_wave_pick(wave, what, source=None, target=None, transfer="direct"):
    """What the next step of a wave needs, for the groups still going: ``controller_steps`` (which of
    ``failed_after_send``, ``transfers`` and ``guard_entries`` have any), ``transfers`` (directories to send),
    ``guard_entries`` (journal), ``target_groups`` (docker_bundle_restore, with the captured image IDs),
    ``failed_on_target`` (source groups to put back), ``rolled_back`` and ``migrated`` (journal entries),
    ``not_handed_off`` (the cancel files of the groups an early restore would still wait for: their capture failed
    and could not say so) and ``cancel_files`` (those of every group: the rescue lets an early restore go)."""
    captured = [g for g in wave["groups"] if _ok(source, g["id"])]
    restored = [g for g in captured if _ok(target, g["id"])]
    if what == "transfers":
        # with the bytes the group's capture wrote: a small transfer needs no progress reports
        groups = (source or {}).get("groups") or {}
        return [
            dict(t, group=g["id"], bytes=_captured_bytes(groups.get(g["id"])))
            for g in captured
            if transfer != "direct" or not _sent(source, g["id"])
            for t in g["transfers"][transfer]
        ]
    if what == "guard_entries":  # the groups still to journal in phase restore (not those sent with the capture)
        return [e for g in captured if not _sent(source, g["id"]) for e in g["guard_entries"]]
    if what == "controller_steps":  # which steps between the capture and the restore have work (names of picks)
        steps = ("failed_after_send", "transfers", "guard_entries")
        return [step for step in steps if migrate_wave_pick(wave, step, source, target, transfer)]
    if what == "failed_after_send":  # a send from the capture failed: what it left on the target goes
        groups = (source or {}).get("groups") or {}
        return [
            {"id": g["id"], "members": g["target_members"]}
            for g in wave["groups"]
            if (groups.get(g["id"]) or {}).get("target_touched")
        ]
    if what == "target_groups":
        members = (source or {}).get("groups") or {}
        return [
            {"id": g["id"], "members": migrate_with_image_ids(g["target_members"], members.get(g["id"]))}
            for g in captured
        ]
    if what == "failed_on_target":
        return [{"id": g["id"], "members": g["source_members"]} for g in captured if g not in restored]
    if what == "rolled_back":
        return [e for g in wave["groups"] if g not in restored for e in g["guard_entries"]]
    if what == "migrated":
        return [e for g in restored for e in g["guard_entries"]]
    if what == "restored_source_groups":
        return [{"id": g["id"], "members": g["source_members"]} for g in restored]
    if what == "captured_target_groups":
        return [{"id": g["id"], "members": g["target_members"]} for g in captured]
    if what == "not_handed_off":  # cancel files: the groups the early restore still waits for after the capture
        groups = (source or {}).get("groups") or {}
        return [
            _handoff.cancel_path(_handoff.group_dir(g["target_members"]))
            for g in wave["groups"]
            if g["id"] in groups and not groups[g["id"]].get("ok") and not groups[g["id"]].get("let_go")
        ]
    if what == "cancel_files":  # every group's: a rescue lets an early restore go
        return [_handoff.cancel_path(_handoff.group_dir(g["target_members"])) for g in wave["groups"]]
    if what == "captured_source_groups":
        return [{"id": g["id"], "members": g["source_members"]} for g in captured]
    raise AnsibleFilterError(f"migrate_wave_pick: unknown {what!r}")


def migrate_wave_results(
    wave,
    source=None,
    sent=None,
    target=None,
    put_back=None,
    cutover=None,
    failure=None,
    undone=None,
    precopy=None,
    prepared=None,
    **times,
):
    """The report entries of every container of a wave (see migrate_group_results)."""
    entries = []
    precopy_groups = (precopy or {}).get("groups") or {}
    source_groups = dict((source or {}).get("groups") or {})
    for gid, result in precopy_groups.items():
        if not result.get("ok"):  # its pre-copy failed: it was never captured (its sources never stopped)
            source_groups[gid] = dict(result, failed_task=f"Pre-copy the volumes of {gid}")
    for gid, result in ((prepared or {}).get("groups") or {}).items():
        if not result.get("ok"):  # the target refused it before anything moved
            source_groups[gid] = dict(
                result, failed_task=f"Create on the target the volumes copied straight into it, {gid}"
            )
    target_groups = (target or {}).get("groups") or {}
    put_back_groups = (put_back or {}).get("groups") or {}
    cut_groups = (cutover or {}).get("groups") or {}
    undone_groups = (undone or {}).get("groups") or {}
    for group in wave["groups"]:
        gid = group["id"]
        src, tgt = source_groups.get(gid) or {}, target_groups.get(gid) or {}
        this_failure = {}
        if src and not src.get("ok"):  # its own capture failed first: that is its cause, whatever failed after
            this_failure = {
                "task": src.get("failed_task") or f"Stop and capture {gid}",
                "result": src,
                "put_back": put_back_groups.get(gid) or {"source_states": src.get("source_states") or {}},
                "cleanup": (undone_groups.get(gid) or {}).get("target_cleanup", "done"),
            }
        elif failure:  # the wave failed as a whole (a transfer, a journal): every group was put back
            this_failure = dict(
                failure,
                put_back=put_back_groups.get(gid) or {},
                cleanup=(undone_groups.get(gid) or {}).get("target_cleanup", "done"),
            )
        elif tgt and not tgt.get("ok"):
            this_failure = {
                "task": f"Restore and check the group on its target, {gid}",
                "result": tgt,
                "put_back": put_back_groups.get(gid) or {},
                "cleanup": tgt.get("target_cleanup", "done"),
            }
        cut = cut_groups.get(gid) or {}
        cut_result = (
            {"failed": True, "msg": cut.get("msg"), "phases": cut.get("phases")} if cut and not cut.get("ok") else cut
        )
        entries += migrate_group_results(
            group,
            source=src if src.get("ok") else {},
            sent=[(sent or {}).get(gid, 0) or int(src.get("sent_bytes") or 0)],
            target=tgt if tgt.get("ok") else {},
            cutover=cut_result,
            failure=this_failure,
            precopy=precopy_groups.get(gid) or {},
            **times,
        )
    return entries


def migrate_created(target_groups):
    """``{group id: what the restore created}`` of docker_bundle_restore's per-group results (to undo them)."""
    return {gid: (result or {}).get("created") or {} for gid, result in (target_groups or {}).items()}


def migrate_with_image_ids(members, source):
    """The target's members with the image ID each capture returned (commit mode), whether it loaded the image
    straight into the target's engine (``image_streamed``: new, present or empty), and the content digest of each
    volume it pre-copied (checked on the target before anything uses the volume)."""
    captured = (source or {}).get("members") or {}
    out = []
    for member in members:
        mine = captured.get(member["container"]) or {}
        fields = _handoff.member_fields(mine)  # what a capture's handoff gives an early restore, built alike
        for name, entry in fields["precopied"].items():
            entry.update((mine.get("bind_paths") or {}).get(name) or {})
        out.append(dict(member, **fields))
    return out


def migrate_precopy_pick(wave, what, prepared=None, precopied=None):
    """The pre-copy's steps of a wave (and of a streamed stop-and-copy, which has no live pass): ``prepare``
    (docker_bundle_restore state=prepared: the volumes to create on the target), ``source``
    (docker_migrate_source state=precopied: the groups with a volume to pre-copy, and where each volume goes),
    ``hash`` (state=hashed: the target's digests while the sources serve), ``capture`` (the wave's source
    groups for state=captured, without those whose pre-copy failed, each with the volumes it pre-copied),
    ``failed`` (groups whose pre-copy failed: what to remove on the target), ``created`` (what the
    preparation created, per group, for the undo) and ``early`` (the early restore's ``groups``, those the capture
    hands off, and the ``volumes`` the target prepared for each)."""
    prepared_groups = (prepared or {}).get("groups") or {}
    precopied_groups = (precopied or {}).get("groups") or {}
    groups = [g for g in wave["groups"] if (g.get("precopy") or {}).get("volumes")]

    def target_side(volumes):  # what docker_bundle_restore takes of each volume (not how the source moves it)
        return [{key: value for key, value in v.items() if key != "choice"} for v in volumes]

    if what == "prepare":
        return [
            {"id": g["id"], "cache_dir": g["precopy"]["target_dir"], "volumes": target_side(g["precopy"]["volumes"])}
            for g in groups
        ]
    if what == "created":
        return {gid: result.get("created") or {} for gid, result in prepared_groups.items()}
    if what == "prepared_groups":  # every group the preparation created volumes for (a wave that failed)
        return [{"id": g["id"], "members": g["target_members"]} for g in groups if g["id"] in prepared_groups]
    ready = [g for g in groups if (prepared_groups.get(g["id"]) or {}).get("ok")]
    unprepared = [g["id"] for g in groups if g["id"] in prepared_groups and not prepared_groups[g["id"]].get("ok")]

    def spec(group, volumes):
        return {
            "target": wave["target"],
            "volumes": volumes,
            "refused": (prepared_groups.get(group["id"]) or {}).get("refused") or {},
            "delta_bytes": group["precopy"]["delta_bytes"],
            "max_passes": group["precopy"]["max_passes"],
            "cache_dir": group["precopy"]["source_dir"],
            "target_cache_dir": group["precopy"]["target_dir"],
        }

    def streamed(group):  # copied only once stopped: no live pass, nothing to digest early
        names = {v["name"] for v in group["precopy"]["volumes"] if v.get("choice") == "stream"}
        return sorted(names & set((prepared_groups.get(group["id"]) or {}).get("volumes") or {}))

    if what == "source":  # the live passes: the groups with a volume to pre-copy
        return [
            {
                "id": g["id"],
                "members": g["source_members"],
                "transfer": g["transfers"]["direct"][0],
                "precopy": spec(g, prepared_groups[g["id"]]["volumes"]),
            }
            for g in ready
            if any(v.get("choice", "precopy") == "precopy" for v in g["precopy"]["volumes"])
        ]
    failed = unprepared + [
        g["id"] for g in groups if g["id"] in precopied_groups and not precopied_groups[g["id"]].get("ok")
    ]
    if what == "failed":
        return [{"id": g["id"], "members": g["target_members"]} for g in wave["groups"] if g["id"] in failed]

    def moved(group):
        done = (precopied_groups.get(group["id"]) or {}).get("volumes") or {}
        return [name for name, entry in sorted(done.items()) if entry.get("choice") == "precopy"]

    if what == "hash":
        return [
            {
                "id": g["id"],
                "cache_dir": g["precopy"]["target_dir"],
                "volumes": target_side(v for v in g["precopy"]["volumes"] if v["name"] in moved(g)),
            }
            for g in ready
            if moved(g)
        ]
    if what == "early":  # the restore started before the capture: the groups it waits for, and their volumes
        waited = [g["id"] for g in migrate_precopy_pick(wave, "capture", prepared, precopied)]
        return {
            "groups": [
                {"id": g["id"], "members": migrate_with_image_ids(g["target_members"], None)}
                for g in wave["groups"]
                if g["id"] in waited
            ],
            "volumes": {
                gid: (prepared_groups.get(gid) or {}).get("volumes") or {}
                for gid in waited
                if (prepared_groups.get(gid) or {}).get("ok")
            },
        }
    if what == "capture":
        out = []
        for source_group in wave["source_groups"]:
            if source_group["id"] in failed:
                continue
            group = next(g for g in wave["groups"] if g["id"] == source_group["id"])
            volumes = (prepared_groups.get(group["id"]) or {}).get("volumes") or {}
            if group in ready:
                images = (precopied_groups.get(group["id"]) or {}).get("images") or {}
                done = (precopied_groups.get(group["id"]) or {}).get("volumes") or {}
                since = {n: e["attributes_since"] for n, e in done.items() if e.get("attributes_since")}
                direct = moved(group) + streamed(group)
                source_group = dict(
                    source_group,
                    precopy=dict(spec(group, {n: volumes[n] for n in direct}), images=images, attributes_since=since),
                )
            out.append(source_group)
        return out
    raise AnsibleFilterError(f"migrate_precopy_pick: unknown {what!r}")


def migrate_failure(result):
    """What the report needs of a failed (or skipped) task's result. An async job whose module died without a
    result (killed, say) leaves only Ansible's async wrapper's traceback: that is said in words instead."""
    result = result or {}
    keep = ("msg", "phase", "member", "log_tail", "target_cleanup", "source_states", "failed", "skipped", "phases")
    out = {key: result[key] for key in keep if key in result}
    msg = str(out.get("msg") or "")
    if "async_wrapper" in msg and "Traceback" in msg:
        said = msg.strip().splitlines()[-1][:200]
        out["msg"] = (
            f"the module ended without a result (its process was killed or died); Ansible's async wrapper: {said}"
        )
    return out


def _phase_of(task):
    """The migration phase of a role task that failed without saying (the journal and transfer steps)."""
    task = task or ""
    for start, phase in (
        ("Send", "transfer"),
        ("Journal the restore", "restore"),
        ("Restore and check", "restore"),
        ("Put back", "rollback"),
        ("Journal the rollback", "rollback"),
        ("Journal as migrated", "cutover"),
        ("Cut over", "cutover"),
    ):
        if task.startswith(start):
            return phase
    return "transfer" if "rsync" in task else "capture"


def _volume_report(item, captured, precopy, early_digests=None, digest_checks=None):
    """What happened to each volume of a member: the plan's choice and reason, then what the pre-copy and the
    capture did (passes, bytes, the last delta, the digest checked on the target, whether the target began
    that digest before the handoff, while the image still streamed: ``digest_started_early``, and how it read
    the volume: ``digest_listed_paths``, only the paths the last pass changed, or ``digest_walked_whole``, why
    it read the whole tree although the pass said what it changed)."""
    done = (precopy or {}).get("volumes") or {}
    out = []
    for volume in item.get("volume_plan") or []:
        entry = dict(volume)
        entry.update(done.get(volume["name"]) or {})
        entry.update(((captured or {}).get("volumes") or {}).get(volume["name"]) or {})
        if entry.get("digest"):  # checked on the target
            entry["digest_started_early"] = volume["name"] in (early_digests or [])
            how = (digest_checks or {}).get(volume["name"]) or {}
            if "listed_paths" in how:
                entry["digest_listed_paths"] = how["listed_paths"]
            elif "walked" in how:
                entry["digest_walked_whole"] = how["walked"]
        out.append(entry)
    return out


def _image_transfer(captured):
    """How a member's image went: ``stream`` (loaded straight into the target's engine), ``present`` (the target had
    it; nothing was sent) or ``bundle``."""
    streamed = (captured or {}).get("image_streamed")
    if streamed:
        return "stream" if streamed.get("new") else "present"
    return "bundle"


def migrate_group_results(group, source=None, sent=None, target=None, cutover=None, failure=None, **times):
    """One report entry per member of ``group``."""
    precopy = times.pop("precopy", None) or {}
    source, target, cutover, failure = source or {}, target or {}, cutover or {}, failure or {}
    started, ended = float(times.get("started_at") or 0), float(times.get("ended_at") or 0)
    captured = source.get("members") or {}

    def streamed_bytes(name):  # what went straight into the target (volumes, the image): not in the bundle
        mine = captured.get(name) or {}
        if "direct_bytes" in mine:
            return int(mine["direct_bytes"] or 0)
        return int((mine.get("image_streamed") or {}).get("bytes") or 0)

    def bundled(name):
        return int((captured.get(name) or {}).get("bytes_captured", 0)) - streamed_bytes(name)

    total_captured = sum(bundled(m["container"]) for m in group["members"])
    total_sent = sum(int(size) for size in (sent or []))
    failed_result = failure.get("result") or {}
    cut_failed = bool(cutover.get("failed"))
    moving = group["action"] == "migrate"
    entries = []
    for item in group["members"]:
        name = item["container"]
        mine = bundled(name)
        entry = {key: value for key, value in item.items() if key not in INTERNAL and key not in ("received",)}
        phases = {"preflight": round(float(item.get("probe_seconds") or 0), 3)}
        if moving:
            if (precopy.get("phases") or {}).get("precopy") is not None:
                phases["precopy"] = precopy["phases"]["precopy"]
            for phase, seconds in (source.get("phases") or failed_result.get("phases") or {}).items():
                if phase != "transfer":
                    phases[phase] = seconds
            restore_started = target.get("started_at") or failed_result.get("started_at")
            if source.get("ended_at") and restore_started:
                phases["transfer"] = round(float(restore_started) - float(source["ended_at"]), 3)
            phases.update(target.get("phases") or {})
            if (cutover.get("phases") or {}).get("cutover") is not None:
                phases["cutover"] = cutover["phases"]["cutover"]
            if failure:
                # what the failed step spent (restore, health), and the rollback on both hosts
                for phase, seconds in (failed_result.get("phases") or {}).items():
                    if phase != "transfer":
                        phases[phase] = round(phases.get(phase, 0) * (phase == "rollback") + seconds, 3)
                put_back_phases = (failure.get("put_back") or {}).get("phases") or {}
                if put_back_phases.get("rollback"):
                    phases["rollback"] = round(phases.get("rollback", 0) + put_back_phases["rollback"], 3)
                phases.setdefault("rollback", 0)
        state_before = item.get("source_state_before")
        if failure:
            status = "failed"
            phase = failed_result.get("phase") or _phase_of(failure.get("task"))
            error = f"{failure.get('task', '')}: {failed_result.get('msg', 'unknown error')}"
            put_back = failure.get("put_back") or {}
            if put_back.get("failed"):
                error += f"; putting the sources back failed: {put_back.get('msg', '')}"
            after = (put_back.get("source_states") or {}).get(name, state_before)
            cleanup = failure.get("cleanup") or "done"
            log_tail = failed_result.get("log_tail") or []
        elif cut_failed:
            status, phase = "failed", "cutover"
            error = (
                f"{item['name']} runs and was verified on {item['target']}, but the cutover of the source failed "
                f"({cutover.get('msg', 'unknown error')}); finish it by hand"
            )
            after, cleanup, log_tail = state_before, "not needed (the target is kept)", []
        else:
            status = "migrated" if moving or cutover.get("changed") else "unchanged"
            phase, error, cleanup, log_tail = "", "", "", []
            after = (cutover.get("source_states") or {}).get(name, state_before)
        # a capture that failed after the stop says when it took the sources down and put them back
        timed = source if source.get("down_at") else failed_result
        down_at, up_at = float(timed.get("down_at") or 0), float(timed.get("up_at") or 0)
        if down_at and not up_at:
            up_at = float(target.get("verified_at") or 0) if status == "migrated" else ended
        entry.update(
            status=status,
            phase=phase,
            error=error,
            target_cleanup=cleanup,
            log_tail=log_tail,
            started_at=round(started, 3),
            ended_at=round(ended, 3),
            image=item.get("image_ref", ""),
            bundle=item.get("bundle", "") if moving else "",
            bytes_captured=mine + streamed_bytes(name),
            bytes_sent=(round(total_sent * mine / total_captured) if total_captured else 0) + streamed_bytes(name),
            excluded_layers=len(item.get("exclude_layers") or []),
            source_state_after=after,
            downtime_seconds=round(up_at - down_at, 3) if down_at and state_before in ("running", "paused") else 0,
            phases=phases,
            group=[m["container"] for m in group["members"]] if len(group["members"]) > 1 else [],
            hooks=[hook for hook in source.get("hooks") or [] if hook.get("container") == name],
            volumes=_volume_report(
                item, captured.get(name), precopy, target.get("early_digests"), target.get("digest_checks")
            ),
            image_transfer=_image_transfer(captured.get(name)) if moving else "",
            # the source ignored its stop signal (or took longer than migrate_stop_timeout): the engine killed it
            stop_timed_out=bool((captured.get(name) or {}).get("stop_timed_out")),
            # the restore was already waiting on the target and took the capture's handoff (migrate_early_restore)
            early_restore=bool(source.get("handed_off")),
            handoff_note=source.get("handoff_note", ""),
            # the image the capture committed on the source could not be removed once it had moved (it is left there)
            image_note=(captured.get(name) or {}).get("image_note", ""),
            precopy_sent_bytes=sum(
                int(v.get("sent_bytes") or 0)
                for n, v in ((precopy.get("volumes") or {}).items())
                if n in {p["name"] for p in item.get("volume_plan") or []}
            ),
        )
        entries.append(entry)
    return entries


class FilterModule:
    """ferry.docker migrate group filters."""

    def filters(self):
        return {
            "migrate_groups": migrate_groups,
            "migrate_plan_items": migrate_plan_items,
            "migrate_group_gate": migrate_group_gate,
            "migrate_item_names": migrate_item_names,
            "migrate_waves": migrate_waves,
            "migrate_created": migrate_created,
            "migrate_wave_pick": migrate_wave_pick,
            "migrate_wave_results": migrate_wave_results,
            "migrate_check_results": migrate_check_results,
            "migrate_summary": migrate_summary,
            "migrate_probe_items": migrate_probe_items,
            "migrate_probe_decide": migrate_probe_decide,
            "migrate_preflight_checks": migrate_preflight_checks,
            "migrate_with_image_ids": migrate_with_image_ids,
            "migrate_precopy_pick": migrate_precopy_pick,
            "migrate_failure": migrate_failure,
            "migrate_group_results": migrate_group_results,
        }
