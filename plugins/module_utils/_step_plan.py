# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_migrate_plan): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_migrate_source`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

import os

from ansible_collections.ferry.docker.plugins.module_utils import _capture, _groups, _precopy
from ansible_collections.ferry.docker.plugins.module_utils._preflight import program_problems

try:
    from docker.errors import DockerException, NotFound
except ImportError:  # reported by FerryModule
    DockerException = NotFound = Exception


def inspect_all(client):
    found = []
    for summary in client.containers(all=True):
        try:
            found.append(client.inspect_container(summary["Id"]))
        except NotFound:  # removed meanwhile
            continue
    return found


def plan_groups(containers, requested, with_dependencies, name_map):
    """``(groups, missing, problems)`` for ``requested``; every group once, each problem on its own."""
    index = _groups.Index(containers)
    groups, missing, problems, placed = [], [], {}, set()
    wanted = {_groups.container_name(doc) for doc in map(index.resolve, requested) if doc is not None}
    for reference in requested:
        inspect = index.resolve(reference)
        if inspect is None:
            missing.append(reference)
            continue
        name = _groups.container_name(inspect)
        if name in placed:
            continue
        try:
            (group,) = _groups.plan(containers, [name], with_dependencies=True)
        except _groups.PlanError as exc:
            problems[name] = str(exc)
            placed.add(name)
            continue
        placed.update(group.members)
        pulled_in = [m for m in group.members if m not in wanted]
        if pulled_in and not with_dependencies:
            for member in group.members:
                if member in wanted:
                    problems[member] = (
                        f"{member} cannot move without {', '.join(pulled_in)} (dependencies: "
                        + "; ".join(f"{e.dependent} -> {e.dependency} ({e.detail})" for e in group.edges)
                        + "); add them to the selection or set migrate_with_dependencies: true"
                    )
            continue
        references = {}
        for member in group.members:
            doc = index.resolve(member)
            target = name_map.get(member, member)
            for key in (doc["Id"], doc["Id"][:12], member):
                references[key] = target
        groups.append(
            {
                "id": group.members[0],
                "members": list(group.members),
                "requested": [m for m in group.members if m in wanted],
                "pulled_in": pulled_in,
                "dependencies": [f"{e.dependent} -> {e.dependency} ({e.detail})" for e in group.edges],
                "shared_volumes": dict(group.shared_volumes),
                "references": references if len(group.members) > 1 else {},
            }
        )
    return groups, missing, problems


def probe(client, names, containers):
    """What a migration needs to know of each container in ``names`` before it checks the target."""
    index = _groups.Index(containers)
    try:
        usage = client.df()
    except DockerException:
        usage = {}
    volume_sizes = {
        volume.get("Name"): max(0, int((volume.get("UsageData") or {}).get("Size") or 0))
        for volume in usage.get("Volumes") or []
    }
    rw_sizes = {c.get("Id"): int(c.get("SizeRw") or 0) for c in usage.get("Containers") or []}
    lookups = _capture.Lookups(_Quiet(client))
    found = {}
    for name in names:
        inspect = index.resolve(name)
        if inspect is None:
            continue
        state = inspect.get("State") or {}
        try:
            image = client.inspect_image(inspect.get("Image"))
        except NotFound:
            image = {}
        volumes = [m["Name"] for m in inspect.get("Mounts") or [] if m.get("Type") == "volume" and m.get("Name")]
        found[name] = {
            "state_before": "paused"
            if state.get("Paused")
            else "running"
            if state.get("Running")
            else state.get("Status", "unknown"),
            "image_id": inspect.get("Image") or "",
            "layers": list((image.get("RootFS") or {}).get("Layers") or []),
            "image_bytes": int(image.get("Size") or 0),
            "rw_bytes": rw_sizes.get(inspect.get("Id"), 0),
            "volumes": volumes,
            "volume_bytes": sum(volume_sizes.get(v, 0) for v in volumes),
            "volume_modes": {v: volume_mode(client, v, volume_sizes.get(v, 0)) for v in volumes},
            "binds": [
                {"source": m["Source"], "is_dir": os.path.isdir(m["Source"])}
                for m in inspect.get("Mounts") or []
                if m.get("Type") == "bind" and m.get("Source")
            ],
            "hook_label": PRE_MIGRATE_LABEL in ((inspect.get("Config") or {}).get("Labels") or {}),
            "run_config": lookups.run_config(inspect),
        }
    return found


PRE_MIGRATE_LABEL = "ferry.docker.pre-migrate"


def volume_mode(client, name, size):
    """What a migration needs to decide about a volume: its kind (``_precopy.classify``), size and labels.
    Its driver options are not returned: they may hold credentials (a CIFS password)."""
    try:
        volume = client.inspect_volume(name)
    except NotFound:
        volume = {}
    kind, detail = _precopy.classify(volume.get("Driver"), volume.get("Options"))
    return {"kind": kind, "detail": detail, "bytes": int(size), "labels": dict(volume.get("Labels") or {})}


class _Quiet:
    """What _capture.Lookups needs of a module: the client, and a failure that raises."""

    def __init__(self, client):
        self.client = client

    def fail(self, msg):
        raise ProbeError(msg)


class ProbeError(Exception):
    """A container that could not be read; the message says which and why."""


SPEC = dict(
    containers=dict(type="list", elements="str", required=True),
    with_dependencies=dict(type="bool", default=True),
    name_map=dict(type="dict", default={}),
    probe=dict(type="bool", default=False),
    programs=dict(type="list", elements="str", default=[]),
)
KWARGS = dict(supports_check_mode=True)


def run(fm):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
    p = fm.params
    problems_here = program_problems(p["programs"])
    if problems_here:
        fm.fail("; ".join(problems_here))
    try:
        containers = inspect_all(fm.client)
    except DockerException as exc:
        fm.fail(f"cannot list the containers of this host: {exc}")
    groups, missing, problems = plan_groups(containers, p["containers"], p["with_dependencies"], p["name_map"])
    index = _groups.Index(containers)
    resolved = {ref: _groups.container_name(index.resolve(ref)) for ref in p["containers"] if index.resolve(ref)}
    extra = {}
    if p["probe"]:
        names = [m for group in groups for m in group["members"]]
        try:
            extra = dict(probes=probe(fm.client, names, containers), architecture=fm.client.info().get("Architecture"))
        except (ProbeError, DockerException) as exc:
            fm.fail(f"cannot read the containers to migrate: {exc}")
    fm.exit(changed=False, groups=groups, missing=missing, problems=problems, resolved=resolved, **extra)
