# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Docker's own grammar for the names a bundle brings, checked before the engine is touched.

A manifest is input, not truth: a volume "name" of ``/etc`` makes the ``local`` driver use that
host directory, a container name may equal an unrelated container, an image reference may hold
anything. Every name a restore passes to the engine is checked here first:

* container, volume and network names: moby's ``RestrictedNamePattern``,
  ``^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`` (so never a path, never empty), at most 255 characters;
* image references: the distribution reference grammar (``[domain[:port]/]path[:tag][@digest]``,
  lowercase path components, tag ``[\\w][\\w.-]{0,127}``, name at most 255 characters), or an
  image ID (``sha256:`` and 64 hex digits);
* driver names (volume, network, log): a plugin reference (``local``, ``vieux/sshfs:latest``).

``volume_option_problems`` names the ``local`` driver options that mount a host path or device
into the volume (``type=none``/``o=bind``/``device=/...``): a restore applies them only when its
policy allows privileged settings.
"""

from __future__ import annotations

import re

NAME_MAX = 255
_RESTRICTED = "[a-zA-Z0-9][a-zA-Z0-9_.-]+"
_RESTRICTED_RE = re.compile(rf"^{_RESTRICTED}\Z")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?\Z", re.ASCII)
_IMAGE_ID_RE = re.compile(r"^(?:sha256:)?[0-9a-f]{64}\Z")
_DRIVER_RE = re.compile(rf"^{_NAME}(?::{_TAG})?\Z", re.ASCII)
KINDS = ("container", "volume", "network")


def name_problem(kind, name):
    """Why ``name`` is not a valid Docker ``kind`` (container, volume, network) name, or None."""
    if not isinstance(name, str) or not name:
        return f"the {kind} name {name!r} is empty or not a string"
    bare = name[1:] if kind == "container" and name.startswith("/") else name
    if len(bare) > NAME_MAX or not _RESTRICTED_RE.match(bare):
        extra = " (an absolute path would make the driver use that host directory)" if bare.startswith("/") else ""
        return f"the {kind} name {name!r} is not a valid Docker {kind} name{extra}: Docker allows {_RESTRICTED}"
    return None


def image_problem(reference):
    """Why ``reference`` is not a valid image reference or image ID, or None."""
    if not isinstance(reference, str) or not reference:
        return f"the image reference {reference!r} is empty or not a string"
    if _IMAGE_ID_RE.match(reference):
        return None
    match = _REFERENCE_RE.match(reference)
    if not match or len(match.group("name")) > NAME_MAX:
        return f"the image reference {reference!r} does not follow Docker's reference grammar"
    return None


def split_reference(reference):
    """``(repository, tag)`` of a checked image reference; the tag defaults to ``latest``."""
    match = _REFERENCE_RE.match(reference)
    if not match:
        raise ValueError(image_problem(reference))
    return match.group("name"), match.group("tag") or "latest"


def driver_problem(kind, driver):
    """Why ``driver`` is not a valid ``kind`` driver name (None or empty means the default), or None."""
    if driver in (None, ""):
        return None
    if not isinstance(driver, str) or len(driver) > NAME_MAX or not _DRIVER_RE.match(driver):
        return f"the {kind} driver {driver!r} is not a valid Docker driver or plugin name"
    return None


def volume_option_problems(definition):
    """The driver options of a volume definition that mount a host path or device (privileged), as sentences."""
    driver = (definition or {}).get("Driver") or "local"
    options = (definition or {}).get("DriverOpts") or {}
    if not isinstance(options, dict):
        return ["its driver options are not a mapping"]
    problems = []
    if driver != "local":
        return problems
    kind = str(options.get("type", "")).strip().lower()
    mount_options = [o.strip().lower() for o in str(options.get("o", "")).split(",")]
    device = str(options.get("device", ""))
    if kind in ("none", "bind") or {"bind", "rbind"} & set(mount_options):
        problems.append(f"local driver options type={kind or '(none)'} o={options.get('o', '')} bind-mount a host path")
    if device.startswith("/") and not problems:
        problems.append(f"local driver option device={device} mounts a host path or device")
    elif device.startswith("/"):
        problems[-1] += f" ({device})"
    return problems


def volume_definition_problems(name, definition):
    """Grammar problems of a recorded volume definition (its name and driver) as a list of sentences."""
    problems = []
    for problem in (name_problem("volume", name), driver_problem("volume", (definition or {}).get("Driver"))):
        if problem:
            problems.append(problem)
    recorded = (definition or {}).get("Name")
    if recorded not in (None, name):
        problem = name_problem("volume", recorded)
        if problem:
            problems.append(problem)
    return problems


def network_definition_problems(name, definition):
    """Grammar problems of a recorded network definition (its name and driver)."""
    problems = []
    for problem in (name_problem("network", name), driver_problem("network", (definition or {}).get("Driver"))):
        if problem:
            problems.append(problem)
    return problems


def manifest_name_problems(manifest):
    """Every name of a manifest that breaks Docker's grammar: container, images, volumes, networks."""
    problems = []
    container = manifest.get("container") or {}
    if container.get("name"):
        problems.append(name_problem("container", container["name"]))
    for name, definition in (manifest.get("volumes") or {}).items():
        problems.extend(volume_definition_problems(name, definition if isinstance(definition, dict) else {}))
    for name, definition in (manifest.get("networks") or {}).items():
        problems.extend(network_definition_problems(name, definition if isinstance(definition, dict) else {}))
    for artifact in manifest.get("artifacts") or []:
        if artifact.get("kind") == "volume" and artifact.get("type", "volume") == "volume":
            problems.append(name_problem("volume", artifact.get("volume") or artifact.get("name")))
        if artifact.get("kind") == "image":
            for tag in artifact.get("repo_tags") or []:
                problems.append(image_problem(tag))
            if artifact.get("image_id") is not None and not _IMAGE_ID_RE.match(str(artifact["image_id"])):
                problems.append(f"the image ID {artifact['image_id']!r} is not sha256: and 64 hex digits")
    return [p for p in problems if p]


def create_body_problems(name, body, extra_networks, named_volumes, needed_networks):
    """Grammar problems of the names a container create request uses.

    ``named_volumes`` and ``needed_networks`` are the lists ``_runconfig`` derives from the body: the
    container name, the image, every network and named volume, the log and volume drivers.
    """
    host_config = body.get("HostConfig") or {}
    problems = [name_problem("container", name), image_problem(body.get("Image"))]
    problems.extend(name_problem("volume", volume) for volume in named_volumes)
    problems.extend(name_problem("network", network) for network in needed_networks)
    mode = host_config.get("NetworkMode") or ""
    if mode.startswith("container:"):
        problems.append(name_problem("container", mode.split(":", 1)[1]))
    problems.append(driver_problem("log", (host_config.get("LogConfig") or {}).get("Type")))
    problems.append(driver_problem("volume", host_config.get("VolumeDriver")))
    for mount in host_config.get("Mounts") or []:
        driver = ((mount.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Name")
        problems.append(driver_problem("volume", driver))
    return [p for p in problems if p]
