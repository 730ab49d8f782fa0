# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The portable run config of a container: capture it from ``docker inspect``, rebuild the create body.

Everything here is pure (dicts in, dicts out); the modules do the Docker calls.

The run config holds exactly the settings of ``POST /containers/create`` (Config, HostConfig,
NetworkingConfig) that the user chose, so that creating a container from it on another engine
gives the same ``docker inspect`` apart from runtime-assigned fields (the round-trip tests compare
them field by field with tests/support/inspect_compare.py).

What counts as "set by the user":

* ``Config``: the engine merges the image's Config into the container's at create time, so a
  field is captured when it differs from the image's value (``Env``: the entries in front of the
  image entries the engine appended; ``Labels``, ``ExposedPorts``, ``Volumes``: the keys the image
  does not have with that value). ``Hostname`` is captured unless it is the engine's default,
  the container's short id (or, with ``--network host``, the engine host's own name). When
  ``Entrypoint`` is overridden ``Cmd`` is captured too, because the engine then stops inheriting
  the image's ``Cmd``.
* ``HostConfig``: a field is captured when it differs from what the engine fills in for an
  empty ``docker run``: ``None``/``""``/``[]``/``{}``/``0``/``False`` and the values in
  ``HOST_CONFIG_DEFAULTS`` (``NetworkMode`` "default", ``RestartPolicy`` "no", ``ShmSize`` 64 MiB,
  ``IpcMode`` "private", ``LogConfig`` json-file without options, ``Runtime`` runc,
  ``CgroupnsMode``, default ``MaskedPaths``/``ReadonlyPaths``). Engine-dependent defaults are taken
  from ``docker info`` when ``engine_info`` is given. Pointer fields (``POINTER_FIELDS``) keep an
  explicit ``0``/``False``: for them only ``None`` means "not set".
* Networks: the endpoint settings a user can choose (``Aliases`` without the ones the engine adds,
  ``IPAMConfig``, ``Links``, ``DriverOpts``); addresses, MACs and ids are runtime values.

Anonymous volumes (a 64-hex name not referenced by name in ``Binds``/``Mounts``) are left to the
engine: the create body declares them exactly as the original did (``Config.Volumes``, an image
``VOLUME``, or a ``--mount`` without source), the engine creates a fresh anonymous volume, and
restore finds it by ``Destination`` in the new container's ``Mounts`` to put the captured data
in (before the first start). They are marked ``Anonymous: True`` in ``mounts`` and
``volume_definitions`` and must not be created by name.

Networks: the container is created on ``HostConfig.NetworkMode`` (the network it was first
created on; "default" means "bridge") with that ONE endpoint in ``NetworkingConfig`` (API < 1.44
takes only one); every other network comes back from ``to_create_body()`` in
``extra_networks``, sorted by name, to connect after create and before start. A
``NetworkMode`` of ``container:<id>`` is kept as is: map it with ``network_map``
(``{"container:<id>": "container:<name>"}``).

Restore idempotence: ``stamp_digest(body, extra_networks)`` puts ``config_digest()`` into the
label ``ferry.docker.config-digest``; an existing container whose label equals the digest of the
new body needs no change. Capturing a stamped container and rebuilding its body gives the same
digest (the digest ignores its own label).

Public API: ``capture``, ``to_create_body``, ``config_digest``, ``stamp_digest``, ``redact``, ``redact_env``,
``network_definition``, ``network_create_kwargs``, ``volume_definition``, ``volume_create_kwargs``,
``connect_kwargs``, ``needed_networks``, ``named_volumes``, ``bind_sources``; errors are
``RunConfigError`` (a ``ValueError``) with a message meant for the user.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re

from ansible_collections.ferry.docker.plugins.module_utils._groups import (
    drop_shared_network_settings,
    rewrite_references,
)

DIGEST_LABEL = "ferry.docker.config-digest"
REDACTED = "********"

# Networks every engine has; they are never (re)created.
PREDEFINED_NETWORKS = ("bridge", "host", "none")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Config fields never copied into the run config: the image reference goes to the top-level
# "image"; OnBuild triggers only apply to images built FROM this one.
_CONFIG_SKIP = ("Image", "OnBuild")

# Config fields the engine copies from the image when the create request leaves them empty.
_CONFIG_INHERITED = ("User", "WorkingDir", "StopSignal", "Healthcheck", "Shell", "ArgsEscaped")

# Config fields the engine never takes from the image, although `docker commit` writes them into it (so an
# image made by a migration has the container's values). Captured whenever set: comparing them with the
# image would drop them on a container that runs from such an image (its second migration).
_CONFIG_OWN = (
    "Domainname",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "MacAddress",
    "NetworkDisabled",
)

# HostConfig fields that are client-side bookkeeping, not container settings.
_HOST_SKIP = (
    "ContainerIDFile",  # file the CLI wrote the id to
    "ConsoleSize",  # the client's terminal size at create time
)

# Pointer fields of HostConfig: None means "engine default", an explicit 0/False is a setting.
POINTER_FIELDS = ("MemorySwappiness", "PidsLimit", "Init")

# MaskedPaths/ReadonlyPaths the engine fills in for a non-privileged container. The list grew
# over engine versions, so any list between the oldest default and the union of all known
# defaults counts as the default.
_MASKED_BASE = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
_MASKED_KNOWN = (*_MASKED_BASE, "/sys/devices/virtual/powercap", "/proc/interrupts")
_READONLY_BASE = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
_READONLY_KNOWN = _READONLY_BASE

# Values the engine fills in for an empty `docker run` (beyond None/""/[]/{}/0/False).
HOST_CONFIG_DEFAULTS = {
    "NetworkMode": ("default",),
    "RestartPolicy": ({"Name": "no", "MaximumRetryCount": 0}, {"Name": "", "MaximumRetryCount": 0}),
    "LogConfig": ({"Type": "json-file", "Config": {}},),
    "ShmSize": (67108864,),
    "IpcMode": ("private",),
    "Runtime": ("runc",),
    # "host" on cgroup v1 engines, "private" on cgroup v2; narrowed by engine_info when known.
    "CgroupnsMode": ("host", "private"),
}


class RunConfigError(ValueError):
    """Raised for inputs (inspect documents, overrides) that cannot be turned into a run config."""


# --------------------------------------------------------------------------------------------
# small helpers


def _empty(value):
    """True for the values Go's encoder emits for an unset field."""
    return value is None or value == "" or value == [] or value == {} or value is False or value == 0


def _blank(value):
    """True for null-ish values only (None, "", [], {}); 0 and False are real values."""
    return value is None or value == "" or value == [] or value == {}


def _drop_blank(value):
    """Recursively drop None/""/[]/{} dict values (null vs empty is the same to the engine)."""
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            item = _drop_blank(item)
            if not _blank(item):
                result[key] = item
        return result
    if isinstance(value, list):
        return [_drop_blank(v) for v in value]
    return value


def _same(a, b):
    """Compare two inspect values treating None, "", [] and {} (also nested in dicts) as equal."""
    if _blank(a) and _blank(b):
        return True
    return _drop_blank(a) == _drop_blank(b)


def _env_key(entry):
    return entry.split("=", 1)[0]


def _short_id(container_inspect):
    return (container_inspect.get("Id") or "")[:12]


def _by_name(inspects):
    """Index network/volume inspect documents (a list, or a dict name -> doc) by name and id."""
    if not inspects:
        return {}
    docs = inspects.values() if isinstance(inspects, dict) else inspects
    index = {}
    for doc in docs:
        if not doc:
            continue
        for key in ("Name", "Id", "ID"):
            if doc.get(key):
                index[doc[key]] = doc
    return index


def _network_mode(host_config):
    return host_config.get("NetworkMode") or "default"


def _primary_network(network_mode):
    """The network the container is created on: "default" is the bridge network."""
    if network_mode in ("default", ""):
        return "bridge"
    return network_mode


# --------------------------------------------------------------------------------------------
# capture


def _user_env(env, image_env):
    """The env entries the user passed, given the engine's merge.

    The engine appends every image entry whose key the user did not set to the user's entries,
    so the container env is ``user + [image entries with other keys]``. Return the shortest
    ``user`` that reproduces ``env`` exactly (usually: the entries not equal to an image entry).
    """
    env = list(env or [])
    image_env = list(image_env or [])
    for split in range(len(env) + 1):
        user = env[:split]
        keys = {_env_key(entry) for entry in user}
        if env[split:] == [entry for entry in image_env if _env_key(entry) not in keys]:
            return user
    return env


def _capture_config(container, image_config, host_config, engine_info):
    config = container.get("Config") or {}
    short_id = _short_id(container)
    captured = {}
    entrypoint_changed = not _same(config.get("Entrypoint"), image_config.get("Entrypoint"))
    for key, value in config.items():
        image_value = image_config.get(key)
        if key in _CONFIG_SKIP:
            continue
        if key == "Hostname":
            default = short_id
            if _network_mode(host_config) == "host":
                default = (engine_info or {}).get("Name") or value
            if value and value != default:
                captured[key] = value
        elif key == "Env":
            user = _user_env(value, image_value)
            if user:
                captured[key] = user
        elif key == "Labels":
            image_labels = image_value or {}
            extra = {k: v for k, v in (value or {}).items() if k not in image_labels or image_labels[k] != v}
            if extra:
                captured[key] = extra
        elif key in ("ExposedPorts", "Volumes"):
            extra = {k: v if v is not None else {} for k, v in (value or {}).items() if k not in (image_value or {})}
            if extra:
                captured[key] = extra
        elif key == "Entrypoint":
            if entrypoint_changed and value is not None:
                captured[key] = value
        elif key == "Cmd":
            # With an overridden Entrypoint the engine no longer inherits the image's Cmd.
            if value is not None and (entrypoint_changed or not _same(value, image_value)):
                captured[key] = value
        elif key == "StopTimeout":
            if value is not None:
                captured[key] = value
        elif key in _CONFIG_INHERITED:
            if not _empty(value) and not _same(value, image_value):
                captured[key] = value
        elif key in _CONFIG_OWN:
            if not _empty(value):
                captured[key] = value
        elif not _empty(value) and not _same(value, image_value):
            # fields newer engines add
            captured[key] = value
    if entrypoint_changed and "Entrypoint" not in captured:
        # Entrypoint cleared (image has one, container has none): say so explicitly.
        captured["Entrypoint"] = config.get("Entrypoint") or []
    return captured


def _host_defaults(engine_info):
    defaults = dict(HOST_CONFIG_DEFAULTS)
    info = engine_info or {}
    if info.get("LoggingDriver"):
        defaults["LogConfig"] = ({"Type": info["LoggingDriver"], "Config": {}},)
    if info.get("DefaultRuntime"):
        defaults["Runtime"] = (info["DefaultRuntime"],)
    if str(info.get("CgroupVersion") or "") == "1":
        defaults["CgroupnsMode"] = ("host",)
    elif str(info.get("CgroupVersion") or "") == "2":
        defaults["CgroupnsMode"] = ("private",)
    return defaults


def _default_paths(value, base, known):
    """True when a MaskedPaths/ReadonlyPaths list is one of the engine's default lists."""
    if not isinstance(value, list):
        return False
    return set(base) <= set(value) <= set(known)


def _normalize_link(link, name):
    """Legacy link "/db:/web/db" (as inspect shows it) -> "db:db" (as create takes it)."""
    if ":" not in link:
        return link.lstrip("/")
    target, alias = link.split(":", 1)
    parent, _sep, short_alias = alias.lstrip("/").rpartition("/")
    if parent == name:
        alias = short_alias
    return f"{target.lstrip('/')}:{alias.lstrip('/')}"


def _capture_host_config(container, engine_info):
    host_config = container.get("HostConfig") or {}
    name = (container.get("Name") or "").lstrip("/")
    defaults = _host_defaults(engine_info)
    privileged = bool(host_config.get("Privileged"))
    captured = {}
    for key, value in host_config.items():
        if key in _HOST_SKIP:
            continue
        if key in ("MaskedPaths", "ReadonlyPaths"):
            # None: privileged (nothing masked) or never set. [] is an explicit setting
            # (--security-opt systempaths=unconfined).
            base, known = (_MASKED_BASE, _MASKED_KNOWN) if key == "MaskedPaths" else (_READONLY_BASE, _READONLY_KNOWN)
            if value is None or (not privileged and _default_paths(value, base, known)):
                continue
            captured[key] = value
            continue
        if key in POINTER_FIELDS:
            if value is not None:
                captured[key] = value
            continue
        if key in defaults and any(_same(value, d) for d in defaults[key]):
            continue
        if _empty(value):
            continue
        if key == "SecurityOpt" and privileged:
            # The engine adds label=disable to every privileged container by itself.
            value = [opt for opt in value if opt != "label=disable"]
            if not value:
                continue
        if key == "Links":
            value = [_normalize_link(link, name) for link in value]
        captured[key] = value
    return captured


def _user_aliases(aliases, short_id, hostname):
    """Endpoint aliases minus the ones the engine adds (short id, and the hostname)."""
    engine_added = {short_id, hostname}
    return [alias for alias in (aliases or []) if alias not in engine_added]


def _capture_endpoint(endpoint, short_id, hostname):
    entry = {}
    aliases = _user_aliases(endpoint.get("Aliases"), short_id, hostname)
    if aliases:
        entry["Aliases"] = aliases
    ipam = {k: v for k, v in (endpoint.get("IPAMConfig") or {}).items() if not _blank(v)}
    if ipam:
        entry["IPAMConfig"] = ipam
    for key in ("Links", "DriverOpts"):
        if not _blank(endpoint.get(key)):
            entry[key] = copy.deepcopy(endpoint[key])
    return entry


def _bind_source(bind):
    return bind.split(":", 1)[0]


def _capture_mounts(container, image_config, host_config):
    """The mount summary restore needs, sorted by destination.

    Volumes: ``{"Type": "volume", "Destination", "RW", "Name", "Driver", "Anonymous", "Origin", "Mode"?}``;
    binds: ``{"Type": "bind", "Destination", "RW", "Source", "Propagation", "Origin", "Mode"?}``;
    tmpfs: ``{"Type": "tmpfs", "Destination", "RW", "Origin"}``. ``Origin`` says where the mount is
    declared: "binds", "mounts" (HostConfig), "config" (Config.Volumes), "image" (its VOLUME),
    "tmpfs" (HostConfig.Tmpfs), "volumes_from" or "unknown".
    """
    binds = host_config.get("Binds") or []
    bind_sources = {_bind_source(b) for b in binds}
    api_mounts = host_config.get("Mounts") or []
    mount_sources = {m.get("Source") for m in api_mounts if m.get("Source")}
    mount_targets = {m.get("Target") for m in api_mounts}
    config_volumes = (container.get("Config") or {}).get("Volumes") or {}
    image_volumes = image_config.get("Volumes") or {}
    summary = []
    for mount in container.get("Mounts") or []:
        kind = mount.get("Type")
        dest = mount.get("Destination")
        entry = {"Type": kind, "Destination": dest, "RW": bool(mount.get("RW"))}
        if kind == "volume":
            name = mount.get("Name") or ""
            referenced = name in bind_sources or name in mount_sources
            entry["Name"] = name
            entry["Driver"] = mount.get("Driver") or "local"
            entry["Anonymous"] = bool(_HEX64.match(name)) and not referenced
            if name in bind_sources:
                origin = "binds"
            elif name in mount_sources or dest in mount_targets:
                origin = "mounts"
            elif dest in image_volumes:
                origin = "image"
            elif dest in config_volumes:
                origin = "config"
            elif host_config.get("VolumesFrom"):
                origin = "volumes_from"
            else:
                origin = "unknown"
            entry["Origin"] = origin
        elif kind == "bind":
            entry["Source"] = mount.get("Source")
            entry["Propagation"] = mount.get("Propagation") or ""
            entry["Origin"] = "mounts" if dest in mount_targets else "binds"
        else:
            entry["Origin"] = "mounts" if dest in mount_targets else "unknown"
        if mount.get("Mode"):
            entry["Mode"] = mount["Mode"]
        summary.append(entry)
    for dest in sorted(host_config.get("Tmpfs") or {}):
        if not any(m["Destination"] == dest for m in summary):
            summary.append({"Type": "tmpfs", "Destination": dest, "RW": True, "Origin": "tmpfs"})
    summary.sort(key=lambda m: (m["Destination"] or "", m["Type"] or ""))
    return summary


def capture(container_inspect, image_inspect, network_inspects=None, volume_inspects=None, engine_info=None):
    """Turn ``docker inspect`` output into the portable run config.

    :param container_inspect: ``APIClient.inspect_container()`` of the container.
    :param image_inspect: ``APIClient.inspect_image()`` of its image (``Config.Image``); ``None``
        when the image is gone, in which case every non-empty Config field is captured.
    :param network_inspects: inspect documents of the container's networks (list, or dict by
        name); user-defined ones become ``network_definitions``. A user-defined network without
        an inspect document gets the minimal definition ``{"Name": name}``.
    :param volume_inspects: inspect documents of the mounted volumes (list or dict by name); a
        volume without one gets its definition from the container's ``Mounts`` (driver only).
    :param engine_info: optional ``APIClient.info()`` of the source engine, to tell the engine's
        configured defaults (``LoggingDriver``, ``DefaultRuntime``, ``CgroupVersion``, host
        ``Name``) from user settings. Without it json-file, runc, either cgroupns mode and (for
        host-network containers) any hostname count as defaults.
    :returns: ``{"name", "image", "config", "host_config", "networks", "network_definitions",
        "volume_definitions", "mounts"}`` (see the module docstring and ``to_create_body``).
    """
    if not isinstance(container_inspect, dict) or "Config" not in container_inspect:
        raise RunConfigError("capture() needs a container inspect document (with Config and HostConfig).")
    image_config = ((image_inspect or {}).get("Config")) or {}
    host_config = container_inspect.get("HostConfig") or {}
    config = container_inspect.get("Config") or {}
    short_id = _short_id(container_inspect)
    hostname = config.get("Hostname") or ""

    networks = {}
    settings = (container_inspect.get("NetworkSettings") or {}).get("Networks") or {}
    for name in sorted(settings):
        networks[name] = _capture_endpoint(settings[name] or {}, short_id, hostname)

    by_name = _by_name(network_inspects)
    network_definitions = {}
    for name in sorted(networks):
        if name in PREDEFINED_NETWORKS:
            continue
        doc = by_name.get(name) or by_name.get((settings.get(name) or {}).get("NetworkID") or "")
        network_definitions[name] = network_definition(doc) if doc else {"Name": name}
        network_definitions[name]["Name"] = name

    mounts = _capture_mounts(container_inspect, image_config, host_config)
    volumes = _by_name(volume_inspects)
    volume_definitions = {}
    for mount in mounts:
        if mount["Type"] != "volume" or not mount.get("Name"):
            continue
        doc = volumes.get(mount["Name"])
        if doc:
            definition = volume_definition(doc)
        else:
            definition = {
                "Name": mount["Name"],
                "Driver": mount.get("Driver") or "local",
                "DriverOpts": {},
                "Labels": {},
            }
        definition["Anonymous"] = mount["Anonymous"]
        volume_definitions[mount["Name"]] = definition

    return {
        "name": (container_inspect.get("Name") or "").lstrip("/"),
        "image": config.get("Image") or container_inspect.get("Image"),
        "config": _capture_config(container_inspect, image_config, host_config, engine_info),
        "host_config": _capture_host_config(container_inspect, engine_info),
        "networks": networks,
        "network_definitions": network_definitions,
        "volume_definitions": volume_definitions,
        "mounts": mounts,
    }


# --------------------------------------------------------------------------------------------
# definitions of networks and volumes


def network_definition(network_inspect):
    """The creatable part of a ``docker network inspect`` document.

    Returns ``{"Name", "Driver", "Options", "IPAM": {"Driver", "Config", "Options"}, "Labels",
    "Internal", "Attachable", "EnableIPv6", "Scope", "Ingress"}``. ``IPAM.Config`` is kept even
    when the engine picked the subnet (inspect cannot tell), because static container addresses
    need it; a restore that must avoid subnet clashes may drop it.
    """
    ipam = network_inspect.get("IPAM") or {}
    pools = []
    for pool in ipam.get("Config") or []:
        pools.append({k: v for k, v in pool.items() if not _blank(v)})
    return {
        "Name": network_inspect.get("Name"),
        "Driver": network_inspect.get("Driver") or "bridge",
        "Options": dict(network_inspect.get("Options") or {}),
        "IPAM": {
            "Driver": ipam.get("Driver") or "default",
            "Config": pools,
            "Options": dict(ipam.get("Options") or {}),
        },
        "Labels": dict(network_inspect.get("Labels") or {}),
        "Internal": bool(network_inspect.get("Internal")),
        "Attachable": bool(network_inspect.get("Attachable")),
        "EnableIPv6": bool(network_inspect.get("EnableIPv6")),
        "Scope": network_inspect.get("Scope") or "local",
        "Ingress": bool(network_inspect.get("Ingress")),
    }


def network_create_kwargs(definition, name=None):
    """Keyword arguments for ``APIClient.create_network(**kwargs)`` from ``network_definition()``."""
    ipam = definition.get("IPAM") or {}
    ipam_body = None
    if ipam.get("Config") or ipam.get("Options") or (ipam.get("Driver") not in (None, "", "default")):
        ipam_body = {
            "Driver": ipam.get("Driver") or "default",
            "Config": copy.deepcopy(ipam.get("Config") or []),
            "Options": dict(ipam.get("Options") or {}) or None,
        }
    kwargs = {
        "name": name or definition["Name"],
        "driver": definition.get("Driver") or None,
        "options": dict(definition.get("Options") or {}) or None,
        "ipam": ipam_body,
        "check_duplicate": True,
        "internal": bool(definition.get("Internal")),
        "labels": dict(definition.get("Labels") or {}) or None,
        "enable_ipv6": bool(definition.get("EnableIPv6")),
        "attachable": bool(definition.get("Attachable")) or None,
    }
    if definition.get("Scope") and definition.get("Scope") != "local":
        kwargs["scope"] = definition["Scope"]
    if definition.get("Ingress"):
        kwargs["ingress"] = True
    return kwargs


def volume_definition(volume_inspect):
    """The creatable part of ``docker volume inspect``: ``{"Name", "Driver", "DriverOpts", "Labels", "Scope"}``."""
    return {
        "Name": volume_inspect.get("Name"),
        "Driver": volume_inspect.get("Driver") or "local",
        "DriverOpts": dict(volume_inspect.get("Options") or {}),
        "Labels": dict(volume_inspect.get("Labels") or {}),
        "Scope": volume_inspect.get("Scope") or "local",
    }


def volume_create_kwargs(definition, name=None):
    """Keyword arguments for ``APIClient.create_volume(**kwargs)`` from ``volume_definition()``."""
    return {
        "name": name or definition["Name"],
        "driver": definition.get("Driver") or "local",
        "driver_opts": dict(definition.get("DriverOpts") or {}) or None,
        "labels": dict(definition.get("Labels") or {}) or None,
    }


def connect_kwargs(endpoint_config):
    """Keyword arguments for ``APIClient.connect_container_to_network(container, net, **kwargs)``.

    ``endpoint_config`` is an API endpoint config as in ``to_create_body()``'s ``extra_networks``.
    (Or POST it yourself: ``{"Container": id, "EndpointConfig": endpoint_config}``.)
    """
    ipam = endpoint_config.get("IPAMConfig") or {}
    kwargs = {}
    if endpoint_config.get("Aliases"):
        kwargs["aliases"] = list(endpoint_config["Aliases"])
    if endpoint_config.get("Links"):
        kwargs["links"] = [
            tuple(link.split(":", 1)) if ":" in link else (link, None) for link in endpoint_config["Links"]
        ]
    if ipam.get("IPv4Address"):
        kwargs["ipv4_address"] = ipam["IPv4Address"]
    if ipam.get("IPv6Address"):
        kwargs["ipv6_address"] = ipam["IPv6Address"]
    if ipam.get("LinkLocalIPs"):
        kwargs["link_local_ips"] = list(ipam["LinkLocalIPs"])
    if endpoint_config.get("DriverOpts"):
        kwargs["driver_opt"] = dict(endpoint_config["DriverOpts"])
    if endpoint_config.get("MacAddress"):
        kwargs["mac_address"] = endpoint_config["MacAddress"]
    return kwargs


# --------------------------------------------------------------------------------------------
# create body

OVERRIDE_KEYS = ("name", "image", "port_map", "bind_map", "network_map", "labels", "references")


class _References:
    """The container references of a migrated group: source reference (id or name) -> name on the target."""

    def __init__(self, references):
        self.references = {str(k).lstrip("/"): v for k, v in (references or {}).items()}

    def resolve(self, reference):
        reference = (reference or "").strip().lstrip("/")
        target = self.references.get(reference)
        return {"Name": "/" + target} if target else None


def _port_key(spec):
    spec = str(spec)
    return spec if "/" in spec else spec + "/tcp"


def _host_side(value):
    """18080 / "18080" / "127.0.0.1:18080" / "[::1]:18080" -> (HostIp or None, HostPort)."""
    text = str(value)
    if text.startswith("["):
        host, _sep, port = text[1:].partition("]:")
        return host, port
    if ":" in text:
        host, port = text.rsplit(":", 1)
        return host, port
    return None, text


def _remap_ports(port_bindings, port_map):
    bindings = copy.deepcopy(port_bindings or {})
    for spec, value in port_map.items():
        key = _port_key(spec)
        if key not in bindings:
            raise RunConfigError(
                "port_map names {}, but the container publishes only {}; use container port specs such as "
                "'8080/tcp' as keys.".format(key, ", ".join(sorted(bindings)) or "no ports")
            )
        if value is None:
            del bindings[key]
            continue
        current = bindings[key] or [{"HostIp": "", "HostPort": ""}]
        values = value if isinstance(value, (list, tuple)) else [value] * len(current)
        if len(values) != len(current):
            raise RunConfigError(
                f"port_map for {key} gives {len(values)} host bindings but the container has {len(current)}; "
                f"give one value or a list of {len(current)}."
            )
        remapped = []
        for binding, target in zip(current, values):
            host_ip, host_port = _host_side(target)
            new = dict(binding)
            new["HostPort"] = host_port
            if host_ip is not None:
                new["HostIp"] = host_ip
            remapped.append(new)
        bindings[key] = remapped
    return bindings


def _remap_path(path, bind_map):
    """Replace the longest ``bind_map`` prefix of ``path`` (whole path components only)."""
    best = None
    for old, new in bind_map.items():
        stem = old.rstrip("/") or "/"
        matches = stem == "/" or path == stem or path.startswith(stem + "/")
        if matches and (best is None or len(stem) > len(best[0])):
            best = (stem, new)
    if best is None:
        return path
    stem, new = best
    rest = path if stem == "/" else path[len(stem) :]
    return (new.rstrip("/") + rest) or "/"


def _remap_binds(host_config, bind_map):
    binds = []
    for bind in host_config.get("Binds") or []:
        source, sep, rest = bind.partition(":")
        if source.startswith("/"):
            source = _remap_path(source, bind_map)
        binds.append(source + sep + rest)
    if binds:
        host_config["Binds"] = binds
    mounts = []
    for mount in host_config.get("Mounts") or []:
        mount = dict(mount)
        if mount.get("Type") == "bind" and mount.get("Source"):
            mount["Source"] = _remap_path(mount["Source"], bind_map)
        mounts.append(mount)
    if mounts:
        host_config["Mounts"] = mounts


def to_create_body(run_config, overrides=None):
    """Build the create request for ``APIClient.create_container_from_config(body, name=name)``.

    :param overrides: optional dict: ``name``; ``image``; ``port_map`` (container port spec ->
        new host side: ``18080``, ``"127.0.0.1:18080"``, a list with one value per existing
        binding, or ``None`` to stop publishing that port); ``bind_map`` (old host path prefix ->
        new prefix, applied to bind sources in ``Binds`` and ``Mounts``); ``network_map`` (old
        network name -> new name); ``labels`` (extra labels, e.g. the config digest); ``references``
        (container reference on the source, an id or a name -> the container's name on the target: the
        ``container:`` modes, ``VolumesFrom`` and ``Links`` of a dependency group). Next to
        ``NetworkMode: container:<x>`` the settings the engine refuses there (hostname, domain name, MAC
        address, published ports, DNS, links) are left out: they are the other container's.
    :returns: ``(name, body, extra_networks)``. ``body`` has the Config fields, ``Image``,
        ``HostConfig`` and, when the first network has endpoint settings, a ``NetworkingConfig``
        with that ONE endpoint (API < 1.44 takes one at create). ``extra_networks`` is a list of
        ``(network_name, endpoint_config)``, sorted by name, to connect after create and before
        start (see ``connect_kwargs()``).
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(OVERRIDE_KEYS))
    if unknown:
        raise RunConfigError(
            "Unknown override(s) {}; supported: {}.".format(", ".join(unknown), ", ".join(OVERRIDE_KEYS))
        )
    name = overrides.get("name") or run_config.get("name")
    image = overrides.get("image") or run_config.get("image")
    if not image:
        raise RunConfigError("The run config has no image and no image override was given.")

    body = copy.deepcopy(run_config.get("config") or {})
    body["Image"] = image
    labels = dict(body.get("Labels") or {})
    labels.update(overrides.get("labels") or {})
    if labels:
        body["Labels"] = labels
    else:
        body.pop("Labels", None)

    host_config = copy.deepcopy(run_config.get("host_config") or {})
    if overrides.get("port_map"):
        host_config["PortBindings"] = _remap_ports(host_config.get("PortBindings"), overrides["port_map"])
        if not host_config["PortBindings"]:
            del host_config["PortBindings"]
    if overrides.get("bind_map"):
        _remap_binds(host_config, overrides["bind_map"])

    network_map = overrides.get("network_map") or {}
    mode = _network_mode(host_config)
    primary = _primary_network(mode)
    if primary in network_map:
        primary = network_map[primary]
        host_config["NetworkMode"] = primary
    endpoints = {}
    for net, endpoint in (run_config.get("networks") or {}).items():
        endpoints[network_map.get(net, net)] = copy.deepcopy(endpoint or {})
    body["HostConfig"] = host_config

    if endpoints.get(primary):
        body["NetworkingConfig"] = {"EndpointsConfig": {primary: endpoints[primary]}}
    extra_networks = [(net, endpoints[net]) for net in sorted(endpoints) if net != primary]
    if mode.startswith("container:") or mode in ("host", "none"):
        extra_networks = []
    rewrite_references(body, {}, _References(overrides.get("references")))
    drop_shared_network_settings(body)
    return name, body, extra_networks


# --------------------------------------------------------------------------------------------
# what a create body needs on the engine


def needed_networks(body, extra_networks):
    """User-defined networks a create body and its ``extra_networks`` attach to, in attach order.

    The primary network (``HostConfig.NetworkMode``, unless "default" or ``container:<id>``), the
    endpoint of ``NetworkingConfig``, then the extra networks; ``PREDEFINED_NETWORKS`` are left out.
    """
    names = []
    mode = (body.get("HostConfig") or {}).get("NetworkMode") or "default"
    if mode not in ("default", "") and not mode.startswith("container:"):
        names.append(mode)
    names.extend((body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {})
    names.extend(net for net, _endpoint in extra_networks)
    seen = []
    for name in names:
        if name not in seen and name not in PREDEFINED_NETWORKS:
            seen.append(name)
    return seen


def named_volumes(body):
    """Sorted names of the named volumes a create body mounts (``Binds`` and ``Mounts``)."""
    host_config = body.get("HostConfig") or {}
    names = []
    for bind in host_config.get("Binds") or []:
        source = _bind_source(bind)
        if source and not source.startswith("/"):
            names.append(source)
    for mount in host_config.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Source"):
            names.append(mount["Source"])
    return sorted(set(names))


def bind_sources(body):
    """Sorted host paths a create body bind-mounts (``Binds`` and ``Mounts``)."""
    host_config = body.get("HostConfig") or {}
    paths = []
    for bind in host_config.get("Binds") or []:
        source = _bind_source(bind)
        if source.startswith("/"):
            paths.append(source)
    for mount in host_config.get("Mounts") or []:
        if mount.get("Type") == "bind" and mount.get("Source"):
            paths.append(mount["Source"])
    return sorted(set(paths))


# --------------------------------------------------------------------------------------------
# digest, redaction


def _canonical(value):
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def config_digest(body, extra_networks=None):
    """sha256 (hex) of the canonical JSON of a create body, without the digest label itself.

    Canonical: keys sorted, ``None`` values dropped, compact separators, UTF-8. Include the
    ``extra_networks`` from ``to_create_body()`` so that a change there also changes the digest.
    Restore stores the result as label ``ferry.docker.config-digest`` (see ``stamp_digest``).
    """
    doc = _canonical(body)
    if isinstance(doc.get("Labels"), dict):
        labels = dict(doc["Labels"])
        labels.pop(DIGEST_LABEL, None)
        if labels:
            doc["Labels"] = labels
        else:
            del doc["Labels"]
    if extra_networks:
        doc = {"body": doc, "extra_networks": [[net, _canonical(ep)] for net, ep in extra_networks]}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stamp_digest(body, extra_networks=None):
    """Set the digest label on ``body`` (in place) and return the digest."""
    digest = config_digest(body, extra_networks)
    body["Labels"] = dict(body.get("Labels") or {})
    body["Labels"][DIGEST_LABEL] = digest
    return digest


def redact_env(entries, mask=REDACTED, prefix=""):
    """``entries`` with every environment value replaced by ``mask``: the one redaction of env values.

    An entry ``NAME=value`` becomes ``NAME=********``; an entry without ``=`` (a name only) stays as
    it is. With ``prefix`` (``"ENV "`` for Dockerfile-style changes) only the entries that start with
    it are redacted, after the prefix, and the others are kept unchanged. Module results and reports
    use this, so that names stay visible (useful) and values never reach a log.
    """
    redacted = []
    for entry in entries or []:
        text = str(entry)
        if text.startswith(prefix) and "=" in text[len(prefix) :]:
            redacted.append(prefix + _env_key(text[len(prefix) :]) + "=" + mask)
        else:
            redacted.append(entry)
    return redacted


def redact(run_config, mask=REDACTED):
    """A copy of ``run_config`` with every env value replaced by ``mask`` (``NAME=********``)."""
    redacted = copy.deepcopy(run_config)
    config = redacted.get("config") or {}
    if config.get("Env"):
        config["Env"] = redact_env(config["Env"], mask)
    return redacted
