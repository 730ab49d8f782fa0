# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Rows 6-8, 10 and 11: playbooks/migrate.yml between two lab hosts (lab/lab.py), over real SSH.

6   a container with volume data (the scale's mixed data set) and filesystem changes (a fifth of
    it), against the shell pipeline an operator would write: docker commit + save | zstd | ssh
    target 'zstd -d | docker load', tar of the volume | zstd | ssh target '... tar -x', docker run.
7   a tiny busybox container: the fixed cost in seconds, and the Ansible tasks run.
8   thin transfer: a container on a large base image the target already has; the bytes migrate
    sends, against the container's own changes and against a full `docker save`.
10  a fleet plan: 12 tiny containers, 6 on each of two hosts, which swap hosts (--forks 20); at most 60 s.
11  the outage of a stateful service (Redis, AOF only, with the scale's data set in a second volume) seen by
    a client that writes a 64 KiB key every 0.1 s to whichever host answers: migrate_strategy precopy
    against stop, in the same run. At most 3 s and at most 1/10 of stop's; every acknowledged write must
    be on the copy, and the files volume identical.

The baseline runs on host1 and pushes to host2 over SSH with the lab's key, which never leaves the
controller: an ssh-agent started for the row holds it and the ssh to host1 forwards that agent.
host2's address, user, port and host key come from the lab's state (lab/.state/ssh_config and
known_hosts); the known_hosts copy lives in a temporary directory on host1 that teardown removes.
migrate uses its own run key. Both sides leave the source running and start the copy on host2, which
cleanup removes: migrate with cutover keep, and consistency pause except in row 6, which moves the data
as a migration does by default with migrate_strategy stop (the source stopped, its volume and image
streamed straight into host2's, then started again). The service runs under --init, so that a stop
takes as long as the service needs, not the engine's 10 s timeout for a PID 1 that ignores SIGTERM.

Every ssh has a connect timeout (lab/.state/ssh_config sets ConnectTimeout and ServerAliveInterval)
and every call an overall limit, so a host that does not answer fails the row instead of hanging it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time

from benchmarks.data import MIB, DataSet
from benchmarks.harness import REPO_ROOT, CheckFailed, Row, RowError, playbook_command, register, shell_command

LAB = REPO_ROOT / "lab"
SSH_CONFIG = LAB / ".state" / "ssh_config"
INVENTORY = LAB / ".state" / "inventory.ini"
IMAGE = "ferry-lab/busybox:latest"
KNOWN_HOSTS = LAB / ".state" / "known_hosts"
KEY = LAB / ".state" / "id_ed25519"
SOURCE, TARGET = "host1", "host2"
SSH_SECONDS = 900  # the overall limit of one ssh call; the largest (1 GiB of data) take a few minutes
# What the baseline's ssh from host1 to host2 is told, besides the address, user and port.
# The service has a healthcheck, as a production one would: migrate's health step then waits for
# "healthy" instead of the stable window it gives containers without one. Double quotes only, so it
# nests in the single-quoted scripts below.
HEALTH = '--health-cmd "wget -q -O /dev/null http://127.0.0.1/" --health-interval 1s --health-retries 30'
HOP_OPTIONS = "-o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=6"


def run(argv, what, stdin=None, timeout=SSH_SECONDS, env=None):
    """Run argv with an overall limit; RowError naming ``what`` if it does not end in time.

    ``stdin``: bytes to send, or a file (a pipe from another process) to read from.
    """
    feed = {"input": stdin} if stdin is None or isinstance(stdin, bytes) else {"stdin": stdin}
    try:
        return subprocess.run(argv, capture_output=True, check=False, timeout=timeout, env=env, **feed)
    except subprocess.TimeoutExpired as exc:
        raise RowError(f"{what} did not finish within {timeout} s: {shlex.join(map(str, argv))[:300]}") from exc


def ssh(host, script, stdin=None, check=True, timeout=SSH_SECONDS):
    """Run a shell script on a lab host; its stdout."""
    proc = run(["ssh", "-F", str(SSH_CONFIG), host, script], f"ssh {host}", stdin=stdin, timeout=timeout)
    if check and proc.returncode != 0:
        raise RowError(f"on {host}: `{script[:200]}` failed: {proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout.decode(errors="replace")


def lab_endpoint(host):
    """``user@address`` and port of a lab host, as lab/.state/ssh_config has them (`ssh -G` reads, never connects)."""
    proc = run(["ssh", "-F", str(SSH_CONFIG), "-G", host], f"ssh -G {host}", timeout=30)
    config = dict(line.split(" ", 1) for line in proc.stdout.decode().splitlines() if " " in line)
    if proc.returncode != 0 or "hostname" not in config:
        raise RowError(f"{SSH_CONFIG} has no entry for {host}; run `make lab-up`")
    return f"{config.get('user', 'root')}@{config['hostname']}", config.get("port", "22")


def lab_up():
    """The lab up, with the workload image on SOURCE and TARGET; no other host's engine is touched (make test runs
    the benchmark beside molecule, whose migrate scenario takes host3's Docker socket away for one test)."""
    argv = [str(REPO_ROOT / ".venv" / "bin" / "python"), str(LAB / "lab.py"), "up", "--only", SOURCE, TARGET]
    proc = run(argv, "lab.py up", timeout=600)
    if proc.returncode != 0:
        raise RowError(f"lab.py up failed: {proc.stderr.decode(errors='replace')[-800:]}")


class Hop:
    """SSH from SOURCE to TARGET for a baseline, with the lab's key held by a local ssh-agent only.

    The agent listens in a private temporary directory and the key is added with a lifetime, so an
    interrupted run leaves no usable key behind; host2's host key goes to a temporary directory on
    host1, which ``close`` removes.
    """

    def __init__(self):
        self.local = tempfile.mkdtemp(prefix="ferry-bench-agent-")
        self.socket = os.path.join(self.local, "agent.sock")
        self.agent = subprocess.Popen(
            ["ssh-agent", "-D", "-a", self.socket], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.remote = ""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        for _attempt in range(50):
            if os.path.exists(self.socket):
                break
            if self.agent.poll() is not None:
                raise RowError(f"ssh-agent did not start: {self.agent.stderr.read().decode()[-300:]}")
            run(["sleep", "0.1"], "sleep")
        added = run(["ssh-add", "-q", "-t", "3600", str(KEY)], "ssh-add", timeout=30, env=self.env())
        if added.returncode != 0:
            raise RowError(f"ssh-add {KEY} failed: {added.stderr.decode(errors='replace')[-300:]}")
        self.remote = ssh(SOURCE, "mktemp -d /tmp/ferry-bench-hop.XXXXXX", timeout=60).strip()
        ssh(SOURCE, f"umask 077 && cat > {self.remote}/known_hosts", stdin=KNOWN_HOSTS.read_bytes(), timeout=60)
        self.endpoint, self.port = lab_endpoint(TARGET)

    def env(self):
        return {**os.environ, "SSH_AUTH_SOCK": self.socket}

    def to_target(self):
        """The ssh command, run on SOURCE, that reaches TARGET."""
        return (
            f"ssh {HOP_OPTIONS} -o StrictHostKeyChecking=yes -o UserKnownHostsFile={self.remote}/known_hosts "
            f"-p {self.port} {self.endpoint}"
        )

    def wrap(self, script):
        """argv and env that run ``script`` on SOURCE with this hop's agent forwarded."""
        return ["ssh", "-F", str(SSH_CONFIG), "-A", SOURCE, script], {"SSH_AUTH_SOCK": self.socket}

    def close(self):
        if self.remote:
            ssh(SOURCE, f"rm -rf {shlex.quote(self.remote)}", check=False, timeout=60)
            self.remote = ""
        if self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            self.agent.wait(timeout=30)
        subprocess.run(["rm", "-rf", self.local], check=False)


def stream_data(host, container, dest, scale, seed, total=None, prefix=""):
    """Stream the generated data set into ``container:dest`` on a lab host (docker cp from stdin)."""
    data = DataSet(scale, seed)
    if total is not None:
        data.total = total
    proc = subprocess.Popen(
        ["ssh", "-F", str(SSH_CONFIG), host, f"docker cp - {container}:{dest}"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for chunk in data.tar_chunks(prefix):
        proc.stdin.write(chunk)
    proc.stdin.close()
    try:
        returncode = proc.wait(timeout=SSH_SECONDS)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        raise RowError(f"docker cp into {container} on {host} did not finish within {SSH_SECONDS} s") from exc
    if returncode != 0:
        raise RowError(f"docker cp into {container} on {host} failed: {proc.stderr.read().decode()[-500:]}")
    return data


def tree_digest(host, path):
    """sha256 over `sha256sum` of every file under path on host: equal trees, equal digests."""
    out = ssh(host, f"cd {shlex.quote(path)} && find . -type f | LC_ALL=C sort | xargs -r sha256sum | sha256sum")
    return out.split()[0]


def recap_tasks(stdout):
    """Tasks Ansible ran (ok, which includes changed, plus failed), summed over the PLAY RECAP lines."""
    total = 0
    for match in re.finditer(r"ok=(\d+)\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)", stdout):
        total += int(match.group(1)) + int(match.group(2))
    return total


class MigrateRow(Row):
    """Shared lab plumbing: a service container on host1, migrated to host2 and removed after each run."""

    memory = False  # Ansible and ssh, not one module process: not part of the memory table
    volume_fraction = 1.0
    changes_fraction = 0.2

    def names(self, ctx):
        base = ctx.name(f"r{self.number}")
        return base, base + "-data", f"ferry-bench/r{self.number}:{ctx.run_id}"

    def image(self, ctx):
        """The image the service runs; present on SOURCE (the lab loads it), never pulled."""
        return IMAGE

    def setup(self, ctx):
        lab_up()
        name, volume, _image = self.names(ctx)
        self.cleanup_target(ctx)
        ssh(SOURCE, f"docker rm -f {name} >/dev/null 2>&1; docker volume rm {volume} >/dev/null 2>&1; true")
        ssh(
            SOURCE,
            f"docker run --pull never -d --init --name {name} --label ferry.bench=migrate -p 80 -e BENCH=1 {HEALTH} "
            f"--restart unless-stopped --mount type=volume,source={volume},target=/data {self.image(ctx)} "
            "sh -c 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www'",
        )
        scale, seed = ctx.source.scale, ctx.source.seed
        total = ctx.source.bytes or 3 * MIB
        if self.volume_fraction:
            stream_data(SOURCE, name, "/data", scale, seed, int(total * self.volume_fraction))
        if self.changes_fraction:
            stream_data(SOURCE, name, "/", scale, seed + 1, int(total * self.changes_fraction), prefix="changes/")
        mountpoint = ssh(SOURCE, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").strip()
        ctx.state[self.number] = {
            "mountpoint": mountpoint,
            "volume_digest": tree_digest(SOURCE, mountpoint) if self.volume_fraction else "",
        }

    def cleanup_target(self, ctx):
        name, volume, image = self.names(ctx)
        ssh(
            TARGET,
            f"docker rm -f {name} >/dev/null 2>&1; docker volume rm {volume} >/dev/null 2>&1;"
            f" docker rmi ferry-migrate/{name}:latest {image} >/dev/null 2>&1;"
            f" rm -rf /var/lib/ferry/incoming/*-{name}; true",
        )
        ssh(SOURCE, f"docker rmi {image} >/dev/null 2>&1; rm -rf /var/lib/ferry/migrate/*/{name}; true")

    def cleanup(self, ctx, side, run):
        self.cleanup_target(ctx)

    def teardown(self, ctx):
        name, volume, _image = self.names(ctx)
        self.cleanup_target(ctx)
        ssh(SOURCE, f"docker rm -f {name}; docker volume rm {volume}", check=False)

    def migrate(self, ctx, **extra):
        name = self.names(ctx)[0]
        report = ctx.path(f"migrate-report-{self.number}.json")
        ctx.state.setdefault(self.number, {})["report"] = report
        return playbook_command(
            REPO_ROOT / "playbooks" / "migrate.yml",
            INVENTORY,
            {
                "migrate_source": SOURCE,
                "migrate_target": TARGET,
                "migrate_containers": [name],
                "migrate_consistency": "pause",
                "migrate_cutover": "keep",
                "migrate_strategy": "stop",  # the data moves in the bundle, as the pipeline moves it
                "migrate_report_path": str(report),
                **extra,
            },
        )

    def report(self, ctx):
        path = ctx.state[self.number]["report"]
        doc = json.loads(path.read_text())
        (entry,) = doc["containers"]
        if entry["status"] != "migrated":
            raise CheckFailed(f"migrate reported {entry['status']}: {entry.get('error')}")
        return entry

    def check_target(self, ctx):
        name, volume, _image = self.names(ctx)
        running = ssh(TARGET, f"docker inspect -f '{{{{.State.Running}}}}' {name}").strip()
        if running != "true":
            raise CheckFailed(f"{name} does not run on {TARGET}")
        if self.volume_fraction:
            mountpoint = ssh(TARGET, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").strip()
            if tree_digest(TARGET, mountpoint) != ctx.state[self.number]["volume_digest"]:
                raise CheckFailed(f"the volume {volume} on {TARGET} differs from the source")


@register
class Migrate(MigrateRow):
    number = 6
    title = "migrate.yml host1 -> host2"
    baseline = (
        "docker commit + docker save | zstd | ssh target 'zstd -d | docker load'; "
        "tar of the volume | zstd | ssh target 'zstd -d | tar -x'; docker run with the same flags"
    )
    target = 1.3  # issue 12: row 6 at 1 GiB with migrate_strategy stop, <= 1.3 x the pipeline

    def setup(self, ctx):
        super().setup(ctx)
        ctx.state[self.number]["hop"] = Hop()

    def teardown(self, ctx):
        try:
            hop = ctx.state.get(self.number, {}).pop("hop", None)
            if hop is not None:
                hop.close()
        finally:
            super().teardown(ctx)

    def command(self, ctx, side, run):
        if side == "ours":
            # the default consistency: stopped, the volume and the image go straight into host2's (no bundle)
            return self.migrate(ctx, migrate_consistency="stop")
        name, volume, image = self.names(ctx)
        mountpoint = ctx.state[self.number]["mountpoint"]
        hop = ctx.state[self.number]["hop"]
        to_target = hop.to_target()
        target_volume = f"/var/lib/docker/volumes/{volume}/_data"
        script = (
            f"set -euo pipefail; docker commit {name} {image} >/dev/null; "
            f"docker save {image} | zstd -T0 -3 -q | {to_target} 'zstd -d -q | docker load -q >/dev/null'; "
            f"tar -C {mountpoint} -cf - . | zstd -T0 -3 -q | "
            f"{to_target} 'docker volume create {volume} >/dev/null && zstd -d -q | tar -C {target_volume} -xf -'; "
            f"{to_target} 'docker run --pull never -d --init --name {name} --label ferry.bench=migrate -p 80 "
            f"-e BENCH=1 {HEALTH} --restart unless-stopped --mount type=volume,source={volume},target=/data {image} "
            f'sh -c "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www" >/dev/null\''
        )
        argv, env = hop.wrap(script)
        command = shell_command(shlex.join(argv))
        command.env.update(env)
        return command

    def check(self, ctx, side, run, outcome):
        if side == "ours":
            # where the report says each run's time went, and how the volume and the image moved
            entry = self.report(ctx)
            ctx.state[self.number].setdefault("phases", []).append(entry.get("phases") or {})
            ctx.state[self.number]["moved"] = {
                "volumes": [{k: v.get(k) for k in ("name", "choice")} for v in entry.get("volumes") or []],
                "image_transfer": entry.get("image_transfer"),
            }
        self.check_target(ctx)

    def extras(self, ctx, seconds):
        state = ctx.state.get(self.number, {})
        return {"phases": state.get("phases", []), "moved": state.get("moved", {})}


@register
class FixedCost(MigrateRow):
    number = 7
    title = "migrate.yml, tiny busybox"
    baseline = "(none: the fixed cost, at most 10 s)"
    target = 10.0  # seconds, not a ratio
    sides = ("ours",)
    volume_fraction = 0
    changes_fraction = 0

    def command(self, ctx, side, run):
        return self.migrate(ctx)

    def check(self, ctx, side, run, outcome):
        self.report(ctx)
        self.check_target(ctx)
        ctx.state[self.number].setdefault("tasks", []).append(recap_tasks(outcome.stdout))

    def extras(self, ctx, seconds):
        tasks = ctx.state[self.number].get("tasks", [])
        median = seconds["ours"]["median"]
        return {
            "ansible_tasks": tasks,
            "verdict": "PASS" if median <= self.target else "MISS",
            "ratio": median / self.target,
        }


@register
class ThinTransfer(MigrateRow):
    number = 8
    title = "thin transfer (bytes)"
    baseline = "full docker save of the committed image"
    target = 1.1  # bytes sent <= 1.1 x the container's own changes, plus the manifest
    sides = ("ours",)
    volume_fraction = 0
    changes_fraction = 0.0625  # the container's own changes: 1/16 of the scale

    def image(self, ctx):
        return f"ferry-bench/r8-base:{ctx.run_id}"

    def setup(self, ctx):
        # A large base image (half the scale, random bytes, on top of busybox) that host2 already has.
        lab_up()  # loads IMAGE into the hosts' engines
        base = self.image(ctx)
        size = max(int((ctx.source.bytes or 3 * MIB) / 2), 2 * MIB)
        maker = ctx.name("r8-base")
        ssh(
            SOURCE,
            f"docker run --pull never --name {maker} {IMAGE} sh -c 'head -c {size} /dev/urandom > /base.bin' "
            f"&& docker commit {maker} {base} >/dev/null && docker rm {maker} >/dev/null",
        )
        saved = subprocess.Popen(["ssh", "-F", str(SSH_CONFIG), SOURCE, f"docker save {base}"], stdout=subprocess.PIPE)
        try:
            loaded = run(
                ["ssh", "-F", str(SSH_CONFIG), TARGET, "docker load -q"], f"copying {base}", stdin=saved.stdout
            )
            saved_code = saved.wait(timeout=60)
        except BaseException:
            saved.kill()
            saved.wait()
            raise
        finally:
            saved.stdout.close()
        if saved_code != 0 or loaded.returncode != 0:
            raise RowError(f"could not copy {base} to {TARGET}: {loaded.stderr.decode()[-500:]}")
        super().setup(ctx)

    def teardown(self, ctx):
        super().teardown(ctx)
        for host in (SOURCE, TARGET):  # this run's base image only; IMAGE stays for the other rows
            ssh(host, f"docker rmi {self.image(ctx)}", check=False)

    def command(self, ctx, side, run):
        # the layers host2 has are left out at every scale: at the tiny one the base is under migrate_thin_min_bytes
        return self.migrate(ctx, migrate_thin_min_bytes=0)

    def check(self, ctx, side, run, outcome):
        entry = self.report(ctx)
        self.check_target(ctx)
        if not entry.get("excluded_layers"):
            raise CheckFailed(f"no layer was left out, though {TARGET} has the base image")
        ctx.state[self.number].setdefault("sent", []).append(entry["bytes_sent"])

    def extras(self, ctx, seconds):
        name = self.names(ctx)[0]
        changes = int(ssh(SOURCE, f"docker inspect --size -f '{{{{.SizeRw}}}}' {name}").strip())
        full_image = f"ferry-bench/r8-full:{ctx.run_id}"
        full = ssh(
            SOURCE,
            f"docker commit {name} {full_image} >/dev/null && docker save {full_image} | wc -c"
            f" && docker rmi {full_image} >/dev/null",
        )
        sent = ctx.state[self.number].get("sent", [])
        median = sorted(sent)[len(sent) // 2] if sent else 0
        return {
            "bytes_sent": sent,
            "container_changes_bytes": changes,
            "full_save_bytes": int(full.split()[0]),
            "ratio": median / changes if changes else 0,
            "verdict": "PASS" if changes and median <= self.target * changes + 64 * 1024 else "MISS",
        }


@register
class Fleet(Row):
    """Row 10: a migrate_plan of 12 tiny containers over two hosts, swapping hosts, in one run."""

    number = 10
    title = "migrate.yml fleet plan, 12 tiny containers over 2 hosts"
    baseline = "(none: at most 60 s)"
    target = 60.0  # seconds, not a ratio
    sides = ("ours",)
    memory = False
    per_host = 6

    def entries(self, ctx):
        found = []
        for source, target in ((SOURCE, TARGET), (TARGET, SOURCE)):
            for index in range(self.per_host):
                found.append({"container": ctx.name("r10", source, index), "source": source, "target": target})
        return found

    def setup(self, ctx):
        lab_up()
        for source in (SOURCE, TARGET):
            names = [e["container"] for e in self.entries(ctx) if e["source"] == source]
            script = "; ".join(
                f"docker rm -f {name} >/dev/null 2>&1; docker run --pull never -d --name {name} "
                # --init: httpd as PID 1 would ignore SIGTERM, and each stop would wait Docker's 10 s stop
                # timeout, which is the container's cost, not the migration's (BENCHMARKS.md, row 10)
                f"--init --label ferry.bench=fleet {HEALTH} {IMAGE} "
                "sh -c 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www' >/dev/null"
                for name in names
            )
            ssh(source, script)

    def command(self, ctx, side, run):
        report = ctx.path("migrate-report-10.json")
        ctx.state[self.number] = {"report": report}
        command = playbook_command(
            REPO_ROOT / "playbooks" / "migrate.yml",
            INVENTORY,
            {"migrate_plan": self.entries(ctx), "migrate_report_path": str(report)},
        )
        command.argv += ["--forks", "20"]
        return command

    def check(self, ctx, side, run, outcome):
        doc = json.loads(ctx.state[self.number]["report"].read_text())
        statuses = {e["container"]: e["status"] for e in doc["containers"]}
        wrong = {name: status for name, status in statuses.items() if status != "migrated"}
        if len(statuses) != 2 * self.per_host or wrong:
            raise CheckFailed(f"fleet plan: {len(statuses)} containers reported, not migrated: {wrong}")
        for entry in self.entries(ctx):
            running = ssh(entry["target"], f"docker inspect -f '{{{{.State.Running}}}}' {entry['container']}").strip()
            if running != "true":
                raise CheckFailed(f"{entry['container']} does not run on {entry['target']}")
        ctx.state[self.number].setdefault("tasks", []).append(recap_tasks(outcome.stdout))

    def cleanup(self, ctx, side, run):
        """Back to the start: each copy removed from its target, each source started again."""
        for host in (SOURCE, TARGET):
            copies = [e["container"] for e in self.entries(ctx) if e["target"] == host]
            sources = [e["container"] for e in self.entries(ctx) if e["source"] == host]
            script = "; ".join(
                [
                    f"docker rm -f {name} >/dev/null 2>&1; docker rmi ferry-migrate/{name}:latest >/dev/null 2>&1"
                    for name in copies
                ]
                + [f"docker start {name} >/dev/null 2>&1" for name in sources]
                + ["rm -rf /var/lib/ferry/incoming/*-ferry-bench-* /var/lib/ferry/migrate/*/ferry-bench-*; true"]
            )
            ssh(host, script, check=False)

    def teardown(self, ctx):
        for host in (SOURCE, TARGET):
            ssh(
                host,
                "docker ps -aq --filter label=ferry.bench=fleet | xargs -r docker rm -f >/dev/null; true",
                check=False,
            )

    def extras(self, ctx, seconds):
        median = seconds["ours"]["median"]
        return {
            "ansible_tasks": ctx.state.get(self.number, {}).get("tasks", []),
            "verdict": "PASS" if median <= self.target else "MISS",
            "ratio": median / self.target,
        }


class Probe:
    """A client of the Redis service while it migrates: every ``interval`` seconds it SETs a new key (a
    value of ``value_bytes``) on whichever host answers, and records when each write was acknowledged.

    The outage is the longest time between two acknowledged writes. It is measured from the client's side
    over TCP from the controller, not taken from the migration's report. Every connection has a timeout.
    """

    def __init__(self, endpoints, prefix, interval=0.1, value_bytes=64 * 1024):
        self.endpoints = endpoints  # [(host name, address, port)], tried in order
        self.prefix = prefix
        self.interval = interval
        self.value = os.urandom(value_bytes // 2).hex().encode()
        self.acked = []  # (monotonic time, key)
        self.attempts = []  # the writes not acknowledged: (start, end, host, what came back)
        self.where = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _command(*words):
        out = f"*{len(words)}\r\n".encode()
        for word in words:
            data = word if isinstance(word, bytes) else str(word).encode()
            out += b"$%d\r\n%s\r\n" % (len(data), data)
        return out

    def _set(self, address, port, key):
        with socket.create_connection((address, port), timeout=0.3) as conn:
            conn.settimeout(0.5)
            conn.sendall(self._command("SET", key, self.value))
            answer = conn.recv(64)
        return answer

    def _loop(self):
        index = 0
        while not self._stop.is_set():
            key = f"{self.prefix}:{index}"
            for host, address, port in self.endpoints:
                start = time.monotonic()
                try:
                    answer = self._set(address, port, key)
                except OSError as exc:
                    self.attempts.append((start, time.monotonic(), host, type(exc).__name__))
                    continue
                at = time.monotonic()
                if answer.startswith(b"+OK"):
                    self.acked.append((at, key))
                    self.where[host] = self.where.get(host, 0) + 1
                    index += 1
                    break
                self.attempts.append((start, at, host, answer[:12].decode("ascii", "replace").strip() or "closed"))
            time.sleep(self.interval)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def outage(self):
        times = [at for at, _key in self.acked]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def gap(self):
        """What the client saw during the longest gap, in seconds from the last write acknowledged before it: each
        host's failed writes as ``[host, what came back, first start, last end, count]``, in order."""
        times = [at for at, _key in self.acked]
        if len(times) < 2:
            return []
        begin, end = max(zip(times, times[1:]), key=lambda pair: pair[1] - pair[0])
        out, last = [], {}
        for start, stop, host, what in self.attempts:
            if begin <= start <= end:
                run = last.get(host)
                if run is not None and run[1] == what:
                    run[3], run[4] = round(stop - begin, 3), run[4] + 1
                else:
                    last[host] = [host, what, round(start - begin, 3), round(stop - begin, 3), 1]
                    out.append(last[host])
        return out

    def written(self):
        return len(self.acked) * len(self.value)


@register
class StatefulOutage(MigrateRow):
    """Row 11: the outage of a stateful service seen by its client, migrate_strategy precopy against stop."""

    number = 11
    title = "outage of Redis with a writer, migrate_strategy precopy"
    baseline = "the same migration with migrate_strategy stop"
    target = 0.1  # precopy's median outage <= 1/10 of stop's, and at most 3 s
    outage_limit = 3.0
    image_ref = "ferry-lab/redis:latest"
    volume_fraction = 0
    changes_fraction = 0

    def names(self, ctx):
        base = ctx.name("r11")
        return base, base + "-files", base + "-redis"

    def setup(self, ctx):
        lab_up()
        lab = [str(REPO_ROOT / ".venv" / "bin" / "python"), str(LAB / "lab.py")]
        loaded = run([*lab, "load", self.image_ref, "--only", SOURCE, TARGET], "lab.py load", timeout=900)
        if loaded.returncode != 0:
            raise RowError(f"lab.py load {self.image_ref} failed: {loaded.stderr.decode(errors='replace')[-800:]}")
        name, files, data = self.names(ctx)
        self.cleanup_target(ctx)
        ssh(SOURCE, f"docker rm -f {name} >/dev/null 2>&1; docker volume rm {files} {data} >/dev/null 2>&1; true")
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
        # AOF only (no RDB snapshot on shutdown): each write is in the append-only file, fsynced every second
        ssh(
            SOURCE,
            f"docker run --pull never -d --name {name} --label ferry.bench=outage -p {port}:6379 "
            f"--mount type=volume,source={data},target=/var/lib/redis "
            f"--mount type=volume,source={files},target=/srv/files {self.image_ref} "
            "--appendonly yes --save '' --enable-debug-command local >/dev/null",
        )
        total = ctx.source.bytes or 3 * MIB
        stream_data(SOURCE, name, "/srv/files", ctx.source.scale, ctx.source.seed, total)
        # a dataset of its own (100,000 keys, about 3.4 MB), rewritten into the AOF's base file; redis-cli exits 0 on
        # an error reply, so its answer is checked (DEBUG needs --enable-debug-command above)
        populated = ssh(
            SOURCE, f"docker exec {name} sh -c 'redis-cli DEBUG POPULATE 100000 seed 100 && redis-cli BGREWRITEAOF'"
        )
        if not populated.startswith("OK"):
            raise RowError(f"populating {name} failed: {populated.strip()[-300:]}")
        mountpoint = ssh(SOURCE, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {files}").strip()
        ctx.state[self.number] = {
            "port": port,
            "files_digest": tree_digest(SOURCE, mountpoint),
            "files_bytes": total,
            "outage": {"ours": [], "baseline": []},
            "phases": {"ours": [], "baseline": []},
            "gaps": {"ours": [], "baseline": []},
            "sent": [],
            "changed": [],
            "data": [],
            "volumes": [],
        }

    def cleanup_target(self, ctx):
        name, files, data = self.names(ctx)
        ssh(
            TARGET,
            f"docker rm -f {name} >/dev/null 2>&1; docker volume rm {files} {data} >/dev/null 2>&1;"
            f" docker rmi ferry-migrate/{name}:latest >/dev/null 2>&1; rm -rf /var/lib/ferry/incoming/*-{name}; true",
        )
        ssh(SOURCE, f"rm -rf /var/lib/ferry/migrate/*/{name}; true")

    def prepare(self, ctx, side, run):
        name = self.names(ctx)[0]
        state = ctx.state[self.number]
        ssh(SOURCE, f"docker start {name} >/dev/null")
        endpoints = [(host, lab_endpoint(host)[0].split("@")[-1], state["port"]) for host in (SOURCE, TARGET)]
        probe = Probe(endpoints, f"r11:{side}:{run}")
        probe.start()
        for _attempt in range(100):  # the service answers on the source before the run starts
            if probe.where.get(SOURCE):
                break
            time.sleep(0.1)
        else:
            probe.stop()
            raise RowError(f"{name} does not answer on {SOURCE}:{state['port']}")
        state["probe"] = probe
        name, files, data = self.names(ctx)
        # the data before the run: both volumes, as the source holds them
        sizes = ssh(
            SOURCE,
            f"du -sb $(docker volume inspect -f '{{{{.Mountpoint}}}}' {files} {data})"
            " | awk '{s+=$1} END {print s}'",
        )
        state["data_bytes"] = int(sizes.strip() or 0)

    def command(self, ctx, side, run):
        report = ctx.path(f"migrate-report-11-{side}-{run}.json")
        ctx.state[self.number]["report"] = report
        return playbook_command(
            REPO_ROOT / "playbooks" / "migrate.yml",
            INVENTORY,
            {
                "migrate_source": SOURCE,
                "migrate_target": TARGET,
                "migrate_containers": [self.names(ctx)[0]],
                "migrate_strategy": "precopy" if side == "ours" else "stop",
                "migrate_precopy_min_bytes": 0,
                "migrate_health_stable_seconds": 2,
                "migrate_report_path": str(report),
            },
        )

    def check(self, ctx, side, run, outcome):
        state = ctx.state[self.number]
        probe = state.pop("probe")
        time.sleep(1.0)  # the client's last writes land on the copy
        probe.stop()
        doc = json.loads(state["report"].read_text())
        (entry,) = doc["containers"]
        if entry["status"] != "migrated":
            raise CheckFailed(f"migrate reported {entry['status']}: {entry.get('error')}")
        name, files, _data = self.names(ctx)
        keys = [key for _at, key in probe.acked]
        if not probe.where.get(TARGET):
            raise CheckFailed(f"the client never reached {name} on {TARGET}")
        # every write the client saw acknowledged, on either host, is on the copy (in chunks: argv limits)
        found = 0
        for start in range(0, len(keys), 500):
            chunk = " ".join(shlex.quote(k) for k in keys[start : start + 500])
            found += int(ssh(TARGET, f"docker exec {name} redis-cli EXISTS {chunk}").strip() or 0)
        if found != len(keys):
            raise CheckFailed(f"{len(keys) - found} of the {len(keys)} acknowledged writes are missing on {TARGET}")
        mountpoint = ssh(TARGET, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {files}").strip()
        if tree_digest(TARGET, mountpoint) != state["files_digest"]:
            raise CheckFailed(f"the volume {files} on {TARGET} differs from the source")
        state["outage"][side].append(round(probe.outage(), 3))
        state["gaps"][side].append(probe.gap())
        # where the report says the time went (its capture, transfer and restore phases hold the outage)
        state["phases"][side].append(entry.get("phases") or {})
        if side == "ours":
            state["sent"].append(int(entry.get("precopy_sent_bytes") or 0) + int(entry.get("bytes_sent") or 0))
            state["changed"].append(probe.written())
            state["data"].append(state["data_bytes"])
            state["volumes"].append(entry.get("volumes"))
        ctx.log(f"  row 11 {side}: outage {probe.outage():.2f} s (report: {entry['downtime_seconds']} s)")

    def cleanup(self, ctx, side, run):
        state = ctx.state.get(self.number, {})
        probe = state.pop("probe", None)
        if probe is not None:
            probe.stop()
        name = self.names(ctx)[0]
        # back to the start: the copy removed from host2, the source started again on host1
        self.cleanup_target(ctx)
        ssh(SOURCE, f"docker start {name} >/dev/null", check=False)

    def teardown(self, ctx):
        name, files, data = self.names(ctx)
        self.cleanup_target(ctx)
        ssh(SOURCE, f"docker rm -f {name}; docker volume rm {files} {data}", check=False)

    def extras(self, ctx, seconds):
        state = ctx.state[self.number]
        ours, stop = state["outage"]["ours"], state["outage"]["baseline"]
        median_ours = statistics.median(ours) if ours else 0
        median_stop = statistics.median(stop) if stop else 0
        ratio = median_ours / median_stop if median_stop else 0
        sent, changed, data = state["sent"], state["changed"], state["data"]
        bytes_ratio = [round(s / (d + c), 3) for s, c, d in zip(sent, changed, data) if d + c]
        return {
            "outage_seconds": {"precopy": ours, "stop": stop},
            "outage_median": {"precopy": median_ours, "stop": median_stop},
            "phases": {"precopy": state["phases"]["ours"], "stop": state["phases"]["baseline"]},
            # what the client saw during each run's outage (Probe.gap)
            "outage_gaps": {"precopy": state["gaps"]["ours"], "stop": state["gaps"]["baseline"]},
            "ratio": ratio,
            "verdict": "PASS" if median_ours <= self.outage_limit and ratio <= self.target else "MISS",
            "precopy_bytes_sent": sent,
            "data_bytes": data,
            "client_bytes_written": changed,
            "bytes_sent_over_data_and_changes": bytes_ratio,
            "volumes": state["volumes"],  # each run's: how much its last passes moved varies with the writer
        }
