# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""What a target engine cannot carry of a container's create request, decided before anything is touched.

A fleet migration moves containers between engines of different ages (Docker 20.10 with API 1.41 on
Debian 12, Docker 26.1 with API 1.45 on Debian 13). A create request is JSON, and an engine ignores the
fields its API version does not know; a newer engine ignores some fields that older ones honoured.
``engine_gaps`` names every such setting of a create body, for one engine:

* ``refused``: settings whose loss would change what the container may see or do (a volume subpath
  would mount the whole volume; a forced recursive read-only bind would leave submounts writable; a
  real-time CPU budget the engine cannot give). The restore refuses these, and the preflight reports
  them as problems.
* ``ignored``: settings the engine accepts but does not apply, where the container still runs as
  intended in every respect that matters to its data and its neighbours (a health check start
  interval, an annotation, a deprecated kernel memory limit). The restore goes on and lists them in
  ``not_carried_over``, the preflight lists them before anything is touched, and a migration's report
  carries the list.

Each entry is a sentence naming the setting (its API path), its value, the engine and what to do.
Rules are by the engine API version (``client.api_version``, negotiated with the engine) and, for the
cgroup ones, ``docker info``'s ``CgroupVersion``. Public API: ``engine_gaps``, ``api_tuple``, ``Gaps``.
"""

from __future__ import annotations

import re

# (API version that first applies the setting, the Docker release that brought it)
HEALTH_START_INTERVAL = ((1, 44), "25.0")
BIND_CREATE_MOUNTPOINT = ((1, 42), "23.0")
BIND_READ_ONLY_RECURSIVE = ((1, 44), "25.0")
VOLUME_SUBPATH = ((1, 45), "26.0")
ANNOTATIONS = ((1, 43), "24.0")
# From API 1.42 (Docker 23.0) the engine ignores HostConfig.KernelMemory (kmem.limit_in_bytes is gone).
KERNEL_MEMORY_IGNORED_FROM = (1, 42)


class Gaps:
    """The settings one engine cannot carry: ``refused`` and ``ignored`` lists of sentences."""

    def __init__(self):
        self.refused = []
        self.ignored = []

    def __bool__(self):
        return bool(self.refused or self.ignored)


def api_tuple(text):
    """``"1.41"`` -> ``(1, 41)``; ``None`` when ``text`` is not a version."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _duration(nanoseconds):
    seconds = int(nanoseconds) / 1e9
    return f"{seconds:g}s"


def _mount_label(mount):
    return f"HostConfig.Mounts[{mount.get('Target') or mount.get('Destination') or '?'}]"


def engine_gaps(body, api_version, cgroup_version=None, engine="the target engine"):
    """The settings of create ``body`` (``to_create_body``'s) that the engine at ``api_version`` cannot carry.

    ``cgroup_version`` is ``docker info``'s ``CgroupVersion`` (``"1"``, ``"2"`` or unknown); ``engine``
    names the engine in the sentences (for example ``"Docker 20.10.24 (API 1.41) on host host1"``).
    Raises ValueError when ``api_version`` is not a version: without it nothing can be decided.
    """
    api = api_tuple(api_version)
    if api is None:
        raise ValueError(f"{engine} reports no API version ({api_version!r}); check the docker_host and the engine")
    gaps = Gaps()
    host_config = body.get("HostConfig") or {}

    def older(needed):
        return api < needed[0]

    def needs(needed):
        return f"it needs API {needed[0][0]}.{needed[0][1]} (Docker {needed[1]} or later)"

    start_interval = (body.get("Healthcheck") or {}).get("StartInterval")
    if start_interval and older(HEALTH_START_INTERVAL):
        gaps.ignored.append(
            f"Healthcheck.StartInterval ({_duration(start_interval)}): {engine} ignores it "
            f"({needs(HEALTH_START_INTERVAL)}); during the start period the health check runs at its Interval instead"
        )
    annotations = host_config.get("Annotations")
    if annotations and older(ANNOTATIONS):
        gaps.ignored.append(
            f"HostConfig.Annotations ({', '.join(sorted(annotations))}): {engine} ignores them ({needs(ANNOTATIONS)}); "
            "the OCI runtime does not see them"
        )
    if host_config.get("KernelMemory") and api >= KERNEL_MEMORY_IGNORED_FROM:
        gaps.ignored.append(
            f"HostConfig.KernelMemory ({host_config['KernelMemory']} bytes): {engine} ignores it (kernel memory "
            "limits are gone from API 1.42, Docker 23.0); the container's Memory limit still applies"
        )
    for mount in host_config.get("Mounts") or []:
        label = _mount_label(mount)
        bind = mount.get("BindOptions") or {}
        if bind.get("CreateMountpoint") and older(BIND_CREATE_MOUNTPOINT):
            gaps.ignored.append(
                f"{label}.BindOptions.CreateMountpoint: {engine} ignores it ({needs(BIND_CREATE_MOUNTPOINT)}); the "
                "restore creates missing bind sources itself (create_bind_paths)"
            )
        # ReadOnlyNonRecursive needs API 1.44 too, but an older engine's read-only binds are non-recursive
        # anyway (Docker 25 made them recursive): ignoring it there changes nothing.
        if bind.get("ReadOnlyForceRecursive") and older(BIND_READ_ONLY_RECURSIVE):
            gaps.refused.append(
                f"{label}.BindOptions.ReadOnlyForceRecursive: {engine} would ignore it "
                f"({needs(BIND_READ_ONLY_RECURSIVE)}) and leave the submounts of the read-only bind writable; migrate "
                "to a newer engine, or drop the option on the source first"
            )
        subpath = (mount.get("VolumeOptions") or {}).get("Subpath")
        if subpath and older(VOLUME_SUBPATH):
            gaps.refused.append(
                f"{label}.VolumeOptions.Subpath ({subpath}): {engine} would ignore it ({needs(VOLUME_SUBPATH)}) "
                f"and mount all of volume {mount.get('Source') or '?'} instead of its subdirectory; migrate to an "
                "engine with API 1.45 or later"
            )
    if str(cgroup_version or "") == "2":
        swappiness = host_config.get("MemorySwappiness")
        if swappiness is not None and swappiness != -1:
            gaps.ignored.append(
                f"HostConfig.MemorySwappiness ({swappiness}): {engine} runs cgroup v2, which has no per-container "
                "swappiness; the engine discards it"
            )
        for key in ("CpuRealtimePeriod", "CpuRealtimeRuntime"):
            if host_config.get(key):
                gaps.refused.append(
                    f"HostConfig.{key} ({host_config[key]}): {engine} runs cgroup v2, which has no real-time CPU "
                    "budget, and refuses it; migrate to a cgroup v1 host or drop the setting on the source"
                )
    return gaps
