"""The lab works as the other tests assume: real SSH to every host, and each host has its own engine."""

from __future__ import annotations

import uuid

WORKLOAD_IMAGE = "ferry-lab/busybox:latest"


def assert_ok(results: dict[str, dict], hosts) -> None:
    for host in hosts:
        assert host in results, f"{host} gave no result"
        result = results[host]
        assert not result.get("unreachable"), f"{host} is unreachable: {result.get('msg')}"
        assert not result.get("failed"), f"{host} failed: {result.get('msg')} {result.get('stderr', '')}"


def test_ping_over_ssh(lab, ansible_adhoc):
    assert_ok(ansible_adhoc("lab", "ansible.builtin.ping"), lab)
    # The session really is SSH from this machine to the host's address on the lab network.
    results = ansible_adhoc("lab", "ansible.builtin.shell", 'echo "$SSH_CONNECTION"')
    assert_ok(results, lab)
    for host, ip in lab.items():
        assert results[host]["stdout"].split()[2] == ip


def test_each_host_has_its_own_engine(lab, ansible_adhoc):
    results = ansible_adhoc("lab", "community.docker.docker_host_info")
    assert_ok(results, lab)
    engines = {host: (results[host]["host_info"]["ID"], results[host]["host_info"]["Name"]) for host in lab}
    for host, (_engine_id, name) in engines.items():
        assert name == host, f"{host}'s engine calls itself {name}"
    assert len({engine_id for engine_id, _name in engines.values()}) == len(lab), f"engines are shared: {engines}"


def test_container_started_on_host1_is_only_on_host1(lab, ansible_adhoc):
    name = f"ferry-lab-smoke-{uuid.uuid4().hex[:8]}"
    container = {"name": name, "image": WORKLOAD_IMAGE, "command": ["sleep", "300"], "pull": "never"}
    try:
        started = ansible_adhoc("host1", "community.docker.docker_container", {**container, "state": "started"})
        assert_ok(started, ["host1"])
        assert started["host1"]["changed"]

        seen = ansible_adhoc("host1:host2", "community.docker.docker_container_info", {"name": name})
        assert_ok(seen, ["host1", "host2"])
        assert seen["host1"]["exists"]
        assert seen["host1"]["container"]["State"]["Running"]
        assert not seen["host2"]["exists"], "a container started on host1 shows up on host2"
    finally:
        removed = ansible_adhoc("host1", "community.docker.docker_container", {"name": name, "state": "absent"})
        assert_ok(removed, ["host1"])
