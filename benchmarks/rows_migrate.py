# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Rows 6-8: playbooks/migrate.yml between two lab hosts (lab/lab.py), over real SSH.

6   a container with volume data (the scale's mixed data set) and filesystem changes (a fifth of
    it), against the shell pipeline an operator would write: docker commit + save | zstd | ssh
    target 'zstd -d | docker load', tar of the volume | zstd | ssh target '... tar -x', docker run.
7   a tiny busybox container: the fixed cost in seconds, and the Ansible tasks run.
8   thin transfer: a container on a large base image the target already has; the bytes migrate
    sends, against the container's own changes and against a full `docker save`.

The baseline runs on host1 and pushes to host2 over SSH with the lab's key, copied to host1 for
the row and removed afterwards; migrate uses its own run key. Both sides leave the source running
(migrate: consistency pause, cutover keep) and start the copy on host2, which cleanup removes.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

from benchmarks.data import MIB, DataSet
from benchmarks.harness import REPO_ROOT, CheckFailed, Row, RowError, playbook_command, register, shell_command

LAB = REPO_ROOT / "lab"
SSH_CONFIG = LAB / ".state" / "ssh_config"
INVENTORY = LAB / ".state" / "inventory.ini"
IMAGE = "ferry-lab/busybox:latest"
SOURCE, TARGET = "host1", "host2"
BENCH_KEY = "/root/.ssh/ferry-bench"
TARGET_ADDRESS = "172.30.250.12"


def ssh(host, script, stdin=None, check=True):
    """Run a shell script on a lab host; its stdout."""
    proc = subprocess.run(
        ["ssh", "-F", str(SSH_CONFIG), host, script],
        input=stdin,
        capture_output=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RowError(f"on {host}: `{script[:200]}` failed: {proc.stderr.decode(errors='replace')[-800:]}")
    return proc.stdout.decode(errors="replace")


def lab_up():
    proc = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "python"), str(LAB / "lab.py"), "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RowError(f"lab.py up failed: {proc.stderr[-800:]}")


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
    if proc.wait() != 0:
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
    image = IMAGE
    volume_fraction = 1.0
    changes_fraction = 0.2

    def names(self, ctx):
        base = ctx.name(f"r{self.number}")
        return base, base + "-data", f"ferry-bench/r{self.number}:{ctx.run_id}"

    def setup(self, ctx):
        lab_up()
        name, volume, _image = self.names(ctx)
        self.cleanup_target(ctx)
        ssh(SOURCE, f"docker rm -f {name} >/dev/null 2>&1; docker volume rm {volume} >/dev/null 2>&1; true")
        ssh(
            SOURCE,
            f"docker run -d --name {name} --label ferry.bench=migrate -p 80 -e BENCH=1 "
            f"--restart unless-stopped --mount type=volume,source={volume},target=/data {self.image} "
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
        # The baseline's SSH from host1 to host2: the lab key, for this row only.
        key = (LAB / ".state" / "id_ed25519").read_bytes()
        ssh(SOURCE, f"umask 077 && cat > {BENCH_KEY}", stdin=key)
        known = (LAB / ".state" / "known_hosts").read_bytes()
        ssh(SOURCE, f"umask 077 && cat > {BENCH_KEY}.known_hosts", stdin=known)

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
        ssh(
            SOURCE,
            f"docker rm -f {name}; docker volume rm {volume}; rm -f {BENCH_KEY} {BENCH_KEY}.known_hosts",
            check=False,
        )

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
    target = 1.5

    def command(self, ctx, side, run):
        if side == "ours":
            return self.migrate(ctx)
        name, volume, image = self.names(ctx)
        mountpoint = ctx.state[self.number]["mountpoint"]
        to_target = (
            f"ssh -i {BENCH_KEY} -o UserKnownHostsFile={BENCH_KEY}.known_hosts -o StrictHostKeyChecking=yes "
            f"-o BatchMode=yes root@{TARGET_ADDRESS}"
        )
        target_volume = f"/var/lib/docker/volumes/{volume}/_data"
        script = (
            f"set -euo pipefail; docker commit {name} {image} >/dev/null; "
            f"docker save {image} | zstd -T0 -3 -q | {to_target} 'zstd -d -q | docker load -q >/dev/null'; "
            f"tar -C {mountpoint} -cf - . | zstd -T0 -3 -q | "
            f"{to_target} 'docker volume create {volume} >/dev/null && zstd -d -q | tar -C {target_volume} -xf -'; "
            f"{to_target} 'docker run -d --name {name} --label ferry.bench=migrate -p 80 -e BENCH=1 "
            f"--restart unless-stopped --mount type=volume,source={volume},target=/data {image} "
            f'sh -c "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 80 -h /www" >/dev/null\''
        )
        return shell_command(f"ssh -F {SSH_CONFIG} {SOURCE} {shlex.quote(script)}")

    def check(self, ctx, side, run, outcome):
        if side == "ours":
            self.report(ctx)
        self.check_target(ctx)


@register
class FixedCost(MigrateRow):
    number = 7
    title = "migrate.yml, tiny busybox"
    baseline = "(none: the fixed cost, at most 20 s)"
    target = 20.0  # seconds, not a ratio
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

    def setup(self, ctx):
        # A large base image (half the scale, random bytes, on top of busybox) that host2 already has.
        base = f"ferry-bench/r8-base:{ctx.run_id}"
        size = max(int((ctx.source.bytes or 3 * MIB) / 2), 2 * MIB)
        maker = ctx.name("r8-base")
        ssh(
            SOURCE,
            f"docker run --name {maker} {IMAGE} sh -c 'head -c {size} /dev/urandom > /base.bin' "
            f"&& docker commit {maker} {base} >/dev/null && docker rm {maker} >/dev/null",
        )
        saved = subprocess.Popen(["ssh", "-F", str(SSH_CONFIG), SOURCE, f"docker save {base}"], stdout=subprocess.PIPE)
        loaded = subprocess.run(
            ["ssh", "-F", str(SSH_CONFIG), TARGET, "docker load -q"],
            stdin=saved.stdout,
            capture_output=True,
            check=False,
        )
        if saved.wait() != 0 or loaded.returncode != 0:
            raise RowError(f"could not copy {base} to {TARGET}: {loaded.stderr.decode()[-500:]}")
        self.image = base
        super().setup(ctx)

    def teardown(self, ctx):
        super().teardown(ctx)
        for host in (SOURCE, TARGET):
            ssh(host, f"docker rmi {self.image}", check=False)

    def command(self, ctx, side, run):
        return self.migrate(ctx)

    def check(self, ctx, side, run, outcome):
        entry = self.report(ctx)
        self.check_target(ctx)
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
