"""Migrations between Docker engines of different versions (issue 16, "Mixed fleets"), with playbooks/migrate.yml.

The lab runs host1 (and host2) on Debian 12 (Docker 20.10, API 1.41, Docker SDK 5.0.3) and host3 on Debian 13
(Docker 26.1, API 1.45, Docker SDK 7.1.0): the module fixture asks lab.py for that and checks the engines, so
these tests never quietly become a same-version migration.

- A richly configured container (user network with aliases, a fixed address and MAC address, published
  tcp/udp/127.0.0.1 ports, env, labels, restart policy, tty, limits, ulimits, capabilities, tmpfs, log options,
  healthcheck, user, working dir, a named volume, hostname and domain name, extra hosts, DNS settings...)
  moves host1 -> host3 and back host3 -> host1: ``docker inspect`` on the target equals the source's field by
  field (tests/support/inspect_compare.py, which also unifies what the two API versions only spell
  differently), the report lists nothing as not carried over, the copy has its address, MAC address and
  volume's file, and it serves on its published ports.
- A setting the older engine ignores (``Healthcheck.StartInterval``, API 1.44+): the container still moves
  from host3 to host1, and the report (also in check mode) names the setting under ``not_carried_over``.
- A setting the older engine would read differently (``VolumeOptions.Subpath``, API 1.45: on 1.41 the whole
  volume would be mounted): preflight refuses it before anything is touched; the container keeps running
  on host3 with its data.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from ansible_collections.ferry.docker.tests.support.inspect_compare import diff_inspect

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO_ROOT / "lab" / "lab.py"
STATE = REPO_ROOT / "lab" / ".state"
SUITES = "bookworm bookworm trixie"  # host3 on Debian 13
LAB_SECONDS = 900  # lab.py up, when it has to recreate host3 with another release
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"]
SSH_SECONDS = 120
PLAYBOOK_SECONDS = 600
IMAGE = "ferry-lab/busybox"
DIGEST_LABEL = "Config.Labels.ferry.docker.config-digest"  # the migration stamps its copy with it
# What a migration changes on purpose: the copy runs from the image committed for it (ferry-migrate/<name>)
# and carries the config digest label.
MIGRATION_FIELDS = ("Config.Image", DIGEST_LABEL)
# docker_import labels the image with the archive's sha256 (its idempotence marker); the container inherits it.
IMPORT_LABEL = "Config.Labels.ferry.docker.artifact-sha256"


def ssh(host, script, check=True):
    result = subprocess.run(
        ["ssh", "-F", str(STATE / "ssh_config"), *SSH_OPTIONS, host, script],
        capture_output=True,
        text=True,
        timeout=SSH_SECONDS,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"ssh {host} {script!r}: {result.stderr[-2000:]}"
    return result


def state(host, name):
    return (
        ssh(host, f"docker inspect -f '{{{{.State.Status}}}}' {name} 2>/dev/null", check=False).stdout.strip()
        or "absent"
    )


def inspect(host, name):
    return json.loads(ssh(host, f"docker inspect {name}").stdout)[0]


def wait_healthy(host, name, seconds=60):
    deadline = time.monotonic() + seconds
    health = ""
    while time.monotonic() < deadline:
        health = ssh(host, f"docker inspect -f '{{{{.State.Health.Status}}}}' {name}", check=False).stdout.strip()
        if health == "healthy":
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} on {host} is {health!r}, not healthy after {seconds} s")


def engine(host):
    """(server version, API version) of the host's Docker engine."""
    out = ssh(host, "docker version --format '{{.Server.Version}} {{.Server.APIVersion}}'").stdout.split()
    assert len(out) == 2, out
    return out[0], tuple(int(part) for part in out[1].split("."))


def read_inventory():
    """Host name -> ansible_host of the [lab] group lab.py wrote."""
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",))
    parser.optionxform = str
    parser.read(STATE / "inventory.ini")
    hosts = {}
    for name, values in parser.items("lab"):
        fields = dict(field.split("=", 1) for field in (values or "").split())
        hosts[name] = fields["ansible_host"]
    return hosts


@pytest.fixture(scope="module")
def fleet(lab):
    """host1 on Docker 20.10 and host3 on Docker 26: {host name: IP}.

    Depends on the session's ``lab`` fixture (a plain ``lab.py up``, which makes new hosts bookworm), so
    that this ``lab.py up --suites`` comes after it and host3 stays trixie for these tests.
    """
    up = subprocess.run(
        [sys.executable, str(LAB_SCRIPT), "up", "--suites", SUITES],
        capture_output=True,
        text=True,
        check=False,
        timeout=LAB_SECONDS,
    )
    if up.returncode != 0:
        pytest.fail(f"`lab.py up --suites {SUITES!r}` failed:\n{up.stderr[-3000:]}")
    hosts = read_inventory()
    assert {"host1", "host2", "host3"} <= set(hosts), hosts
    old, new = engine("host1"), engine("host3")
    print(f"\nhost1: Docker {old[0]} (API {old[1]}); host3: Docker {new[0]} (API {new[1]})")
    assert old[0].startswith("20.10.") and old[1] == (1, 41), old
    assert new[0].startswith("26.") and new[1] >= (1, 44), new
    return hosts


def migrate(tmp_path, source, target, containers, check=False, **extra):
    report = tmp_path / f"report-{uuid.uuid4().hex[:6]}.json"
    variables = {
        "migrate_source": source,
        "migrate_target": target,
        "migrate_containers": containers,
        "migrate_report_path": str(report),
        "migrate_health_stable_seconds": 3,
        "migrate_health_timeout": 60,
        **extra,
    }
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        str(STATE / "inventory.ini"),
        str(REPO_ROOT / "playbooks" / "migrate.yml"),
        "-e",
        json.dumps(variables),
        *(["--check"] if check else []),
    ]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"))
    started = time.monotonic()
    run = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=PLAYBOOK_SECONDS, check=False
    )
    print(f"migrate {source} -> {target}{' --check' if check else ''}: {time.monotonic() - started:.1f} s")
    assert report.exists(), f"no report (rc {run.returncode}):\n{run.stdout[-6000:]}"
    return run, {entry["container"]: entry for entry in json.loads(report.read_text())["containers"]}


@pytest.fixture
def names(fleet):
    """A prefix for this test's resources; everything with it removed from every lab host afterwards."""
    prefix = f"ferry-mix-{uuid.uuid4().hex[:6]}"
    yield prefix
    for host in ("host1", "host2", "host3"):
        ssh(
            host,
            f"docker ps -aq --filter name={prefix} | xargs -r docker rm -f >/dev/null; "
            f"docker volume ls -q --filter name={prefix} | xargs -r docker volume rm >/dev/null; "
            f"docker network ls -q --filter name={prefix} | xargs -r docker network rm >/dev/null; "
            f"docker images -q 'ferry-migrate/{prefix}*' | sort -u | xargs -r docker rmi -f >/dev/null; "
            # the bundles: <work dir>/<run>/<group>/<container> on the source (kept by design) and
            # <target dir>/<run>-<source>-<container> on the target (when a run kept it)
            f"find /var/lib/ferry/migrate /var/lib/ferry/incoming -maxdepth 3 -name '*{prefix}*' "
            "-prune -exec rm -rf {} + 2>/dev/null; true",
            check=False,
        )


def fetch(url):
    """The body at url, or the error (a copy that does not serve is a finding, not a crash of the test)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode().strip()
    except OSError as exc:
        return f"<{exc}>"


def fetch_on(host, port):
    """What the host itself gets from 127.0.0.1:<port>/token (the host's own Python), or its error."""
    script = (
        "import urllib.request; "
        f"print(urllib.request.urlopen('http://127.0.0.1:{port}/token', timeout=5).read().decode().strip())"
    )
    result = ssh(host, f'python3 -c "{script}"', check=False)
    return result.stdout.strip() if result.returncode == 0 else f"<{result.stderr.strip()[-300:]}>"


def subnets(host):
    script = "docker network ls -q | xargs -r docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}'"
    return [ipaddress.ip_network(net) for net in ssh(host, script).stdout.split() if ":" not in net]


def free_subnet(host, prefix, others=("host1", "host3")):
    """A subnet that no network on the lab hosts of the test uses, near the one the engine would pick itself."""
    probe = f"{prefix}-probe"
    ssh(host, f"docker network create {probe} >/dev/null")
    try:
        chosen = ssh(host, f"docker network inspect -f '{{{{(index .IPAM.Config 0).Subnet}}}}' {probe}").stdout
    finally:
        ssh(host, f"docker network rm {probe} >/dev/null")
    chosen = ipaddress.ip_network(chosen.strip())
    used = [net for other in others for net in subnets(other)]
    pool = chosen.supernet(new_prefix=max(8, chosen.prefixlen - 4))
    for candidate in [chosen, *pool.subnets(new_prefix=chosen.prefixlen)]:
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    pytest.fail(f"no subnet of {pool} is free on {others}")


def rich_container(host, prefix, token):
    """A container with most settings a user gives `docker run`, created with the docker CLI on host."""
    name, network, volume = f"{prefix}-web", f"{prefix}-net", f"{prefix}-data"
    base = random.randint(20000, 29000)
    ports = {"tcp": base, "local": base + 1, "udp": base + 2}
    # a subnet of its own (free on both engines), a fixed address in it, and a fixed MAC address (API 1.44+
    # keeps the MAC address per endpoint, API 1.41 in Config.MacAddress)
    subnet = free_subnet(host, prefix)
    ssh(host, f"docker network create --subnet {subnet} {network} >/dev/null")
    address = subnet[200]
    mac = "02:42:" + ":".join(f"{octet:02x}" for octet in random.randbytes(4))
    options = [
        f"--name {name} --hostname web01 --domainname example.internal",
        f"--network {network} --network-alias web --network-alias www.example.internal --ip {address}",
        f"--mac-address {mac}",
        f"-p {ports['tcp']}:8080 -p 127.0.0.1:{ports['local']}:8080 -p {ports['udp']}:5353/udp -p 9000 --expose 9100",
        "-e APP_MODE=staging -e 'GREETING=hello world' -l com.example.role=web -l com.example.tier=front",
        "--restart unless-stopped --tty",
        "--memory 64m --memory-reservation 32m --cpus 0.5 --cpu-shares 512 --pids-limit 128",
        "--ulimit nofile=1024:2048",
        "--cap-add NET_ADMIN --cap-add SYS_PTRACE --cap-drop MKNOD",
        "--tmpfs /run:rw,size=16m,mode=1777",
        "--log-driver json-file --log-opt max-size=10m --log-opt max-file=2",
        "--health-cmd 'wget -q -O /dev/null http://127.0.0.1:8080/token' --health-interval 2s --health-timeout 2s "
        "--health-retries 3 --health-start-period 1s",
        f"--workdir /data --user 1000:1000 -v {volume}:/data",
        "--add-host db.internal:10.0.0.5 --dns 9.9.9.9 --dns-search example.internal --dns-option ndots:2",
        "--init --sysctl net.core.somaxconn=1024 --oom-score-adj 100 --shm-size 128m --security-opt no-new-privileges",
        "--stop-signal SIGTERM --stop-timeout 20",
    ]
    ssh(
        host,
        f"docker volume create {volume} >/dev/null && "
        f"docker run --rm --pull never -v {volume}:/data {IMAGE} sh -c 'echo {token} > /data/token' && "
        f"docker run -d --pull never {' '.join(options)} {IMAGE} httpd -f -p 8080 -h /data >/dev/null",
    )
    wait_healthy(host, name)
    return name, ports, address, mac


def served(fleet, host, name, ports, token, address, mac):
    """What the copy on host lacks of: its address, its MAC address, its volume's file, its published tcp ports."""
    problems = []
    interface = ssh(host, f"docker exec {name} ip -o addr show eth0; docker exec {name} ip -o link show eth0").stdout
    if f" {address}/" not in interface:
        problems.append(f"{host}: eth0 has not the address {address}: {interface}")
    if f" {mac} " not in interface:
        problems.append(f"{host}: eth0 has not the MAC address {mac}: {interface}")
    if ssh(host, f"docker exec {name} cat /data/token").stdout.strip() != token:
        problems.append(f"{host}: /data/token is not the volume's file")
    got = fetch(f"http://{fleet[host]}:{ports['tcp']}/token")
    if got != token:
        problems.append(f"{host}: port {ports['tcp']} does not serve the file: {got}")
    got = fetch_on(host, ports["local"])
    if got != token:
        problems.append(f"{host}: 127.0.0.1:{ports['local']} does not serve the file: {got}")
    return problems


def mac_addresses(container_inspect):
    """Config.MacAddress and each endpoint's MacAddress, as the engine shows them (for the failure message)."""
    networks = container_inspect["NetworkSettings"]["Networks"]
    endpoints = {net: endpoint.get("MacAddress") for net, endpoint in networks.items()}
    return {"Config.MacAddress": container_inspect["Config"].get("MacAddress"), "endpoints": endpoints}


def move(tmp_path, source, target, name, **extra):
    # the busybox base is smaller than migrate_thin_min_bytes: 0 has its layer left out all the same, the thin
    # transfer across engine versions this test is about
    run, report = migrate(tmp_path, source, target, [name], migrate_thin_min_bytes=0, **extra)
    assert run.returncode == 0, run.stdout[-6000:]
    assert report[name]["status"] == "migrated", report[name]
    assert not report[name].get("not_carried_over"), report[name]  # a container made on Docker 20.10 loses nothing
    assert state(target, name) == "running"
    if extra.get("migrate_mode") == "commit":
        # thin transfer across engine versions: the target recognises the busybox layer it already has (both
        # engines name a layer by its diff id), so it is not sent
        assert report[name]["excluded_layers"] >= 1, report[name]
    return report[name]


# Both ways a container moves, as in test_roundtrip.py: its image committed and saved (thin), or its
# filesystem exported and imported (the image's config then travels in the run config).
@pytest.mark.parametrize("mode", ["commit", "export"])
def test_a_rich_container_goes_to_docker_26_and_back_field_by_field(fleet, names, tmp_path, mode):
    ignore = MIGRATION_FIELDS + ((IMPORT_LABEL,) if mode == "export" else ())
    token = uuid.uuid4().hex
    name, ports, address, mac = rich_container("host1", names, token)
    original = inspect("host1", name)

    # host1 (20.10, API 1.41) -> host3 (26.1, API 1.45)
    move(tmp_path, "host1", "host3", name, migrate_mode=mode)
    wait_healthy("host3", name)
    on_new = inspect("host3", name)
    there = diff_inspect(original, on_new, ignore=ignore)
    problems = served(fleet, "host3", name, ports, token, address, mac)
    assert state("host1", name) == "exited"

    # As an operator would before moving it back: remove the stopped source and its volume on host1 (a
    # migration refuses a target that has a volume of the same name). The network stays, unused.
    ssh("host1", f"docker rm {name} >/dev/null && docker volume rm {names}-data >/dev/null")
    move(tmp_path, "host3", "host1", name, migrate_mode=mode)
    wait_healthy("host1", name)
    back_home = inspect("host1", name)
    back = diff_inspect(on_new, back_home, ignore=ignore)
    round_trip = diff_inspect(original, back_home, ignore=ignore)
    problems += served(fleet, "host1", name, ports, token, address, mac)
    assert state("host3", name) == "exited"

    assert (there, back, round_trip, problems) == ([], [], [], []), (
        f"host1 -> host3: {there}\nhost3 -> host1: {back}\nhost1 -> host3 -> host1: {round_trip}\n"
        f"{problems}\nMAC addresses: host1 {mac_addresses(original)}, host3 {mac_addresses(on_new)}, "
        f"back on host1 {mac_addresses(back_home)}"
    )


def not_carried_over(entry):
    found = entry.get("not_carried_over")
    assert isinstance(found, list) and all(isinstance(item, str) for item in found), (
        f"the report entry has no list of strings under not_carried_over: {entry}"
    )
    return found


def test_a_healthcheck_start_interval_is_reported_as_not_carried_over_to_docker_20(names, tmp_path):
    name = f"{names}-probe"
    ssh(
        "host3",
        f"docker run -d --pull never --name {name} --health-cmd 'test -e /tmp' --health-interval 3s "
        "--health-timeout 2s --health-retries 2 --health-start-period 20s --health-start-interval 2s "
        f"{IMAGE} sleep 100000 >/dev/null",
    )
    source = inspect("host3", name)
    assert source["Config"]["Healthcheck"]["StartInterval"] == 2 * 10**9, source["Config"]["Healthcheck"]

    run, report = migrate(tmp_path, "host3", "host1", [name], check=True)
    assert run.returncode == 0, run.stdout[-6000:]
    assert report[name]["status"] == "would_migrate", report[name]
    assert any("Healthcheck.StartInterval" in item for item in not_carried_over(report[name])), report[name]
    assert state("host3", name) == "running" and state("host1", name) == "absent"

    run, report = migrate(tmp_path, "host3", "host1", [name])
    assert run.returncode == 0, run.stdout[-6000:]
    assert report[name]["status"] == "migrated", report[name]
    assert any("Healthcheck.StartInterval" in item for item in not_carried_over(report[name])), report[name]
    print(f"not carried over to Docker 20.10: {report[name]['not_carried_over']}")
    # the rest of the healthcheck arrived, and the copy becomes healthy on Docker 20.10
    wait_healthy("host1", name)
    healthcheck = inspect("host1", name)["Config"]["Healthcheck"]
    expected = {key: value for key, value in source["Config"]["Healthcheck"].items() if key != "StartInterval"}
    assert healthcheck == expected


def test_a_volume_subpath_mount_stops_in_preflight_before_docker_20_is_touched(names, tmp_path):
    name, volume, token = f"{names}-sub", f"{names}-vol", uuid.uuid4().hex
    ssh(
        "host3",
        f"docker volume create {volume} >/dev/null && "
        f"docker run --rm --pull never -v {volume}:/v {IMAGE} sh -c "
        f"'mkdir /v/sub && echo {token} > /v/sub/token && echo outside > /v/outside' && "
        f"docker run -d --pull never --name {name} --mount type=volume,src={volume},dst=/data,volume-subpath=sub "
        f"{IMAGE} sleep 100000 >/dev/null",
    )
    assert ssh("host3", f"docker exec {name} cat /data/token").stdout.strip() == token
    # what the run could make on host1 (other tests use host1 meanwhile): anything named after this test's objects
    made = (
        f"docker ps -aq --filter name={names}; docker volume ls -q --filter name={names}; "
        f"docker images -q 'ferry-migrate/{names}*'; ls /var/lib/ferry/incoming 2>/dev/null | grep -F {names}; true"
    )

    run, report = migrate(tmp_path, "host3", "host1", [name])
    assert run.returncode != 0
    entry = report[name]
    assert entry["status"] != "migrated" and entry["phase"] == "preflight", entry
    assert "VolumeOptions.Subpath" in entry["error"], entry
    print(f"preflight on Docker 20.10: {entry['error']}")
    # nothing was touched: the source still runs with its data, host1 has nothing new
    assert state("host3", name) == "running"
    assert ssh("host3", f"docker exec {name} cat /data/token").stdout.strip() == token
    assert state("host1", name) == "absent"
    assert ssh("host1", made).stdout == ""
