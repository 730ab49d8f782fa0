# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The checks of docker_restore_preflight without an engine: architectures, layer prefixes, host
ports and their overlaps, subnet clashes, bind paths and disk arithmetic.

The few tests that touch this host only bind sockets on the loopback address or look at tmp_path.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _preflight as pf

# --------------------------------------------------------------------------------------------- architecture


@pytest.mark.parametrize(
    "name, expected",
    [
        ("x86_64", "amd64"),
        ("amd64", "amd64"),
        ("X86_64 ", "amd64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("armv7l", "arm"),
        ("armhf", "arm"),
        ("armv6l", "arm"),
        ("i386", "386"),
        ("i686", "386"),
        ("ppc64el", "ppc64le"),
        ("s390x", "s390x"),
        ("riscv64", "riscv64"),
        ("mips64el", "mips64le"),
        ("SomethingNew", "somethingnew"),
        (None, ""),
    ],
)
def test_normalize_architecture(name, expected):
    assert pf.normalize_architecture(name) == expected


@pytest.mark.parametrize(
    "source, target, same",
    [("x86_64", "amd64", True), ("aarch64", "arm64", True), ("armv7l", "armhf", True), ("x86_64", "aarch64", False)],
)
def test_architectures_compare_after_normalising(source, target, same):
    assert (pf.normalize_architecture(source) == pf.normalize_architecture(target)) is same


# --------------------------------------------------------------------------------------------- layers

A, B, C, D, X = (f"sha256:{c * 64}" for c in "abcdf")


@pytest.mark.parametrize(
    "wanted, local, expected",
    [
        ([A, B, C], [], []),
        ([A, B, C], [[A, B, C]], [A, B, C]),
        ([A, B, C], [[A, B, C, D]], [A, B, C]),  # a local image built on top of the source image
        ([A, B, C], [[A, B]], [A, B]),
        ([A, B, C], [[A], [A, B, X], [D]], [A, B]),  # the best image wins
        ([A, B, C], [[B, C]], []),  # same layers, other base: not reusable (chain IDs differ)
        ([A, B, C], [[X, B, C]], []),
        ([A, B, C], [[A, X, C]], [A]),  # C sits on X here, not on B
        ([], [[A]], []),
        ([A], [None, []], []),
    ],
)
def test_layers_present_is_the_longest_common_prefix(wanted, local, expected):
    assert pf.layers_present(wanted, local) == expected


layer_ids = st.lists(st.sampled_from([A, B, C, D, X]), max_size=6)


@given(wanted=layer_ids, local=st.lists(layer_ids, max_size=4))
def test_layers_present_properties(wanted, local):
    present = pf.layers_present(wanted, local)
    assert present == wanted[: len(present)]  # a prefix of what was asked
    if present:
        assert any(list(layers[: len(present)]) == present for layers in local)
    longer = wanted[: len(present) + 1]
    if len(longer) > len(present):  # no local image has one more layer of the stack
        assert not any(list(layers[: len(longer)]) == longer for layers in local)


# --------------------------------------------------------------------------------------------- ports


def body_with_ports(bindings, mode=None):
    host_config = {"PortBindings": bindings}
    if mode:
        host_config["NetworkMode"] = mode
    return {"Image": "x", "HostConfig": host_config}


def test_published_ports_lists_fixed_ports_only():
    body = body_with_ports(
        {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "8081"}],
            "53/udp": [{"HostIp": "::1", "HostPort": "5353"}],
            "81/tcp": [{"HostIp": "", "HostPort": ""}],  # the engine picks
            "82/tcp": [{"HostIp": "", "HostPort": "9000-9010"}],  # the engine picks in the range
            "83/tcp": [{"HostIp": "[::]", "HostPort": "9100-9100"}],
            "84/sctp": [{"HostPort": "9200"}],
            "85/tcp": None,
        }
    )
    assert pf.published_ports(body) == [
        {"host_ip": "::1", "host_port": 5353, "proto": "udp", "container_port": "53/udp"},
        {"host_ip": "", "host_port": 8080, "proto": "tcp", "container_port": "80/tcp"},
        {"host_ip": "127.0.0.1", "host_port": 8081, "proto": "tcp", "container_port": "80/tcp"},
        {"host_ip": "::", "host_port": 9100, "proto": "tcp", "container_port": "83/tcp"},
        {"host_ip": "", "host_port": 9200, "proto": "sctp", "container_port": "84/sctp"},
    ]


def test_host_network_publishes_nothing():
    assert pf.published_ports(body_with_ports({"80/tcp": [{"HostPort": "80"}]}, mode="host")) == []
    assert pf.published_ports({"Image": "x"}) == []


@pytest.mark.parametrize(
    "host_ip, expected",
    [("", "8080/tcp"), ("127.0.0.1", "127.0.0.1:8080/tcp"), ("::1", "[::1]:8080/tcp")],
)
def test_port_label(host_ip, expected):
    assert pf.port_label({"host_ip": host_ip, "host_port": 8080, "proto": "tcp"}) == expected


@pytest.mark.parametrize(
    "left, right, overlap",
    [
        ("", "", True),
        ("", "127.0.0.1", True),
        ("", "::1", True),
        ("0.0.0.0", "127.0.0.1", True),
        ("0.0.0.0", "0.0.0.0", True),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("0.0.0.0", "::", False),  # Docker binds the families separately
        ("0.0.0.0", "::1", False),
        ("::", "::1", True),
        ("[::1]", "::1", True),
        ("::1", "127.0.0.1", False),
        ("10.0.0.1", "10.0.0.2", False),
    ],
)
def test_ips_overlap(left, right, overlap):
    assert pf.ips_overlap(left, right) is overlap
    assert pf.ips_overlap(right, left) is overlap  # symmetric


def port(host_port, host_ip="", proto="tcp", container_port="80/tcp"):
    return {"host_ip": host_ip, "host_port": host_port, "proto": proto, "container_port": container_port}


RUNNING = [
    {
        "Id": "1" * 64,
        "Names": ["/web2"],
        "Ports": [
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 443, "Type": "tcp"},  # exposed, not published
        ],
    },
    {
        "Id": "2" * 64,
        "Names": ["/app/db", "/db"],
        "Ports": [{"IP": "127.0.0.1", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"}],
    },
]


@pytest.mark.parametrize(
    "wanted, holders",
    [
        (port(8080), ["web2"]),
        (port(8080, "127.0.0.1"), ["web2"]),
        (port(8080, "::1"), ["web2"]),
        (port(8080, proto="udp"), []),
        (port(8081), []),
        (port(443), []),
        (port(5353, proto="udp"), ["db"]),
        (port(5353, "127.0.0.2", proto="udp"), []),
        (port(5353, "::", proto="udp"), []),
    ],
)
def test_port_holders(wanted, holders):
    assert pf.port_holders(wanted, RUNNING) == holders


def test_container_name_skips_link_aliases():
    assert pf.container_name({"Names": ["/app/db", "/db"]}) == "db"
    assert pf.container_name({"Names": ["/app/db"]}) == "app/db"
    assert pf.container_name({"Id": "abcdef0123456789", "Names": []}) == "abcdef012345"


def test_duplicate_ports_within_one_body():
    ports = [port(8080), port(8080, "127.0.0.1", container_port="81/tcp"), port(8080, proto="udp"), port(9000)]
    assert pf.duplicate_ports(ports) == [(ports[0], ports[1])]
    assert pf.duplicate_ports([port(8080, "127.0.0.1"), port(8080, "127.0.0.2", container_port="81/tcp")]) == []


@pytest.fixture
def listening():
    """A TCP socket listening on a free loopback port; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def free_port(kind=socket.SOCK_STREAM):
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    number = sock.getsockname()[1]
    sock.close()
    return number


def test_bind_error_finds_a_listening_process(listening):
    assert pf.bind_error("127.0.0.1", listening, "tcp") == errno.EADDRINUSE
    assert pf.bind_error("", listening, "tcp") == errno.EADDRINUSE  # 0.0.0.0 clashes with 127.0.0.1
    problem = pf.port_bind_problem(port(listening))
    assert f"host port {listening}/tcp is in use by a process" in problem and "port_map (key 80/tcp)" in problem
    assert pf.bind_error("127.0.0.1", listening, "sctp") is None  # not tried


def test_bind_error_for_udp():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        number = sock.getsockname()[1]
        assert pf.bind_error("127.0.0.1", number, "udp") == errno.EADDRINUSE
        assert pf.bind_error("127.0.0.1", number, "tcp") is None
    finally:
        sock.close()


def test_bind_error_free_port_and_foreign_address():
    number = free_port()
    assert pf.bind_error("127.0.0.1", number, "tcp") is None
    assert pf.port_bind_problem(port(number, "127.0.0.1")) is None
    # 192.0.2.0/24 is TEST-NET-1: never an address of this host
    assert pf.bind_error("192.0.2.1", number, "tcp") == errno.EADDRNOTAVAIL
    problem = pf.port_bind_problem(port(number, "192.0.2.1"))
    assert "host address 192.0.2.1" in problem and "not an address of this host" in problem


# --------------------------------------------------------------------------------------------- networks


def net(name, *subnets):
    return {"Name": name, "IPAM": {"Driver": "default", "Config": [{"Subnet": s} for s in subnets]}}


def test_network_subnets():
    assert pf.network_subnets(net("a", "10.1.0.0/16", "fd00::/64")) == ["10.1.0.0/16", "fd00::/64"]
    assert pf.network_subnets({"Name": "a", "IPAM": {"Config": [{"Gateway": "10.0.0.1"}, None]}}) == []
    assert pf.network_subnets({"Name": "a"}) == []
    assert pf.network_subnets(None) == []


EXISTING = [net("bridge", "172.17.0.0/16"), net("lab", "172.20.250.0/24"), net("v6", "fd00:1::/64"), net("host")]


@pytest.mark.parametrize(
    "subnets, clashes",
    [
        (["10.10.0.0/24"], []),
        (["172.20.250.128/25"], [("172.20.250.128/25", "lab", "172.20.250.0/24")]),
        (
            ["172.16.0.0/12"],
            [("172.16.0.0/12", "bridge", "172.17.0.0/16"), ("172.16.0.0/12", "lab", "172.20.250.0/24")],
        ),
        (
            ["172.17.5.0/24", "fd00:1::/48"],
            [("172.17.5.0/24", "bridge", "172.17.0.0/16"), ("fd00:1::/48", "v6", "fd00:1::/64")],
        ),
        (["172.17.0.1/16"], [("172.17.0.1/16", "bridge", "172.17.0.0/16")]),  # host bits set: still the same net
        (["fd00:2::/64", "not-a-subnet"], []),
    ],
)
def test_subnet_clashes(subnets, clashes):
    assert pf.subnet_clashes(subnets, EXISTING) == clashes


# --------------------------------------------------------------------------------------------- paths and disk


@pytest.mark.parametrize(
    "url, local",
    [
        ("unix:///var/run/docker.sock", True),
        ("http+unix://%2Fvar%2Frun%2Fdocker.sock", True),
        ("/var/run/docker.sock", True),
        ("tcp://10.0.0.5:2376", False),
        ("ssh://user@host", False),
        ("", False),
        (None, False),
    ],
)
def test_engine_is_local(url, local):
    assert pf.engine_is_local(url) is local


def test_nearest_existing(tmp_path):
    (tmp_path / "a").mkdir()
    assert pf.nearest_existing(str(tmp_path / "a")) == str(tmp_path / "a")
    assert pf.nearest_existing(str(tmp_path / "a" / "b" / "c")) == str(tmp_path / "a")
    os.symlink(str(tmp_path / "gone"), str(tmp_path / "dangling"))
    assert pf.nearest_existing(str(tmp_path / "dangling" / "x")) == str(tmp_path / "dangling")
    assert pf.nearest_existing("/") == "/"


def test_free_space_of_a_missing_path_is_that_of_its_ancestor(tmp_path):
    device, free = pf.free_space(str(tmp_path / "not" / "yet"))
    assert device == os.stat(str(tmp_path)).st_dev
    vfs = os.statvfs(str(tmp_path))
    assert abs(free - vfs.f_bavail * vfs.f_frsize) < 64 * 1024 * 1024  # other writers may be at work


def test_bind_path_problem(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    exists, missing, under_file = str(tmp_path), str(tmp_path / "new" / "dir"), str(tmp_path / "file" / "sub")
    assert pf.bind_path_problem(exists, "web", create=False) is None
    assert pf.bind_path_problem(missing, "web", create=True) is None
    refused = pf.bind_path_problem(missing, "web", create=False)
    assert missing in refused and "container web" in refused and "create_bind_paths=true" in refused
    blocked = pf.bind_path_problem(under_file, "web", create=True)
    assert "cannot be created" in blocked and str(tmp_path / "file") in blocked and "not a directory" in blocked
    monkeypatch.setattr(pf.os, "access", lambda path, mode: False)
    readonly = pf.bind_path_problem(missing, "web", create=True)
    assert "not writable" in readonly and str(tmp_path) in readonly


@pytest.mark.parametrize(
    "count, text",
    [(0, "0 bytes"), (1, "1 byte"), (1023, "1023 bytes"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")],
)
def test_human_bytes(count, text):
    assert pf.human_bytes(count) == text


GIB = 1024**3


@pytest.mark.parametrize(
    "required, dest_space, docker_required, root_space, expected",
    [
        (0, None, 0, None, []),
        (GIB, None, GIB, None, []),  # nothing known: nothing checked
        (GIB, (1, 2 * GIB), 0, None, []),
        (3 * GIB, (1, 2 * GIB), 0, None, ["bundle needs 3.0 GiB"]),
        (GIB, (1, 2 * GIB), GIB, (2, 2 * GIB), []),  # separate filesystems: each fits
        (GIB, (1, 2 * GIB), 3 * GIB, (2, 2 * GIB), ["image and volume data need 3.0 GiB"]),
        (GIB, (1, 2 * GIB), 1.5 * GIB, (1, 2 * GIB), ["need 2.5 GiB together"]),  # one filesystem: the sum
        (GIB, (1, 3 * GIB), 2 * GIB, (1, 3 * GIB), []),
        (3 * GIB, (1, 2 * GIB), 3 * GIB, (2, 2 * GIB), ["bundle needs 3.0 GiB", "data need 3.0 GiB"]),
        (0, (1, 2 * GIB), 3 * GIB, (1, 2 * GIB), ["data need 3.0 GiB"]),
    ],
)
def test_disk_problems(required, dest_space, docker_required, root_space, expected):
    problems = pf.disk_problems("/srv/in", required, dest_space, "/var/lib/docker", docker_required, root_space)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected):
        assert fragment in problem, problem
        assert "only 2.0 GiB is free" in problem


def test_failure_message_names_the_container_and_every_problem():
    message = pf.failure_message("web", "host target1", ["first thing; do this", "second thing; do that"])
    assert message.startswith("container web cannot be restored on host target1 as it is; 2 problems:")
    assert "(1) first thing; do this. (2) second thing; do that." in message
    assert "fail_on_problems=false" in message
    assert "1 problem:" in pf.failure_message("web", "this host", ["only"])


# -- programs a transfer needs -------------------------------------------------------------------


def test_a_missing_program_names_the_host_and_the_package():
    found = {"ssh": "/usr/bin/ssh"}
    problems = pf.program_problems(["rsync", "ssh", "frob"], where="host2", which=found.get, version=lambda _p: "")
    assert problems == [
        "rsync is not installed on host2 (not on PATH); install the Debian package rsync",
        "frob is not installed on host2 (not on PATH); install it",
    ]


def test_programs_on_path_are_no_problem():
    assert pf.program_problems(["sh"]) == []
    assert pf.program_problems([]) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("rsync  version 3.2.7  protocol version 31\nCopyright (C) 1996-2022 by Andrew Tridgell", (3, 2, 7)),
        ("rsync  version v3.2.3  protocol version 31", (3, 2, 3)),
        ("rsync  version 3.1.3  protocol version 31", (3, 1, 3)),
        ("openrsync: protocol version 29\nrsync version 2.6.9 compatible", (2, 6, 9)),
        ("rsync version 3.4", (3, 4, 0)),
        ("", None),
        ("no such thing", None),
    ],
)
def test_versions_are_read_from_what_the_program_prints(text, found):
    assert pf.parse_version(text) == found


def test_an_rsync_without_the_options_the_transfer_passes_is_named_with_the_release_needed():
    which = {"rsync": "/usr/local/bin/rsync", "ssh": "/usr/bin/ssh"}.get
    asked = []

    def version(path):
        asked.append(path)
        return "rsync  version 3.1.3  protocol version 31"

    problems = pf.program_problems(["rsync", "ssh"], where="host web3", which=which, version=version)
    assert problems == [
        "rsync 3.1.3 on host web3 (/usr/local/bin/rsync) is older than 3.2.3, the first release with --mkpath, "
        "which creates the receiving directory; install rsync 3.2.3 or newer there (Debian 11 and later ship one)"
    ]
    assert asked == ["/usr/local/bin/rsync"]  # only the programs with a minimum are asked
    for fine in ("rsync  version 3.2.3  protocol version 31", "rsync  version 3.4.1  protocol version 32", ""):
        assert pf.program_problems(["rsync"], which=which, version=lambda _p, text=fine: text) == []


def test_a_program_version_is_read_with_a_time_limit(tmp_path):
    fake = tmp_path / "rsync"
    fake.write_text("#!/bin/sh\necho 'rsync  version 3.0.9  protocol version 30'\n")
    fake.chmod(0o755)
    assert pf.parse_version(pf.program_version(str(fake))) == (3, 0, 9)
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nexec sleep 5\n")
    slow.chmod(0o755)
    assert pf.program_version(str(slow), timeout=0.2) == ""
    assert pf.program_version(str(tmp_path / "absent")) == ""


ENGINE = {"ID": "675T:YEF2:VNZ6", "DockerRootDir": "/var/lib/docker"}


def _docker_info(stdout="", code=0, stderr=""):
    calls = []

    def run(argv, **kwargs):
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, code, stdout, stderr)

    return run, calls


def test_the_docker_command_reaching_the_same_engine_is_no_problem(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/elsewhere.sock")  # a play's environment: not the ssh session's
    run, calls = _docker_info('["675T:YEF2:VNZ6","/var/lib/docker"]\n')
    assert pf.cli_engine_problem(ENGINE, "host2", run=run) is None
    argv, kwargs = calls[0]
    assert argv[:2] == ["docker", "info"] and kwargs["timeout"] > 0
    assert "DOCKER_HOST" not in kwargs["env"] and kwargs["env"]["PATH"] == os.environ["PATH"]


def test_the_docker_command_on_another_engine_is_a_problem_naming_the_way_out():
    # a rootless engine beside the system's, or another engine's ID
    answers = ('["675T:YEF2:VNZ6","/home/u/.local/share/docker"]', '["OTHER","/var/lib/docker"]', "", "not json", "7")
    for answer in answers:
        run, _calls = _docker_info(answer + "\n")
        text = pf.cli_engine_problem(ENGINE, "host2", run=run)
        assert "docker command on host2 does not reach the engine" in text, answer
        assert "migrate_transfer=controller" in text


def test_a_docker_command_that_fails_or_hangs_is_a_problem():
    run, _calls = _docker_info(code=1, stderr="permission denied while trying to connect to the Docker daemon socket")
    assert "it failed: permission denied" in pf.cli_engine_problem(ENGINE, run=run)

    def hang(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    assert "no answer within 3 s" in pf.cli_engine_problem(ENGINE, run=hang, timeout=3)
