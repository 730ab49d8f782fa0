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
"""

from __future__ import annotations

import os
import socket
import struct

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
