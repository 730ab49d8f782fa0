# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The host learns at once where a container it just started answers, so its first clients are not held.

Docker before 28 programs a published port's DNAT rule when it connects the container to its
network, before runc's prestart hook moves the container's veth into its namespace. A connection
that arrives in between is forwarded to an address that cannot answer yet: the host's ARP
request for it is lost, and the kernel asks again only after ``retrans_time_ms`` (1,000 ms by
default). Every connection until then waits in the neighbour queue, so every client of a container
started while it is being asked for (a migration's cutover, a rollback's restart) loses about a
second. Docker 28 (API 1.48) advertises a new endpoint's addresses itself (moby #49364).

For an older engine on this host, and when this process may send raw frames (root), ``announce``
asks for each of the container's bridge addresses once, right after the start, the way the kernel
would: an ARP request from the bridge's own address, sent to the container's MAC address. Its answer
completes a waiting neighbour entry and releases the queued connections; where no entry waits, the
kernel ignores the answer. Nothing on the host is configured or changed. Every failure is only a
reason the announcement was skipped.

While the engine starts the container, ``hasten`` asks as the kernel does (a broadcast from the bridge's
address), every 20 ms, for each address the host is still resolving on a bridge: the container answers
as soon as its interface is up, before the engine has started its process and returned. Measured on
Docker 20.10 in the lab: the DNAT rule was there 46 ms into a 0.55 s start, the interface answered
0.45 s into it, the start returned 0.1 s later; the waiting connection went on at the answer, not at
the announcement after the start. ``start`` does both around ``client.start``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import threading
import time

# This file imports nothing of the collection: the guard, a standalone process, loads it from a copy beside its
# journal (``_step_guard.guard_script``) to announce the sources it puts back.

# The Docker SDK's base URLs of the engine's local unix socket
LOCAL_BASE_URLS = ("http+docker://localhost", "http+docker://localunixsocket")
ENGINE_ANNOUNCES = (1, 48)  # the API version of Docker 28, whose engine advertises new endpoints itself
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
_ETH_P_ARP = 0x0806
_ETH_P_IP = 0x0800
_ARP_REQUEST = 1
_SYS_NET = "/sys/class/net"
_ARP_TABLE = "/proc/net/arp"
_BROADCAST = "ff:ff:ff:ff:ff:ff"
_SIOCGIFADDR = 0x8915
HASTEN_SECONDS = 0.02  # how often a start in progress asks again for the addresses the host waits for
HASTEN_LIMIT_SECONDS = 30.0


def mac_bytes(text):
    """``02:42:ac:11:00:02`` as 6 bytes; ValueError for anything else."""
    parts = str(text or "").strip().split(":")
    if len(parts) != 6 or not all(len(part) == 2 for part in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(part, 16) for part in parts)


def arp_request(sender_mac, sender_ip, target_mac, target_ip):
    """An Ethernet frame with an ARP request for ``target_ip`` from ``sender_ip``, sent to ``target_mac`` only."""
    sender, target = mac_bytes(sender_mac), mac_bytes(target_mac)
    header = target + sender + struct.pack("!H", _ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, _ETH_P_IP, 6, 4, _ARP_REQUEST)
    arp += sender + socket.inet_aton(sender_ip) + bytes(6) + socket.inet_aton(target_ip)
    return header + arp


def bridge_interface(network):
    """The host interface of a ``bridge`` network (its inspect document), or None for other drivers."""
    if network.get("Driver") != "bridge":
        return None
    name = (network.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    return name or "br-" + str(network.get("Id", ""))[:12]


def _api(text):
    """``"1.41"`` -> ``(1, 41)``; ``(0, 0)`` when ``text`` is not a version (``_compat.api_tuple``, which this
    file cannot import)."""
    parts = str(text or "").strip().split(".")
    return (int(parts[0]), int(parts[1])) if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() else (0, 0)


def skip_reason(base_url, api_version, euid):
    """None if this process should announce a started container on this host's bridges, else why not."""
    if _api(api_version) >= ENGINE_ANNOUNCES:
        return f"the engine (API {api_version}) announces new containers itself"
    if base_url not in LOCAL_BASE_URLS:
        return "the Docker engine is not reached over a local unix socket"
    if euid != 0:
        return "sending ARP requests needs root"
    return None


def requests(container, networks, interface_mac):
    """``[(interface, frame)]`` for a container's inspect document: one ARP request per bridge address.

    ``networks`` maps a network's ID to its inspect document; ``interface_mac(name)`` is the MAC
    address of a host interface, or None when this host has no such interface.
    """
    out = []
    attached = ((container.get("NetworkSettings") or {}).get("Networks")) or {}
    for endpoint in attached.values():
        address, mac, gateway = endpoint.get("IPAddress"), endpoint.get("MacAddress"), endpoint.get("Gateway")
        network = networks.get(endpoint.get("NetworkID") or "")
        if not (address and mac and gateway and network):
            continue
        interface = bridge_interface(network)
        own = interface_mac(interface) if interface else None
        if own:
            out.append((interface, arp_request(own, gateway, mac, address)))
    return out


def interface_mac(name, root=_SYS_NET):
    """The MAC address of a host interface, read from sysfs; None if there is no such interface."""
    if not name or "/" in name or name in (".", ".."):
        return None
    try:
        with open(os.path.join(root, name, "address"), encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def send(interface, frame):
    """Send one frame on a host interface (needs CAP_NET_RAW)."""
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        sock.send(frame)


def unresolved(text, is_bridge):
    """``[(interface, address)]``: the entries of ``/proc/net/arp`` (its ``text``) that the host is still resolving
    (flags ``0x0``: a packet waits for the answer) on an interface for which ``is_bridge(name)`` holds."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 6 and fields[2] == "0x0" and is_bridge(fields[5]):
            out.append((fields[5], fields[0]))
    return out


def is_bridge(name, root=_SYS_NET):
    return (
        bool(name) and "/" not in name and name not in (".", "..") and os.path.isdir(os.path.join(root, name, "bridge"))
    )


def interface_address(name):
    """The IPv4 address of a host interface (a Docker bridge has one); OSError when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        data = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode("ascii")[:15]))
    return socket.inet_ntoa(data[20:24])


def hasten(client, sender=send, euid=None, table=_ARP_TABLE, interval=HASTEN_SECONDS, limit=HASTEN_LIMIT_SECONDS):
    """While a container starts (``stop = hasten(client)``, ``client.start(...)``, ``stop()``): every ``interval``
    seconds, ask once more on its bridge for each address the host is still resolving there.

    A connection forwarded to the container before its interface is up waits in the host's neighbour queue (see
    the module doc); the kernel asks again only after a second, and ``announce`` after the start has returned.
    Asked this way, as the kernel itself asks (a broadcast from the bridge's own address), it is answered as soon
    as the container's interface is up, while the engine still starts the process. Only addresses a packet waits
    for are asked for, only on bridges, and never after ``stop()`` or ``limit``. Returns ``stop``; it never raises.
    """
    if skip_reason(
        getattr(client, "base_url", None), getattr(client, "api_version", None), os.geteuid() if euid is None else euid
    ):
        return lambda: None
    done, own = threading.Event(), {}

    def ask():
        deadline = time.monotonic() + limit
        while not done.wait(interval) and time.monotonic() < deadline:
            try:
                with open(table, encoding="ascii") as handle:
                    waiting = unresolved(handle.read(), is_bridge)
            except (OSError, ValueError):
                return
            for interface, address in waiting:
                try:
                    if interface not in own:
                        own[interface] = (interface_mac(interface), interface_address(interface))
                    mac, gateway = own[interface]
                    if mac:
                        sender(interface, arp_request(mac, gateway, _BROADCAST, address))
                except Exception:  # a socket's, an address's: this bridge is not asked on again
                    own[interface] = (None, None)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()

    def stop():
        done.set()
        thread.join(1.0)

    return stop


def start(client, container_id):
    """``client.start(container_id)``, hastened while it runs and announced once it has (see ``hasten`` and
    ``announce``); what ``announce`` returns."""
    stop = hasten(client)
    try:
        client.start(container_id)
    finally:
        stop()
    return announce(client, container_id)


def announce(client, container_id, sender=send, euid=None):
    """After ``client.start(container_id)``: ask for the container's bridge addresses once (see the module doc).

    Returns the interfaces asked on, or the reason nothing was sent. Never raises for the engine,
    the network or the socket: the container runs either way.
    """
    reason = skip_reason(
        getattr(client, "base_url", None),
        getattr(client, "api_version", None),
        os.geteuid() if euid is None else euid,
    )
    if reason:
        return reason
    try:
        container = client.inspect_container(container_id)
        attached = ((container.get("NetworkSettings") or {}).get("Networks")) or {}
        networks = {}
        for endpoint in attached.values():
            network_id = endpoint.get("NetworkID")
            if network_id and network_id not in networks:
                networks[network_id] = client.inspect_network(network_id)
        sent = []
        for interface, frame in requests(container, networks, interface_mac):
            sender(interface, frame)
            sent.append(interface)
    except Exception as exc:  # the SDK's errors, a socket's OSError, a malformed address: the start stands
        return f"not announced: {exc}"
    return sent
