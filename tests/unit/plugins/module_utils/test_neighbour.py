# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The ARP request a restore sends after starting a container on an engine before Docker 28."""

from __future__ import annotations

import socket
import struct

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _neighbour
from ansible_collections.ferry.docker.plugins.module_utils._neighbour import (
    announce,
    arp_request,
    bridge_interface,
    interface_mac,
    mac_bytes,
    requests,
    skip_reason,
)

LOCAL = "http+docker://localhost"
BRIDGE_MAC = "02:42:09:1e:c2:d2"
CONTAINER_MAC = "02:42:ac:11:00:05"
DEFAULT = {"Id": "d" * 64, "Driver": "bridge", "Options": {"com.docker.network.bridge.name": "docker0"}}
OWN = {"Id": "0123456789abcdef" * 4, "Driver": "bridge", "Options": {}}
MACVLAN = {"Id": "m" * 64, "Driver": "macvlan", "Options": {"parent": "eth0"}}


def endpoint(network, address, mac=CONTAINER_MAC, gateway="172.17.0.1"):
    return {"NetworkID": network["Id"], "IPAddress": address, "MacAddress": mac, "Gateway": gateway}


def container(*endpoints):
    return {"NetworkSettings": {"Networks": {f"net{i}": e for i, e in enumerate(endpoints)}}}


def test_the_frame_is_an_arp_request_from_the_bridge_to_the_container_only():
    frame = arp_request(BRIDGE_MAC, "172.17.0.1", CONTAINER_MAC, "172.17.0.5")
    assert len(frame) == 42
    dst, src, ethertype = frame[:6], frame[6:12], struct.unpack("!H", frame[12:14])[0]
    assert dst == mac_bytes(CONTAINER_MAC) and src == mac_bytes(BRIDGE_MAC) and ethertype == 0x0806
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert frame[22:28] == mac_bytes(BRIDGE_MAC) and socket.inet_ntoa(frame[28:32]) == "172.17.0.1"
    assert frame[32:38] == bytes(6) and socket.inet_ntoa(frame[38:42]) == "172.17.0.5"


@pytest.mark.parametrize("text", ["", None, "02:42:ac:11:00", "02:42:ac:11:00:0g", "0242ac110005", "2:42:ac:11:0:5"])
def test_a_malformed_mac_address_is_refused(text):
    with pytest.raises(ValueError):
        mac_bytes(text)


def test_bridge_interfaces_by_driver_and_option():
    assert bridge_interface(DEFAULT) == "docker0"
    assert bridge_interface(OWN) == "br-0123456789ab"
    assert bridge_interface(MACVLAN) is None
    assert bridge_interface({"Driver": "overlay", "Id": "x"}) is None


def test_only_an_older_local_engine_as_root_is_announced():
    assert skip_reason(LOCAL, "1.41", 0) is None
    assert skip_reason("http+docker://localunixsocket", "1.47", 0) is None
    assert "announces new containers itself" in skip_reason(LOCAL, "1.48", 0)
    assert "announces" in skip_reason(LOCAL, "1.100", 0)
    assert skip_reason(LOCAL, None, 0) is None and skip_reason(LOCAL, "auto", 0) is None  # unknown: older
    assert "local unix socket" in skip_reason("https://10.0.0.5:2376", "1.41", 0)
    assert "root" in skip_reason(LOCAL, "1.41", 1000)


def test_one_request_per_bridge_address_on_an_interface_this_host_has():
    doc = container(
        endpoint(DEFAULT, "172.17.0.5"),
        endpoint(OWN, "10.9.0.3", mac="02:42:0a:09:00:03", gateway="10.9.0.1"),
        endpoint(MACVLAN, "192.168.1.50", gateway="192.168.1.1"),  # not a bridge
        endpoint(DEFAULT, "", gateway="172.17.0.1"),  # no address (stopped again)
        {"NetworkID": "unknown", "IPAddress": "1.2.3.4", "MacAddress": CONTAINER_MAC, "Gateway": "1.2.3.1"},
    )
    networks = {n["Id"]: n for n in (DEFAULT, OWN, MACVLAN)}
    macs = {"docker0": BRIDGE_MAC, "br-0123456789ab": "02:42:93:13:82:53"}
    got = requests(doc, networks, macs.get)
    assert [interface for interface, _frame in got] == ["docker0", "br-0123456789ab"]
    assert got[0][1] == arp_request(BRIDGE_MAC, "172.17.0.1", CONTAINER_MAC, "172.17.0.5")
    assert got[1][1] == arp_request("02:42:93:13:82:53", "10.9.0.1", "02:42:0a:09:00:03", "10.9.0.3")
    assert requests(doc, networks, {}.get) == []  # the engine's bridges are not on this host
    assert requests({"NetworkSettings": {"Networks": None}}, networks, macs.get) == []


def test_interface_mac_reads_sysfs_and_refuses_paths(tmp_path):
    (tmp_path / "docker0").mkdir()
    (tmp_path / "docker0" / "address").write_text(BRIDGE_MAC + "\n")
    assert interface_mac("docker0", root=str(tmp_path)) == BRIDGE_MAC
    assert interface_mac("br-missing", root=str(tmp_path)) is None
    for name in ("", None, "..", ".", "../docker0", "a/b"):
        assert interface_mac(name, root=str(tmp_path)) is None


class Client:
    base_url = LOCAL
    api_version = "1.41"

    def __init__(self, doc, networks, fail=None):
        self.doc, self.networks, self.fail, self.calls = doc, networks, fail, []

    def inspect_container(self, container_id):
        self.calls.append(("container", container_id))
        if self.fail:
            raise self.fail
        return self.doc

    def inspect_network(self, network_id):
        self.calls.append(("network", network_id))
        return self.networks[network_id]


def test_announce_sends_each_request_once_after_reading_each_network_once(monkeypatch):
    monkeypatch.setattr(_neighbour, "interface_mac", {"docker0": BRIDGE_MAC}.get)
    client = Client(container(endpoint(DEFAULT, "172.17.0.5")), {DEFAULT["Id"]: DEFAULT})
    sent = []
    assert announce(client, "c1", sender=lambda i, f: sent.append((i, f)), euid=0) == ["docker0"]
    assert sent == [("docker0", arp_request(BRIDGE_MAC, "172.17.0.1", CONTAINER_MAC, "172.17.0.5"))]
    assert client.calls == [("container", "c1"), ("network", DEFAULT["Id"])]


def test_announce_skips_and_never_raises(monkeypatch):
    monkeypatch.setattr(_neighbour, "interface_mac", {"docker0": BRIDGE_MAC}.get)
    doc = container(endpoint(DEFAULT, "172.17.0.5"))

    def refuse(_interface, _frame):
        raise PermissionError(1, "Operation not permitted")

    def never(_interface, _frame):
        raise AssertionError("nothing may be sent")

    newer = Client(doc, {DEFAULT["Id"]: DEFAULT})
    newer.api_version = "1.48"
    assert "itself" in announce(newer, "c1", sender=never, euid=0) and newer.calls == []
    assert "root" in announce(Client(doc, {DEFAULT["Id"]: DEFAULT}), "c1", sender=never, euid=1000)
    assert "not permitted" in announce(Client(doc, {DEFAULT["Id"]: DEFAULT}), "c1", sender=refuse, euid=0)
    gone = Client(doc, {}, fail=RuntimeError("404 Client Error: No such container"))
    assert announce(gone, "c1", sender=never, euid=0) == "not announced: 404 Client Error: No such container"
    bad_mac = Client(container(endpoint(DEFAULT, "172.17.0.5", mac="zz")), {DEFAULT["Id"]: DEFAULT})
    assert announce(bad_mac, "c1", sender=never, euid=0).startswith("not announced: not a MAC address")
