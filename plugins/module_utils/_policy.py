# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Restore policy: the settings of a container create request that give it power over its host.

A run config comes from a bundle, and a bundle is input, not truth. ``privileged_settings`` names
every setting of a create body that a restore applies only when its policy allows it
(``allow_privileged``):

* ``Privileged``;
* host namespaces: ``NetworkMode``, ``PidMode``, ``IpcMode``, ``UTSMode`` or ``UsernsMode``
  set to ``host`` (not ``CgroupnsMode``: ``host`` is the default on cgroup v1 hosts);
* ``CapAdd`` beyond Docker's default capability set (``ALL`` included);
* ``Devices``, ``DeviceRequests`` and ``DeviceCgroupRules``;
* binds (``Binds`` and bind ``Mounts``) of ``/``, of system directories (``/etc``, ``/proc``,
  ``/sys``, ``/dev``, ``/boot``, ``/root``, ``/usr``, ``/bin``, ``/sbin``, ``/lib*``, ``/var/lib/docker``,
  ``/run`` and ``/var/run``, and anything below them) or of a Docker socket;
* ``SecurityOpt`` entries that unconfine (``seccomp=unconfined``, ``apparmor=unconfined``,
  ``label=disable``, ``label:disable``, ``systempaths=unconfined``, ``no-new-privileges=false``)
  and ``MaskedPaths``/``ReadonlyPaths`` set to empty lists;
* volume mounts whose ``local`` driver options bind-mount a host path or device (``_names``).
"""

from __future__ import annotations

import posixpath

from ansible_collections.ferry.docker.plugins.module_utils._names import volume_option_problems

# moby oci/caps/defaults.go DefaultCapabilities
DEFAULT_CAPABILITIES = frozenset(
    (
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    )
)
NAMESPACE_MODES = ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode")
SYSTEM_DIRS = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/var/lib/docker",
    "/run",
    "/var/run",
)
SOCKET_NAMES = ("docker.sock", "containerd.sock")
UNCONFINED = (
    "seccomp=unconfined",
    "seccomp:unconfined",
    "apparmor=unconfined",
    "apparmor:unconfined",
    "label=disable",
    "label:disable",
    "systempaths=unconfined",
    "no-new-privileges=false",
    "no-new-privileges:false",
)


def _capability(name):
    name = str(name).upper()
    return name[4:] if name.startswith("CAP_") else name


def _bind_problem(source):
    path = posixpath.normpath("/" + str(source).lstrip("/")) if str(source).startswith("/") else None
    if path is None:
        return None
    if path == "/":
        return "a bind of the host's root directory /"
    if posixpath.basename(path) in SOCKET_NAMES:
        return f"a bind of the Docker socket {source}"
    for directory in SYSTEM_DIRS:
        if path == directory or path.startswith(directory + "/"):
            return f"a bind of the system directory {source}"
    return None


def privileged_settings(body):
    """The privilege-bearing settings of a create body as sentences, in a stable order (empty if none)."""
    host = body.get("HostConfig") or {}
    found = []
    if host.get("Privileged"):
        found.append("privileged mode")
    for key in NAMESPACE_MODES:
        if str(host.get(key) or "") == "host":
            found.append(f"the host's {key[: -len('Mode')].lower()} namespace ({key}=host)")
    extra = sorted({_capability(c) for c in host.get("CapAdd") or []} - DEFAULT_CAPABILITIES)
    if extra:
        found.append(f"capabilities beyond Docker's default set: {', '.join(extra)}")
    for device in host.get("Devices") or []:
        found.append(f"the host device {(device or {}).get('PathOnHost', device)}")
    if host.get("DeviceRequests"):
        found.append("device requests (GPUs or other host devices)")
    for rule in host.get("DeviceCgroupRules") or []:
        found.append(f"the device cgroup rule {rule}")
    sources = [str(bind).split(":", 1)[0] for bind in host.get("Binds") or []]
    sources += [m.get("Source") for m in host.get("Mounts") or [] if m.get("Type") == "bind"]
    for source in sources:
        problem = _bind_problem(source or "")
        if problem:
            found.append(problem)
    for option in host.get("SecurityOpt") or []:
        if str(option).replace(" ", "").lower() in UNCONFINED:
            found.append(f"the security option {option}")
    for key in ("MaskedPaths", "ReadonlyPaths"):
        if key in host and host[key] == []:
            found.append(f"{key} emptied (the kernel paths Docker hides are exposed)")
    for mount in host.get("Mounts") or []:
        driver_config = (mount.get("VolumeOptions") or {}).get("DriverConfig") or {}
        for problem in volume_option_problems(
            {"Driver": driver_config.get("Name"), "DriverOpts": driver_config.get("Options")}
        ):
            found.append(f"the volume mount at {mount.get('Target')}: {problem}")
    return found
