# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Dependency groups: the containers of one host that have to move together, and in which order.

Two containers belong to one group when one of them refers to the other through

* ``HostConfig.NetworkMode``, ``IpcMode`` or ``PidMode`` of ``container:<name or id>``;
* ``HostConfig.VolumesFrom`` (``name`` or ``name:ro``);
* ``HostConfig.Links`` (``/db:/web/db``) or a user network endpoint's ``Links`` (``db:alias``);
* or when both carry the same ``com.docker.compose.project`` label. Compose's
  ``com.docker.compose.depends_on`` label (``svc:condition:restart,...``; older releases write
  plain ``svc``) orders the services of a project.

A reference makes the referring container depend on the one it names: the named one is created and
started first and stopped last. A group is the connected component of the containers asked for;
its members are ordered so that every container comes after what it depends on (ties by name, so a
plan is the same on every run). A cycle cannot be started in any order and is refused.

Everything here takes ``docker inspect`` documents and returns plain values; nothing talks to an
engine.
"""

from __future__ import annotations

import heapq
from collections import namedtuple

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_DEPENDS_ON = "com.docker.compose.depends_on"

# HostConfig keys whose value ``container:<ref>`` shares that container's namespace.
NAMESPACE_MODES = (("NetworkMode", "network_mode"), ("IpcMode", "ipc_mode"), ("PidMode", "pid_mode"))

# What the engine refuses, or has no use for, in a container that joins another one's network
# namespace (moby runconfig validateNetContainerMode): these are the other container's business.
SHARED_NETWORK_CONFIG_KEYS = ("Hostname", "Domainname", "MacAddress", "ExposedPorts")
SHARED_NETWORK_HOST_CONFIG_KEYS = (
    "PortBindings",
    "PublishAllPorts",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "Links",
)

Edge = namedtuple("Edge", "dependent dependency kind detail")
Group = namedtuple("Group", "members requested pulled_in edges shared_volumes")


class PlanError(Exception):
    """A selection that cannot be planned; the message names the containers and what to do."""


def container_name(inspect):
    return (inspect.get("Name") or "").lstrip("/") or inspect.get("Id", "")[:12]


class Index:
    """Resolve a container reference (name, ``/name``, full or unambiguous short id) on one host."""

    def __init__(self, containers):
        self.by_id = {}
        self.by_name = {}
        for inspect in containers:
            self.by_id[inspect["Id"]] = inspect
            self.by_name[container_name(inspect)] = inspect

    def resolve(self, reference):
        """The inspect document ``reference`` names, or None."""
        reference = (reference or "").strip().lstrip("/")
        if not reference:
            return None
        if reference in self.by_name:
            return self.by_name[reference]
        if reference in self.by_id:
            return self.by_id[reference]
        matches = [doc for cid, doc in self.by_id.items() if cid.startswith(reference)] if len(reference) >= 4 else []
        return matches[0] if len(matches) == 1 else None


def references(inspect):
    """``(kind, reference, detail)`` for every other container this one names in its config."""
    host_config = inspect.get("HostConfig") or {}
    found = []
    for key, kind in NAMESPACE_MODES:
        mode = host_config.get(key) or ""
        if mode.startswith("container:"):
            found.append((kind, mode[len("container:") :], f"{key}={mode}"))
    for entry in host_config.get("VolumesFrom") or []:
        found.append(("volumes_from", entry.split(":", 1)[0], f"VolumesFrom={entry}"))
    for link in host_config.get("Links") or []:
        found.append(("links", link.split(":", 1)[0], f"Links={link}"))
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    for network in sorted(networks):
        for link in (networks[network] or {}).get("Links") or []:
            found.append(("links", link.split(":", 1)[0], f"Links={link} on {network}"))
    return found


def compose_dependencies(value):
    """The service names of a ``com.docker.compose.depends_on`` label value."""
    services = []
    for item in (value or "").split(","):
        service = item.strip().split(":", 1)[0].strip()
        if service and service not in services:
            services.append(service)
    return services


def edges(containers):
    """Every dependency among ``containers`` (one host's inspect documents), and the references that
    name no container of the host, as ``(edges, dangling)``; ``dangling`` holds
    ``(container, detail)`` pairs."""
    index = Index(containers)
    found, dangling = [], []
    for inspect in containers:
        name = container_name(inspect)
        for kind, reference, detail in references(inspect):
            target = index.resolve(reference)
            if target is None:
                dangling.append((name, detail))
            elif target["Id"] != inspect["Id"]:
                found.append(Edge(name, container_name(target), kind, detail))
    projects = {}
    for inspect in containers:
        labels = (inspect.get("Config") or {}).get("Labels") or {}
        if labels.get(COMPOSE_PROJECT):
            projects.setdefault(labels[COMPOSE_PROJECT], []).append(inspect)
    for project, members in sorted(projects.items()):
        by_service = {}
        for inspect in members:
            service = ((inspect.get("Config") or {}).get("Labels") or {}).get(COMPOSE_SERVICE, "")
            by_service.setdefault(service, []).append(container_name(inspect))
        names = sorted(container_name(inspect) for inspect in members)
        for inspect in members:
            name = container_name(inspect)
            labels = (inspect.get("Config") or {}).get("Labels") or {}
            ordered = set()
            for service in compose_dependencies(labels.get(COMPOSE_DEPENDS_ON)):
                for other in by_service.get(service, []):
                    if other != name:
                        ordered.add(other)
                        found.append(Edge(name, other, "compose_depends_on", f"{project}: depends_on {service}"))
            # Members of one project move together even where nothing orders them.
            for other in names:
                if other != name and other not in ordered:
                    found.append(Edge(name, other, "compose_project", f"project {project}"))
    return found, dangling


def order(members, dependencies):
    """``members`` so that each comes after what it depends on; ties by name. PlanError on a cycle.

    ``dependencies``: Edge list; only ordering edges count (a compose project alone orders nothing).
    """
    members = sorted(set(members))
    after = {name: set() for name in members}  # name -> what must start before it
    for edge in dependencies:
        if edge.kind != "compose_project" and edge.dependent in after and edge.dependency in after:
            after[edge.dependent].add(edge.dependency)
    waiting = {name: len(before) for name, before in after.items()}
    ready = [name for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    result = []
    while ready:
        name = heapq.heappop(ready)
        result.append(name)
        for other, before in after.items():
            if name in before:
                waiting[other] -= 1
                if waiting[other] == 0:
                    heapq.heappush(ready, other)
    if len(result) != len(members):
        cycle = find_cycle({name: before for name, before in after.items() if name not in result})
        raise PlanError(
            "these containers depend on each other in a cycle, so no order can start them: "
            + " -> ".join(cycle)
            + ". Remove one of the references (network/ipc/pid mode container:, volumes_from, links or "
            "compose depends_on) and run again."
        )
    return result


def find_cycle(after):
    """One cycle, as a closed path of names, in the graph name -> names it waits for."""
    start = sorted(after)[0]
    path, seen = [start], {start: 0}
    while True:
        name = sorted(n for n in after[path[-1]] if n in after)[0]
        if name in seen:
            return [*path[seen[name] :], name]
        seen[name] = len(path)
        path.append(name)


def volumes_of(inspect):
    """Names of the named volumes a container mounts."""
    return sorted(
        {
            mount.get("Name")
            for mount in inspect.get("Mounts") or []
            if mount.get("Type") == "volume" and mount.get("Name")
        }
    )


def plan(containers, requested, with_dependencies=True):
    """The groups that ``requested`` (names or ids of containers in ``containers``) pull in.

    Returns a list of Group, in the order of the first requested member of each. Raises PlanError
    naming every requested container that does not exist, every reference to a container the host
    does not have, a cycle, and (with ``with_dependencies`` false) every group member not asked for.
    """
    index = Index(containers)
    problems = []
    wanted = []
    for reference in requested:
        inspect = index.resolve(reference)
        if inspect is None:
            problems.append(f"{reference}: no such container on the source")
        elif container_name(inspect) not in wanted:
            wanted.append(container_name(inspect))
    all_edges, dangling = edges(containers)
    neighbours = {container_name(inspect): set() for inspect in containers}
    for edge in all_edges:
        neighbours[edge.dependent].add(edge.dependency)
        neighbours[edge.dependency].add(edge.dependent)
    groups, placed = [], set()
    for name in wanted:
        if name in placed:
            continue
        component, stack = set(), [name]
        while stack:
            current = stack.pop()
            if current not in component:
                component.add(current)
                stack.extend(neighbours[current] - component)
        placed |= component
        for member, detail in dangling:
            if member in component:
                problems.append(
                    f"{member}: {detail} names a container that does not exist on the source; "
                    "recreate or remove that reference first"
                )
        group_edges = sorted(edge for edge in all_edges if edge.dependent in component)
        pulled_in = sorted(component - set(wanted))
        if pulled_in and not with_dependencies:
            problems.append(
                f"{name} cannot move without {', '.join(pulled_in)} (dependencies: "
                + "; ".join(f"{e.dependent} -> {e.dependency} ({e.detail})" for e in group_edges)
                + "); add them to the selection or set migrate_with_dependencies: true"
            )
            continue
        try:
            members = order(component, group_edges)
        except PlanError as exc:
            problems.append(str(exc))
            continue
        users = {}
        for member in members:
            for volume in volumes_of(index.resolve(member)):
                users.setdefault(volume, []).append(member)
        shared = {volume: names for volume, names in sorted(users.items()) if len(names) > 1}
        groups.append(Group(members, [m for m in members if m in wanted], pulled_in, group_edges, shared))
    if problems:
        raise PlanError("; ".join(problems))
    return groups


def stop_order(group):
    """Members in the order to stop them: dependents first."""
    return list(reversed(group.members))


def rewrite_references(body, name_map, index):
    """Point the container references of a create ``body`` at the members' names on the target.

    ``name_map``: source name -> target name (members missing from it keep their name); ``index``:
    the source host's Index, to turn ids into names. Returns the list of settings changed, as
    ``"Key: old -> new"`` strings. The body is changed in place.
    """
    host_config = body.setdefault("HostConfig", {})
    changed = []

    def target_of(reference):
        inspect = index.resolve(reference)
        name = container_name(inspect) if inspect is not None else reference.lstrip("/")
        return name_map.get(name, name)

    for key, _kind in NAMESPACE_MODES:
        mode = host_config.get(key) or ""
        if mode.startswith("container:"):
            new = "container:" + target_of(mode[len("container:") :])
            if new != mode:
                host_config[key] = new
                changed.append(f"{key}: {mode} -> {new}")
    volumes_from = host_config.get("VolumesFrom") or []
    if volumes_from:
        new_list = []
        for entry in volumes_from:
            reference, colon, options = entry.partition(":")
            new_list.append(target_of(reference) + colon + options)
        if new_list != volumes_from:
            host_config["VolumesFrom"] = new_list
            changed.append(f"VolumesFrom: {','.join(volumes_from)} -> {','.join(new_list)}")
    links = host_config.get("Links") or []
    if links:
        new_links = []
        for link in links:
            reference, alias = link.split(":", 1) if ":" in link else (link, "")
            alias = alias.rsplit("/", 1)[-1] if alias else reference.lstrip("/")
            new_links.append(f"{target_of(reference)}:{alias}")
        if new_links != links:
            host_config["Links"] = new_links
            changed.append(f"Links: {','.join(links)} -> {','.join(new_links)}")
    return changed


def drop_shared_network_settings(body):
    """Remove what the engine refuses next to ``NetworkMode: container:<x>``; the removed keys.

    The engine reports such a container's hostname, DNS and ports as the other container's, and
    refuses them on create ("conflicting options: hostname and the network mode"). Returns the
    sorted names of what was removed, for the report; nothing is removed for other network modes.
    """
    host_config = body.get("HostConfig") or {}
    if not (host_config.get("NetworkMode") or "").startswith("container:"):
        return []
    dropped = []
    for key in SHARED_NETWORK_CONFIG_KEYS:
        if body.get(key) not in (None, "", {}, []):
            dropped.append(key)
        body.pop(key, None)
    for key in SHARED_NETWORK_HOST_CONFIG_KEYS:
        if host_config.get(key) not in (None, "", {}, [], False):
            dropped.append(f"HostConfig.{key}")
        host_config.pop(key, None)
    if body.pop("NetworkingConfig", None):
        dropped.append("NetworkingConfig")
    return sorted(dropped)
