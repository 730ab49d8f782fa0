# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The checks of docker_restore_preflight that need no Docker engine.

Architecture names, layer reuse, published host ports and their overlaps, subnet clashes, bind
source paths and free disk space. Everything takes plain values (create bodies, ``APIClient``
list and inspect documents, paths) and returns plain values; the module does the Docker calls.
The few functions that look at this host (``nearest_existing``, ``free_space``,
``bind_path_problem``, ``bind_error``) only read, or bind a socket and close it at once.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess

# uname -m / docker info / GOARCH spellings -> the GOARCH name Docker uses in image platforms.
ARCHITECTURE_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "x64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "arm64v8": "arm64",
    "armv8": "arm64",
    "arm": "arm",
    "armhf": "arm",
    "armel": "arm",
    "armv5tel": "arm",
    "armv6": "arm",
    "armv6l": "arm",
    "armv7": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "arm32v6": "arm",
    "arm32v7": "arm",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "x86": "386",
    "386": "386",
    "ppc64le": "ppc64le",
    "ppc64el": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64el": "mips64le",
    "mips64le": "mips64le",
    "loongarch64": "loong64",
    "loong64": "loong64",
}

# bind() errors that mean the engine could not publish the port either.
_BIND_PROBLEMS = (errno.EADDRINUSE, errno.EADDRNOTAVAIL)

# Programs a transfer may need on a host, and the Debian package that provides each.
PROGRAM_PACKAGES = {
    "rsync": "rsync",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "age": "age",
    # a direct migration's image stream and its guard use the docker command on the target (cli_engine_problem)
    "docker": "docker.io (docker-cli on Debian 13 and later)",
}
# The oldest release of a program that has every option ferry.docker passes it, and the option that decides it.
PROGRAM_MINIMUM = {"rsync": ((3, 2, 3), "--mkpath, which creates the receiving directory")}
VERSION_SECONDS = 10
_VERSION = re.compile(r"\bversion\s+v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text):
    """``(3, 2, 7)`` from a program's ``--version`` output (``rsync  version 3.2.7  protocol version 31``); None
    when it names no version."""
    found = _VERSION.search(str(text or ""))
    if not found:
        return None
    return tuple(int(part or 0) for part in found.groups())


def program_version(path, timeout=VERSION_SECONDS):
    """The first lines ``path --version`` prints (stdout, else stderr); "" when it cannot be run in ``timeout``."""
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout or done.stderr)[:1000]


def program_problems(programs, where="this host", which=shutil.which, version=program_version):
    """A problem (text) for each of ``programs`` that is not on PATH, naming the package to install, or that is
    older than the release with the options ferry.docker passes it (``PROGRAM_MINIMUM``)."""
    problems = []
    for program in programs:
        path = which(program)
        if path is None:
            package = PROGRAM_PACKAGES.get(program)
            hint = f"install the Debian package {package}" if package else "install it"
            problems.append(f"{program} is not installed on {where} (not on PATH); {hint}")
            continue
        if program not in PROGRAM_MINIMUM:
            continue
        (minimum, needs), found = PROGRAM_MINIMUM[program], parse_version(version(path))
        if found is not None and found < minimum:
            wanted = ".".join(map(str, minimum))
            problems.append(
                f"{program} {'.'.join(map(str, found))} on {where} ({path}) is older than {wanted}, the first "
                f"release with {needs}; install {program} {wanted} or newer there (Debian 11 and later ship one)"
            )
    return problems


CLI_ENGINE_SECONDS = 30
# What tells two engines apart: the engine's ID, and its root directory (a rootless engine beside the system's);
# printed as one JSON array.
CLI_ENGINE_FORMAT = "[{{json .ID}},{{json .DockerRootDir}}]"


def cli_engine_problem(info, where="this host", run=subprocess.run, timeout=CLI_ENGINE_SECONDS):
    """A problem (text) when the ``docker`` command here does not reach the engine that ``info`` (the engine's
    ``/info``, as this module reached it) describes, else None.

    A direct migration loads the image stream and its guard stops a copy with the docker command over ssh, which
    uses the command's own engine (its context, else /var/run/docker.sock), not the modules' docker_host. If they
    differ, the image would land on another engine, or nowhere, once the source is stopped. The command runs here
    without the DOCKER_* variables of this process: a play's ``environment`` gives them to its modules, not to
    that ssh session."""
    wanted = (info.get("ID"), info.get("DockerRootDir"))
    try:
        done = run(
            ["docker", "info", "--format", CLI_ENGINE_FORMAT],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            env={name: value for name, value in os.environ.items() if not name.startswith("DOCKER_")},
        )
    except subprocess.TimeoutExpired:
        found = f"no answer within {timeout} s"
    except OSError as exc:
        found = f"it could not run: {exc}"
    else:
        answer = (done.stdout or "").strip()
        try:
            reached = tuple(json.loads(answer)) if done.returncode == 0 else None
        except (ValueError, TypeError):
            reached = None
        if reached == wanted:
            return None
        found = (
            f"it reaches another engine ({answer})"
            if done.returncode == 0
            else f"it failed: {((done.stderr or done.stdout) or '').strip()[-300:] or 'no message'}"
        )
    return (
        f"the docker command on {where} does not reach the engine this check used ({found}); a direct transfer "
        "loads the image and the run's guard acts there with that command, over ssh. Give it that engine (its "
        "default socket /var/run/docker.sock, or its context) or use migrate_transfer=controller"
    )


# --------------------------------------------------------------------------------------------
# architecture and layers


def normalize_architecture(name):
    """``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64``, ``armv7l`` -> ``arm``, ``i686`` -> ``386`` ...

    Unknown names come back lower-cased, so that equal spellings still compare equal.
    """
    text = str(name or "").strip().lower()
    return ARCHITECTURE_ALIASES.get(text, text)


def layers_present(wanted, local_layer_lists):
    """The longest prefix of ``wanted`` (diff IDs, bottom first) that some local image starts with.

    A layer is only reusable when every layer below it is the same too (the chain ID of a layer
    covers the whole stack under it), so the answer is a prefix, never a set. ``local_layer_lists``
    holds the ``RootFS.Layers`` of the local images.
    """
    wanted = list(wanted or [])
    best = 0
    for layers in local_layer_lists:
        count = 0
        for mine, theirs in zip(wanted, layers or []):
            if mine != theirs:
                break
            count += 1
        best = max(best, count)
        if best == len(wanted):
            break
    return wanted[:best]


# --------------------------------------------------------------------------------------------
# published host ports


def port_label(port):
    """``8080/tcp``, ``127.0.0.1:8080/tcp`` or ``[::1]:8080/tcp`` for a ``published_ports()`` entry."""
    host_ip = port["host_ip"]
    if host_ip and ":" in host_ip:
        return "[{}]:{}/{}".format(host_ip.strip("[]"), port["host_port"], port["proto"])
    if host_ip:
        return "{}:{}/{}".format(host_ip, port["host_port"], port["proto"])
    return "{}/{}".format(port["host_port"], port["proto"])


def _fixed_port(text):
    """HostPort ``"8080"`` (or ``"8080-8080"``) -> 8080; ``""`` or a real range -> None (the engine picks)."""
    text = str(text or "").strip()
    low, _sep, high = text.partition("-")
    if not low.isdigit() or (high and high != low):
        return None
    return int(low)


def published_ports(body):
    """The fixed host ports a create body publishes, sorted by container port.

    Each is ``{"host_ip", "host_port", "proto", "container_port"}``; ``host_ip`` is ``""`` for
    every address, ``container_port`` the ``PortBindings`` key (what ``port_map`` takes). Ports
    the engine chooses (empty ``HostPort`` or a range) cannot clash and are left out, and so is
    everything with ``--network host``, which publishes nothing.
    """
    host_config = body.get("HostConfig") or {}
    if host_config.get("NetworkMode") == "host":
        return []
    bindings = host_config.get("PortBindings") or {}
    ports = []
    for spec in sorted(bindings):
        proto = spec.partition("/")[2] or "tcp"
        for binding in bindings[spec] or []:
            binding = binding or {}
            host_port = _fixed_port(binding.get("HostPort"))
            if host_port is None:
                continue
            ports.append(
                {
                    "host_ip": (binding.get("HostIp") or "").strip("[]"),
                    "host_port": host_port,
                    "proto": proto,
                    "container_port": spec,
                }
            )
    return ports


def _address(text):
    text = str(text or "").strip().strip("[]")
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return text


def ips_overlap(first, second):
    """Whether two host addresses of published ports can take the same connections.

    ``""`` (every address) overlaps everything; ``0.0.0.0`` overlaps every IPv4 address and
    ``::`` every IPv6 address (Docker binds the two families separately); otherwise only equal
    addresses overlap.
    """
    first, second = _address(first), _address(second)
    if first is None or second is None:
        return True
    if isinstance(first, str) or isinstance(second, str):
        return first == second
    if first.version != second.version:
        return False
    return first.is_unspecified or second.is_unspecified or first == second


def container_name(container):
    """The name of an ``APIClient.containers()`` entry, without the leading slash (link aliases skipped)."""
    names = [n.lstrip("/") for n in container.get("Names") or []]
    plain = [n for n in names if "/" not in n]
    if plain or names:
        return (plain or names)[0]
    return (container.get("Id") or "")[:12]


def port_holders(port, containers):
    """Names of the containers (``APIClient.containers()`` entries) that publish a host port overlapping ``port``."""
    holders = []
    for container in containers:
        for entry in container.get("Ports") or []:
            if (
                entry.get("PublicPort") == port["host_port"]
                and (entry.get("Type") or "tcp") == port["proto"]
                and ips_overlap(entry.get("IP"), port["host_ip"])
            ):
                name = container_name(container)
                if name not in holders:
                    holders.append(name)
                break
    return holders


def duplicate_ports(ports):
    """Pairs ``(a, b)`` of ``published_ports()`` entries of one body that would take the same host port."""
    pairs = []
    for index, first in enumerate(ports):
        for second in ports[index + 1 :]:
            if (
                first["host_port"] == second["host_port"]
                and first["proto"] == second["proto"]
                and ips_overlap(first["host_ip"], second["host_ip"])
            ):
                pairs.append((first, second))
    return pairs


def bind_error(host_ip, host_port, proto):
    """Try to bind ``host_ip:host_port/proto`` on this host; the errno that stops the engine from doing it, or None.

    The socket is closed at once. ``""`` tries ``0.0.0.0`` and, when this host has IPv6, ``::``.
    Only ``EADDRINUSE`` and ``EADDRNOTAVAIL`` count (``EACCES`` for a low port only means this
    process is not root; dockerd is). TCP sockets set ``SO_REUSEADDR`` as Docker's proxy does, so
    that connections in TIME_WAIT do not count as in use. Other protocols are not tried.
    """
    if proto not in ("tcp", "udp"):
        return None
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    addresses = [host_ip.strip("[]")] if host_ip else ["0.0.0.0", "::"]
    for address in addresses:
        parsed = _address(address)
        if not isinstance(parsed, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            continue
        family = socket.AF_INET6 if parsed.version == 6 else socket.AF_INET
        try:
            sock = socket.socket(family, kind)
        except OSError:  # no IPv6 on this host
            continue
        try:
            if proto == "tcp":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, host_port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL and not host_ip:
                continue  # "::" on a host with IPv6 switched off: Docker skips it too
            if exc.errno in _BIND_PROBLEMS:
                return exc.errno
        finally:
            sock.close()
    return None


def port_bind_problem(port):
    """The problem with binding a ``published_ports()`` entry on this host (see ``bind_error()``), or None."""
    error = bind_error(port["host_ip"], port["host_port"], port["proto"])
    if error is None:
        return None
    label, key = port_label(port), port["container_port"]
    if error == errno.EADDRNOTAVAIL:
        return (
            f"host address {port['host_ip']} of port {label} is not an address of this host; publish on another "
            f"address with port_map (key {key})"
        )
    return (
        f"host port {label} is in use by a process on this host (not a container); stop it or remap the port "
        f"with port_map (key {key})"
    )


# --------------------------------------------------------------------------------------------
# networks


def network_subnets(network):
    """The IPAM subnets of a network definition (``network_definition()``) or ``docker network inspect``."""
    pools = ((network or {}).get("IPAM") or {}).get("Config") or []
    return [pool["Subnet"] for pool in pools if (pool or {}).get("Subnet")]


def _ip_network(text):
    try:
        return ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        return None


def subnet_clashes(subnets, networks):
    """``(subnet, network name, its subnet)`` for every subnet of ``subnets`` overlapping one of ``networks``.

    ``networks`` are ``APIClient.networks()`` (or inspect) documents of the networks on the engine.
    Unparsable subnets are left to the engine to refuse.
    """
    clashes = []
    for text in subnets:
        mine = _ip_network(text)
        if mine is None:
            continue
        for network in networks:
            for other_text in network_subnets(network):
                other = _ip_network(other_text)
                if other is not None and other.version == mine.version and mine.overlaps(other):
                    clashes.append((text, network.get("Name") or network.get("Id", "")[:12], other_text))
    return clashes


# --------------------------------------------------------------------------------------------
# paths and disk space


def engine_is_local(base_url):
    """Whether the engine address is a Unix socket, i.e. dockerd runs on the host this code runs on."""
    text = str(base_url or "")
    return text.startswith(("unix://", "http+unix://", "/"))


def nearest_existing(path):
    """``path`` itself or its nearest ancestor that exists (a dangling symlink counts as existing)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def free_space(path):
    """``(st_dev, bytes free for unprivileged users)`` of the filesystem that holds (or would hold) ``path``."""
    anchor = nearest_existing(path)
    stat = os.stat(anchor)
    vfs = os.statvfs(anchor)
    return stat.st_dev, vfs.f_bavail * vfs.f_frsize


def bind_path_problem(path, container, create):
    """None when the bind source ``path`` exists or can be created (with ``create``), else the problem.

    Creatable: the nearest existing ancestor is a directory this process may write to, as
    ``docker_container_restore`` creates it with ``os.makedirs``.
    """
    if os.path.exists(path):
        return None
    if not create:
        return (
            f"bind mount source {path} of container {container} does not exist on this host; create it, "
            "move it with bind_map, or set create_bind_paths=true"
        )
    anchor = nearest_existing(path)
    if not os.path.isdir(anchor):
        return (
            f"bind mount source {path} of container {container} cannot be created: {anchor} is not a directory; "
            "move it with bind_map or remove what is in the way"
        )
    if not os.access(anchor, os.W_OK | os.X_OK):
        return (
            f"bind mount source {path} of container {container} cannot be created: {anchor} is not writable "
            "for this user; create it beforehand, run the task as root, or move it with bind_map"
        )
    return None


def human_bytes(count):
    """1536 -> ``1.5 KiB``; for messages only."""
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "bytes":
                return "1 byte" if count == 1 else f"{int(value)} bytes"
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"  # not reached


def disk_problems(dest, required_bytes, dest_space, docker_root, docker_required_bytes, root_space):
    """Problems with the free space for the bundle (under ``dest``) and for image and volume data (``docker_root``).

    ``dest_space`` and ``root_space`` are ``free_space()`` results, or None when unknown (then
    nothing is checked there). When both are on the same filesystem the two requirements add up.
    """
    problems = []
    same = dest_space is not None and root_space is not None and dest_space[0] == root_space[0]
    if same and required_bytes > 0 and docker_required_bytes > 0:
        need = required_bytes + docker_required_bytes
        if dest_space[1] < need:
            problems.append(
                f"only {human_bytes(dest_space[1])} is free on the filesystem that holds both {dest} (dest) and "
                f"Docker's root {docker_root}, but the bundle ({human_bytes(required_bytes)}) and the image and "
                f"volume data ({human_bytes(docker_required_bytes)}) need {human_bytes(need)} together; free "
                "space there or receive the bundle on another filesystem with dest"
            )
        return problems
    if dest_space is not None and required_bytes > 0 and dest_space[1] < required_bytes:
        problems.append(
            f"only {human_bytes(dest_space[1])} is free on the filesystem that holds {dest} (dest), but the "
            f"bundle needs {human_bytes(required_bytes)}; free space there or choose another dest"
        )
    if root_space is not None and docker_required_bytes > 0 and root_space[1] < docker_required_bytes:
        problems.append(
            f"only {human_bytes(root_space[1])} is free on the filesystem that holds Docker's root {docker_root}, "
            f"but the image and volume data need {human_bytes(docker_required_bytes)}; free space there "
            "(docker system prune removes unused data)"
        )
    return problems


def failure_message(container, host, problems):
    """One message naming the container and every problem, for ``fail_json``."""
    count = len(problems)
    listed = " ".join(f"({number}) {text}." for number, text in enumerate(problems, 1))
    return (
        f"container {container} cannot be restored on {host} as it is; {count} problem{'s' if count != 1 else ''}: "
        f"{listed} Nothing was changed: fix these and run again, or set fail_on_problems=false to get them "
        "as a result."
    )
