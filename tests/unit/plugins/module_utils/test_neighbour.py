# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The ARP request a restore sends after starting a container on an engine before Docker 28."""

from __future__ import annotations

import socket
import struct
import time

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


# ------------------------------------------------------------------ asking again while a container starts

ARP_TABLE = """IP address       HW type     Flags       HW address            Mask     Device
172.17.0.2       0x1         0x0         00:00:00:00:00:00     *        docker0
172.17.0.3       0x1         0x2         02:42:ac:11:00:03     *        docker0
10.0.0.9         0x1         0x0         00:00:00:00:00:00     *        eth0
172.18.0.4       0x1         0x0         00:00:00:00:00:00     *        br-0123456789ab
"""


def test_only_addresses_the_host_still_resolves_on_a_bridge_are_asked_for_again():
    bridges = {"docker0", "br-0123456789ab"}
    assert _neighbour.unresolved(ARP_TABLE, bridges.__contains__) == [
        ("docker0", "172.17.0.2"),
        ("br-0123456789ab", "172.18.0.4"),
    ]
    assert _neighbour.unresolved("IP address HW type Flags HW address Mask Device\n", bridges.__contains__) == []
    assert _neighbour.unresolved("garbage\nshort line\n", bridges.__contains__) == []


def test_a_bridge_is_an_interface_with_a_bridge_directory(tmp_path):
    (tmp_path / "docker0" / "bridge").mkdir(parents=True)
    (tmp_path / "eth0").mkdir()
    assert _neighbour.is_bridge("docker0", root=str(tmp_path))
    assert not _neighbour.is_bridge("eth0", root=str(tmp_path))
    assert not _neighbour.is_bridge("../docker0", root=str(tmp_path)) and not _neighbour.is_bridge("")


class StartingClient:
    base_url = LOCAL
    api_version = "1.41"

    def __init__(self, table, events):
        self.table, self.events = table, events

    def start(self, container_id):
        # the engine starts the container for a while: the host waits for its address meanwhile
        self.table.write_text(ARP_TABLE)
        deadline = time.monotonic() + 5
        while not any(e[0] == "sent" for e in self.events) and time.monotonic() < deadline:
            time.sleep(0.005)
        self.events.append(("started", container_id))


def test_a_start_in_progress_asks_on_its_bridges_for_what_waits_and_stops_with_the_start(tmp_path, monkeypatch):
    table, events = tmp_path / "arp", []
    table.write_text(ARP_TABLE.splitlines()[0] + "\n")
    monkeypatch.setattr(_neighbour, "is_bridge", lambda name: name in ("docker0", "br-0123456789ab"))
    monkeypatch.setattr(_neighbour, "interface_mac", lambda name: BRIDGE_MAC)

    def address(name):
        if name != "docker0":
            raise OSError(99, "Cannot assign requested address")  # as ioctl says for an interface without one
        return "172.17.0.1"

    monkeypatch.setattr(_neighbour, "interface_address", address)
    frames = []

    def sender(interface, frame):
        frames.append((interface, frame))
        events.append(("sent", interface))

    stop = _neighbour.hasten(StartingClient(table, events), sender=sender, euid=0, table=str(table), interval=0.005)
    StartingClient(table, events).start("c1")
    stop()
    count = len(frames)
    time.sleep(0.05)
    assert len(frames) == count  # nothing is asked for once the start has returned
    assert {interface for interface, _f in frames} == {"docker0"}  # br-…'s address is unknown: not asked on
    _interface, frame = frames[0]
    assert frame == arp_request(BRIDGE_MAC, "172.17.0.1", "ff:ff:ff:ff:ff:ff", "172.17.0.2")
    assert frame[:6] == b"\xff" * 6 and frame[32:38] == bytes(6)  # a broadcast, as the kernel asks


def test_hasten_does_nothing_where_announce_would_not(tmp_path):
    sent = []
    for client, euid in (
        (StartingClient(None, []), 1000),
        (type("New", (StartingClient,), {"api_version": "1.48"})(None, []), 0),
    ):
        stop = _neighbour.hasten(client, sender=lambda *a: sent.append(a), euid=euid, table=str(tmp_path / "none"))
        stop()
    assert sent == []


def test_start_starts_then_announces_and_stops_asking_when_the_start_fails(monkeypatch):
    calls = []
    monkeypatch.setattr(_neighbour, "hasten", lambda client: lambda: calls.append("stopped"))
    monkeypatch.setattr(_neighbour, "announce", lambda client, cid: calls.append(("announced", cid)) or ["docker0"])

    class Engine:
        def __init__(self, fail=False):
            self.fail = fail

        def start(self, cid):
            calls.append(("start", cid))
            if self.fail:
                raise RuntimeError("the engine refused")

    assert _neighbour.start(Engine(), "c1") == ["docker0"]
    assert calls == [("start", "c1"), "stopped", ("announced", "c1")]
    calls.clear()
    with pytest.raises(RuntimeError):
        _neighbour.start(Engine(fail=True), "c2")
    assert calls == [("start", "c2"), "stopped"]
