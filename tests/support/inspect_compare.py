# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Test support: compare two ``docker inspect`` documents of a container field by field.

The round-trip tests recreate a container from its captured run config and check with
``diff_inspect()`` that nothing but runtime-assigned fields changed. The product never compares
inspect documents this way, so this lives with the tests. It reuses the run config's own rules for
what the engine adds (endpoint aliases, anonymous volume names, client bookkeeping fields).
"""

from __future__ import annotations

import copy

from ansible_collections.ferry.docker.plugins.module_utils._runconfig import (
    _HEX64,
    _HOST_SKIP,
    _MASKED_BASE,
    _MASKED_KNOWN,
    _READONLY_BASE,
    _READONLY_KNOWN,
    _bind_source,
    _capture_endpoint,
    _default_paths,
    _drop_blank,
    _network_mode,
    _short_id,
)

# Top-level inspect fields the engine assigns at runtime; normalize_for_compare() drops them.
# (It also reduces NetworkSettings, Mounts and Config.Hostname, see its docstring.)
RUNTIME_FIELDS = (
    "Id",  # new container, new id
    "Created",  # creation time
    "State",  # status, Pid, exit code, StartedAt/FinishedAt, health log
    "Image",  # image id: the same reference may resolve to a re-imported image (Config.Image is compared)
    "ResolvConfPath",  # per-container files under the engine's data root
    "HostnamePath",
    "HostsPath",
    "LogPath",
    "RestartCount",  # runtime counter
    "Driver",  # the engine's storage driver, not a container setting
    "GraphDriver",  # storage driver layer paths
    "SizeRw",  # only with --size
    "SizeRootFs",
    "MountLabel",  # SELinux labels and AppArmor profile applied by the engine
    "ProcessLabel",
    "AppArmorProfile",
    "ExecIDs",  # exec sessions
    "Node",  # swarm classic
)

# HostConfig fields that one API version shows and another leaves out, where 0 means "not set" (the
# same setting on both engines); normalize_for_compare() drops them when they are 0 (issue 16).
ZERO_UNSET_HOST_FIELDS = (
    # API 1.41 (Docker 20.10) shows "KernelMemory": 0; the field is gone since API 1.42 (Docker 23),
    # so Docker 26 (API 1.45) does not show it. 0 is no kernel memory limit.
    "KernelMemory",
    # API 1.41 shows "KernelMemoryTCP": 0; Docker 26 (API 1.45) leaves it out when it is 0.
    "KernelMemoryTCP",
)

# MaskedPaths / ReadonlyPaths that are the engine's own default list for a non-privileged container:
# nobody set them, and the list differs by engine version (Docker 20.10 masks 10 paths, Docker 26 adds
# /sys/devices/virtual/powercap). normalize_for_compare() shows such a list as DEFAULT_PATHS; the run
# config does not capture it either (_runconfig._default_paths), so a copy gets its engine's default.
DEFAULT_PATHS = "<engine default>"


def normalize_for_compare(container_inspect):
    """A copy of an inspect document without the fields the engine assigns at runtime.

    Ignored:

    * the top-level ``RUNTIME_FIELDS`` (ids, times, state, engine paths, labels, storage);
    * ``HostConfig.ConsoleSize`` and ``HostConfig.ContainerIDFile`` (client bookkeeping);
    * ``NetworkSettings`` except each endpoint's ``Aliases``, ``IPAMConfig``, ``Links`` and
      ``DriverOpts`` (addresses, MACs, gateways, endpoint/network/sandbox ids and the published
      host ports are runtime values; the settings are in ``HostConfig.PortBindings``);
    * the aliases the engine adds to each endpoint: the container's short id and its hostname;
    * ``Mounts[].Source`` of volumes (the engine's data path) and ``Mounts[].Name`` of anonymous
      volumes (a fresh random name; shown as ``"<anonymous>"``);
    * ``Config.Hostname`` when it is the container's own short id (shown as ``"<short-id>"``),
      or with ``--network host`` (the engine host's name).

    Equivalent spellings are unified: null, "", [] and {} are dropped (the engine writes either),
    ``RestartPolicy.Name`` "" is "no", and ``Mounts`` are sorted by destination. So are the spellings of
    engines of different API versions (issue 16, mixed fleets): ``ZERO_UNSET_HOST_FIELDS`` that are 0
    are dropped, and ``HostConfig.MaskedPaths`` / ``ReadonlyPaths`` that are the engine's default list
    of a non-privileged container show as ``DEFAULT_PATHS``. (The 1.44+ per-endpoint MacAddress and
    DNSNames, and the short id that API < 1.45 adds to Aliases, go with the reduction of NetworkSettings.)
    """
    doc = copy.deepcopy(container_inspect)
    short_id = _short_id(container_inspect)
    for key in RUNTIME_FIELDS:
        doc.pop(key, None)
    config = doc.get("Config") or {}
    host_config = doc.get("HostConfig") or {}
    for key in _HOST_SKIP:
        host_config.pop(key, None)
    hostname = config.get("Hostname") or ""
    if _network_mode(host_config) == "host":
        config.pop("Hostname", None)  # the engine host's name
    elif hostname == short_id:
        config["Hostname"] = "<short-id>"
    policy = host_config.get("RestartPolicy")
    if isinstance(policy, dict) and not policy.get("Name"):
        policy["Name"] = "no"
    for key in ZERO_UNSET_HOST_FIELDS:
        if host_config.get(key) == 0:
            host_config.pop(key)
    if not host_config.get("Privileged"):
        for key, base, known in (
            ("MaskedPaths", _MASKED_BASE, _MASKED_KNOWN),
            ("ReadonlyPaths", _READONLY_BASE, _READONLY_KNOWN),
        ):
            if _default_paths(host_config.get(key), base, known):
                host_config[key] = DEFAULT_PATHS

    settings = (doc.get("NetworkSettings") or {}).get("Networks") or {}
    networks = {}
    for net, endpoint in settings.items():
        networks[net] = _capture_endpoint(endpoint or {}, short_id, hostname)
    doc["NetworkSettings"] = {"Networks": networks}

    binds = host_config.get("Binds") or []
    referenced = {_bind_source(b) for b in binds}
    referenced.update(m.get("Source") for m in host_config.get("Mounts") or [] if m.get("Source"))
    mounts = []
    for mount in doc.get("Mounts") or []:
        mount = dict(mount)
        if mount.get("Type") == "volume":
            mount.pop("Source", None)
            name = mount.get("Name") or ""
            if _HEX64.match(name) and name not in referenced:
                mount["Name"] = "<anonymous>"
        mounts.append(mount)
    mounts.sort(key=lambda m: (m.get("Destination") or "", m.get("Type") or ""))
    doc["Mounts"] = mounts
    return _drop_blank(doc)


def _walk(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _walk(a.get(key), b.get(key), (*path, key), out)
        return
    if a != b:
        out.append((".".join(str(p) for p in path), a, b))


def diff_inspect(a, b, ignore=()):
    """Field-by-field differences of two container inspect documents.

    Both are normalized with ``normalize_for_compare()``; ``ignore`` adds dotted paths (or
    prefixes) to skip, e.g. ``("Name",)`` after a rename or ``("Config.Image",)`` after an image
    override. Lists are compared as a whole. Returns a sorted list of
    ``(dotted_path, value_in_a, value_in_b)`` with ``None`` for a missing value; ``[]`` means
    the same container configuration. Paths join keys with "." as they are, so a label key with
    dots reads like more levels (``Config.Labels.com.example.role``).
    """
    out = []
    _walk(normalize_for_compare(a), normalize_for_compare(b), (), out)
    ignore = tuple(ignore or ())
    return [d for d in out if not any(d[0] == p or d[0].startswith(p + ".") for p in ignore)]
