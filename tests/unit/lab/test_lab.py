# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's addresses come from its state, never from literals; every ssh to it has a timeout."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LAB_SCRIPT = REPO / "lab" / "lab.py"
IPV4 = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?:/(\d{1,2}))?(?![\w.])")
MAX_FILE = 2 * 1024 * 1024


def load_lab():
    spec = importlib.util.spec_from_file_location("ferry_lab", LAB_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lab = load_lab()


def repository_files():
    """The files git knows (tracked, or new and not ignored); every file below the root without git."""
    listing = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if listing.returncode == 0:
        return [REPO / name for name in listing.stdout.decode().split("\0") if name]
    skip = {".git", ".venv", ".cache", "output"}
    return [p for p in REPO.rglob("*") if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)]


def lab_networks():
    networks = [ipaddress.ip_network(candidate) for candidate in lab.SUBNET_CANDIDATES]
    if os.environ.get(lab.SUBNET_ENV):
        networks.append(ipaddress.ip_network(os.environ[lab.SUBNET_ENV]))
    return networks


def lab_literals(text, networks):
    """Every IPv4 address or network in ``text`` that lies within one of ``networks``.

    A wider network that merely contains a lab subnet (10.0.0.0/8) says nothing about the lab.
    """
    found = []
    for match in IPV4.finditer(text):
        try:
            address = ipaddress.ip_network(match.group(0), strict=False)
        except ValueError:
            continue
        if any(address.version == 4 and address.subnet_of(network) for network in networks):
            found.append(match.group(0))
    return found


# The candidates as lab.py has them, so that this file holds no lab address either.
C0, C1, C2 = (ipaddress.ip_network(c) for c in lab.SUBNET_CANDIDATES[:3])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"ssh root@{C1.network_address + 12} true", [f"{C1.network_address + 12}"]),
        (f"subnet: {C0}", [str(C0)]),
        (f"half of it: {next(C1.subnets(new_prefix=25))}", [str(next(C1.subnets(new_prefix=25)))]),
        (f"a /16 that holds it: {C1.supernet(new_prefix=16)}", []),
        ("bridge 172.17.0.0/16, test net 10.231.0.0/24, docs 192.0.2.1", []),
        (f"version 1.{C1.network_address}", []),
        ("not an address 999.1.1.1", []),
    ],
)
def test_lab_literals_finds_addresses_in_the_lab_subnets(text, expected):
    assert lab_literals(text, [C0, C1, C2]) == expected


def test_no_lab_address_literal_outside_lab_py():
    """Tests, benchmarks, roles and docs read the lab's addresses from lab/.state, never from a literal."""
    networks = lab_networks()
    offenders = []
    for path in repository_files():
        if path == LAB_SCRIPT or not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FILE:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            offenders += [f"{path.relative_to(REPO)}:{number}: {hit}" for hit in lab_literals(line, networks)]
    assert not offenders, (
        "lab addresses are chosen by lab/lab.py at `lab.py up` (the first free candidate, or LAB_SUBNET); "
        "read them from lab/.state (inventory.ini, ssh_config) instead of writing them here:\n" + "\n".join(offenders)
    )


def test_client_files_give_every_ssh_a_timeout(tmp_path, monkeypatch):
    for name in ("STATE_DIR", "KNOWN_HOSTS", "INVENTORY", "SSH_CONFIG", "KEY_FILE"):
        monkeypatch.setattr(lab, name, tmp_path / getattr(lab, name).name)
    host = lab.Host(name="host1", container="ferry-lab-host1", state="running", ip="192.0.2.11", image_id="x")
    lab.write_client_files([host], ["192.0.2.11 ssh-ed25519 AAAA"])
    config = (tmp_path / "ssh_config").read_text()
    for option in ("BatchMode yes", "ConnectTimeout ", "ServerAliveInterval ", "ServerAliveCountMax "):
        assert f"  {option}" in config
    inventory = (tmp_path / "inventory.ini").read_text()
    assert "host1 ansible_host=192.0.2.11" in inventory
    for option in ("ConnectTimeout=", "ServerAliveInterval=", "ServerAliveCountMax="):
        assert f"-o {option}" in inventory


@pytest.mark.parametrize(
    ("value", "used", "expected"),
    [
        (None, [], C0),
        (None, [C0], C1),
        (None, [C0.supernet(new_prefix=16), next(C1.subnets(new_prefix=25))], C2),
        ("10.99.7.0/24", [C0], ipaddress.ip_network("10.99.7.0/24")),
    ],
)
def test_pick_subnet(value, used, expected):
    assert lab.pick_subnet(lab.requested_subnet(value), used) == expected


@pytest.mark.parametrize(
    ("value", "used", "message"),
    [
        ("10.99.7.0/24", ["10.99.0.0/16"], "overlaps 10.99.0.0/16"),
        ("10.99.7.1/24", [], "not an IPv4 network"),
        ("fd00::/64", [], "must be an IPv4 network"),
        ("10.99.7.0/30", [], "at least a /27"),
        ("lab", [], "not an IPv4 network"),
        (None, list(lab.SUBNET_CANDIDATES), "set LAB_SUBNET"),
    ],
)
def test_pick_subnet_refuses(value, used, message):
    with pytest.raises(lab.LabError, match=re.escape(message)):
        lab.pick_subnet(lab.requested_subnet(value), [ipaddress.ip_network(u) for u in used])


def test_lab_subnet_from_the_environment(monkeypatch):
    monkeypatch.setenv(lab.SUBNET_ENV, "10.98.0.0/24")
    assert str(lab.requested_subnet(None)) == "10.98.0.0/24"
    assert str(lab.requested_subnet("10.97.0.0/24")) == "10.97.0.0/24"  # the option wins


def test_sudo_host_has_its_own_inventory_and_no_root_login(tmp_path, monkeypatch):
    for name in ("STATE_DIR", "KNOWN_HOSTS", "INVENTORY", "SSH_CONFIG", "KEY_FILE", "SUDO_INVENTORY"):
        monkeypatch.setattr(lab, name, tmp_path / getattr(lab, name).name)
    host = lab.Host(name="host1", container="ferry-lab-host1", state="running", ip="192.0.2.11", image_id="x")
    sudo = lab.Host(name=lab.SUDO_HOST, container=lab.SUDO_CONTAINER, state="running", ip="192.0.2.254", image_id="x")
    lab.write_client_files([host], [])
    lab.write_sudo_client_files(sudo)
    # Plays on `all` or `lab` over the shared inventory never reach the sudo host.
    assert lab.SUDO_HOST not in (tmp_path / "inventory.ini").read_text()
    inventory = (tmp_path / lab.SUDO_INVENTORY.name).read_text()
    assert f"{lab.SUDO_HOST} ansible_host=192.0.2.254" in inventory
    assert f"ansible_user={lab.SUDO_USER}" in inventory
    assert "ansible_become=true" in inventory
    assert "ansible_user=root" not in inventory
    config = (tmp_path / "ssh_config").read_text()
    assert "Host host1\n" in config
    assert f"Host {lab.SUDO_HOST}\n  HostName 192.0.2.254\n  User {lab.SUDO_USER}\n" in config
    lab.write_client_files([host], [])
    lab.write_sudo_client_files(None)
    assert not (tmp_path / lab.SUDO_INVENTORY.name).exists()
    assert lab.SUDO_HOST not in (tmp_path / "ssh_config").read_text()


def test_suites_per_host_default_to_bookworm_and_refuse_unknown_releases():
    assert lab.requested_suites(None) == []
    suites = lab.requested_suites("bookworm, bookworm trixie")
    assert [lab.suite_of(number, suites) for number in (1, 2, 3, 4)] == ["bookworm", "bookworm", "trixie", "bookworm"]
    with pytest.raises(lab.LabError, match=r"unknown Debian release.*sid"):
        lab.requested_suites("bookworm sid")


def test_each_release_has_its_own_host_image_and_recipe():
    assert lab.host_image("bookworm") == lab.HOST_IMAGE
    assert lab.host_image("trixie") == "ferry-lab/host:trixie"
    assert "docker-cli" in lab.host_packages("trixie") and "docker-cli" not in lab.host_packages("bookworm")
    assert lab.host_recipe("trixie") != lab.host_recipe("bookworm")


def test_the_inventory_groups_the_hosts_by_release(tmp_path, monkeypatch):
    for name in ("STATE_DIR", "KNOWN_HOSTS", "INVENTORY", "SSH_CONFIG", "KEY_FILE"):
        monkeypatch.setattr(lab, name, tmp_path / getattr(lab, name).name)
    hosts = [
        lab.Host("host1", "ferry-lab-host1", "running", "192.0.2.11", "x", "bookworm"),
        lab.Host("host3", "ferry-lab-host3", "running", "192.0.2.13", "y", "trixie"),
    ]
    lab.write_client_files(hosts, [])
    inventory = (tmp_path / "inventory.ini").read_text()
    assert "[debian_bookworm]\nhost1\n" in inventory and "[debian_trixie]\nhost3\n" in inventory


def test_a_host_dockerd_counts_only_once_lab_init_has_kept_it(monkeypatch):
    # lab-init may kill a dockerd that was slow to start, even one that answered a moment before, and try again:
    # a host is ready once lab-init says it kept one, since the container last started, and that one answers
    calls = []
    answers = {"logs": "lab-init: dockerd did not start with overlay2; trying once more (see /var/log/dockerd.log)\n"}

    def docker(*args, **kwargs):
        calls.append(args[0])
        assert kwargs.get("timeout"), args  # every call to the engine has a limit
        out = {"inspect": "2026-12-01T20:45:06.853385677Z\n", "logs": answers["logs"], "exec": "abc\n"}[args[0]]
        if args[0] == "logs":
            assert args[1:3] == ("--since", "2026-12-01T20:45:06.853385677Z")  # this start only
        return subprocess.CompletedProcess(args, 0, out, "")

    monkeypatch.setattr(lab, "docker", docker)
    host = lab.Host("host3", "ferry-lab-host3", "running", "", "")
    assert not lab.dockerd_answers(host) and calls == ["inspect", "logs"]
    answers["logs"] += "lab-init: dockerd is up (storage driver overlay2)\nlab-init: sshd started\n"
    calls.clear()
    assert lab.dockerd_answers(host) and calls == ["inspect", "logs", "exec"]
    assert lab.DOCKERD_WAIT_SECONDS > 3 * 60  # lab-init's three starts of up to 60 s each


def test_an_up_that_asks_for_no_release_keeps_each_hosts_own():
    # pytest and each molecule scenario run a plain `up`; the one that asked for a trixie host3 keeps it
    assert lab.wanted_suites(3, [], {1: "bookworm", 2: "bookworm", 3: "trixie"}) == {
        1: "bookworm",
        2: "bookworm",
        3: "trixie",
    }
    assert lab.wanted_suites(2, [], {}) == {1: "bookworm", 2: "bookworm"}
    # a list asked for is what the hosts run: another release means a new host
    assert lab.wanted_suites(3, ["bookworm", "bookworm"], {3: "trixie"})[3] == "bookworm"
    assert lab.wanted_suites(3, ["bookworm", "bookworm", "trixie"], {3: "bookworm"})[3] == "trixie"


def test_named_hosts_are_a_subset_and_an_unknown_name_is_refused():
    hosts = [lab.Host(f"host{n}", f"ferry-lab-host{n}", "running", "", "") for n in (1, 2, 3)]
    assert lab.named(hosts, None) == hosts
    assert [host.name for host in lab.named(hosts, ["host2", "host1"])] == ["host1", "host2"]
    assert lab.named(hosts, ["sudo1"], ("sudo1",)) == []
    with pytest.raises(lab.LabError, match="no lab host named host4; the lab has host1, host2, host3"):
        lab.named(hosts, ["host1", "host4"])


def test_an_up_for_some_hosts_touches_no_other_engine(monkeypatch):
    # the benchmark runs beside molecule, whose migrate scenario takes host3's Docker socket away for one test:
    # `up --only host1 host2` neither waits for host3's dockerd nor loads an image into it, and still writes the
    # client files for every host
    hosts = [lab.Host(f"host{n}", f"ferry-lab-host{n}", "running", f"addr{n}", "image") for n in (1, 2, 3)]
    touched, written = [], []
    monkeypatch.setattr(lab, "lab_hosts", lambda: hosts)
    monkeypatch.setattr(lab, "wanted_suites", lambda count, suites, existing: dict.fromkeys(range(1, 4), lab.SUITE))
    for name in ("ensure_images", "ensure_key", "authorize_key"):
        monkeypatch.setattr(lab, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(lab, "ensure_network", lambda subnet: None)
    monkeypatch.setattr(lab, "docker", lambda *args, **kwargs: subprocess.CompletedProcess(args, 0, "image\n", ""))
    monkeypatch.setattr(lab, "wait_for", lambda host, what, *args: touched.append((what, host.name)))
    monkeypatch.setattr(lab, "load_workload_image", lambda host: touched.append(("load", host.name)))
    monkeypatch.setattr(lab, "ensure_sudo_host", lambda *args: pytest.fail("the sudo host was not named"))
    monkeypatch.setattr(lab, "refresh_client_files", lambda hosts: written.extend(host.name for host in hosts))
    lab.up(None, only=["host1", "host2"])
    assert {name for _what, name in touched} == {"host1", "host2"}
    assert ("dockerd", "host1") in touched and ("load", "host2") in touched and ("sshd", "host2") in touched
    assert written == ["host1", "host2", "host3"]
    touched.clear()
    monkeypatch.setattr(lab, "ensure_sudo_host", lambda *args: None)
    lab.up(None)
    assert {name for _what, name in touched} == {"host1", "host2", "host3"}


def test_a_load_for_some_hosts_touches_no_other_engine(monkeypatch):
    hosts = [lab.Host(f"host{n}", f"ferry-lab-host{n}", "running", "", "") for n in (1, 2, 3)]
    loaded = []
    monkeypatch.setattr(lab, "lab_hosts", lambda: hosts)
    monkeypatch.setattr(lab, "ensure_images", lambda **kwargs: None)
    monkeypatch.setattr(lab, "load_image", lambda host, image: loaded.append(host.name) or True)
    lab.load("ferry-lab/redis", ["host1", "host2"])
    assert loaded == ["host1", "host2"]
    with pytest.raises(lab.LabError, match="no lab host named host9"):
        lab.load("ferry-lab/redis", ["host9"])
