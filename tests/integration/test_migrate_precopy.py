"""Pre-copy (issue 12): a volume's data moves while the source serves, only the last delta while it is stopped.

On the lab, with playbooks/migrate.yml from host1 to host2:

- Redis (AOF only) with a client that writes a 64 KiB key every 0.1 s to whichever host answers, and a
  second volume of files: with migrate_strategy precopy every write the client saw acknowledged is on the
  copy, the files are identical, the report names the choice and the passes of each volume, and the target
  checked each volume's content digest before it used it. The client's outage is printed.
- What moves how: a plain volume is pre-copied, a tmpfs-backed one goes by stop-and-copy, one set to skip in
  migrate_volume_data_map is recreated empty; the report gives each choice and its reason.
- The target's disk fills during the pre-copy: the source is never stopped, the volume the run made on host2
  is removed, and the error names host2 and the space it had.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import lab_run
import pytest
from lab_run import ssh

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE = REPO_ROOT / "lab" / ".state"
REDIS = "ferry-lab/redis:latest"


def address(host):
    """The host's address, as lab/.state/ssh_config has it (ssh -G reads it, never connects)."""
    out = subprocess.run(
        ["ssh", "-F", str(STATE / "ssh_config"), "-G", host], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("hostname "))


def migrate(tmp_path, containers, **extra):
    return lab_run.migrate(tmp_path, containers, migrate_health_stable_seconds=2, migrate_precopy_min_bytes=0, **extra)


def files_digest(host, volume):
    mountpoint = ssh(host, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").stdout.strip()
    script = f"cd {mountpoint} && find . -type f | LC_ALL=C sort | xargs -r sha256sum | sha256sum"
    return ssh(host, script).stdout.split()[0]


@pytest.fixture
def names(lab):
    prefix = f"ferry-pc-{uuid.uuid4().hex[:6]}"
    yield prefix
    for host in ("host1", "host2"):
        ssh(
            host,
            f"docker ps -aq --filter name={prefix} | xargs -r docker rm -f >/dev/null; "
            f"rm -rf /srv/{prefix} /srv/{prefix}-new /etc/{prefix}; "
            f"docker volume ls -q --filter name={prefix} | xargs -r docker volume rm >/dev/null; "
            f"docker images -q 'ferry-migrate/{prefix}*' | sort -u | xargs -r docker rmi -f >/dev/null; "
            f"rm -rf /var/lib/ferry/incoming/*-{prefix}* /var/lib/ferry/migrate/*/{prefix}*; true",
            check=False,
        )


class Writer:
    """SET a new 64 KiB key every 0.1 s on whichever host answers; the keys acknowledged and when."""

    def __init__(self, endpoints, prefix):
        self.endpoints, self.prefix = endpoints, prefix
        self.value = os.urandom(32 * 1024).hex().encode()
        self.acked = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def set(self, host, port, key):
        command = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(self.value), self.value)
        with socket.create_connection((host, port), timeout=0.3) as conn:
            conn.settimeout(0.5)
            conn.sendall(command)
            return conn.recv(16).startswith(b"+OK")

    def loop(self):
        index = 0
        while not self.stop.is_set():
            key = f"{self.prefix}:{index}".encode()
            for host, port in self.endpoints:
                try:
                    if self.set(host, port, key):
                        self.acked.append((time.monotonic(), key.decode(), host))
                        index += 1
                        break
                except OSError:
                    continue
            time.sleep(0.1)

    def outage(self):
        times = [at for at, _key, _host in self.acked]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def test_precopy_moves_a_busy_redis_with_every_acknowledged_write(names, tmp_path):
    subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "python"), str(REPO_ROOT / "lab" / "lab.py"), "load", REDIS],
        check=True,
        capture_output=True,
        timeout=900,
    )
    name, data, files = names, f"{names}-data", f"{names}-files"
    port = 20000 + int.from_bytes(os.urandom(2), "big") % 20000
    ssh(
        "host1",
        f"docker run -d --pull never --name {name} -p {port}:6379 -v {data}:/var/lib/redis -v {files}:/srv/files "
        f"{REDIS} --appendonly yes --save '' >/dev/null && "
        f"docker exec -u root {name} sh -c 'head -c 67108864 /dev/urandom > /srv/files/blob && mkdir /srv/files/d && "
        "for i in $(seq 1 200); do echo $i > /srv/files/d/f$i; done'",
    )
    before = files_digest("host1", files)
    writer = Writer([(address("host1"), port), (address("host2"), port)], names)
    writer.thread.start()
    try:
        deadline = time.monotonic() + 30
        while not writer.acked and time.monotonic() < deadline:
            time.sleep(0.1)
        assert writer.acked, "redis does not answer on host1"
        run, report = migrate(tmp_path, [name])
        time.sleep(1)
    finally:
        writer.stop.set()
        writer.thread.join(timeout=10)
    assert run.returncode == 0, run.stdout[-6000:]
    entry = report[name]
    assert entry["status"] == "migrated", entry
    volumes = {v["name"]: v for v in entry["volumes"]}
    assert {v["choice"] for v in volumes.values()} == {"precopy"}, volumes
    for volume in volumes.values():
        assert volume["passes"] >= 1 and volume["outcome"] in ("converged", "capped", "not_shrinking")
        assert len(volume["digest"]) == 64 and volume["entries"] > 0
    assert entry["phases"]["precopy"] > 0 and entry["precopy_sent_bytes"] >= 64 * 1048576
    # the restore waited on host2 and took the capture's handoff (migrate_early_restore, the default)
    assert entry["early_restore"] is True, entry
    # and its async job's results file (which names the container) was removed from host2 once read
    jobs = ssh("host2", f'grep -l -s -F -- {name} "$HOME"/.ansible_async/* || true').stdout.split()
    assert jobs == [], jobs
    # every write the client saw acknowledged (on either host) is on the copy, and the files are the same
    keys = [key for _at, key, _host in writer.acked]
    assert {host for _at, _key, host in writer.acked} == {address("host1"), address("host2")}
    found = 0
    for start in range(0, len(keys), 400):
        chunk = " ".join(keys[start : start + 400])
        found += int(ssh("host2", f"docker exec {name} redis-cli EXISTS {chunk}").stdout.strip())
    assert found == len(keys)
    assert files_digest("host2", files) == before
    assert caches_left("host1", name) == []  # the capture dropped the run's digest caches on the source
    print(
        f"\nprecopy: {len(keys)} writes acknowledged; the client saw no answer for at most {writer.outage():.2f} s"
        f" (report: {entry['downtime_seconds']} s); phases {entry['phases']}"
    )


def test_each_volume_moves_the_way_its_kind_and_the_map_say(names, tmp_path):
    name = names
    ssh(
        "host1",
        f"docker volume create {names}-plain >/dev/null && "
        f"docker volume create --opt type=tmpfs --opt device=tmpfs --opt o=size=16m {names}-mem >/dev/null && "
        f"docker volume create {names}-cache >/dev/null && "
        f"docker run --rm --pull never -v {names}-plain:/plain -v {names}-cache:/cache ferry-lab/busybox "
        "sh -c 'echo p > /plain/p; echo c > /cache/c' && "
        f"docker run -d --pull never --name {name} -v {names}-plain:/plain -v {names}-mem:/mem "
        f"-v {names}-cache:/cache ferry-lab/busybox httpd -f -p 8080 -h /plain >/dev/null",
    )
    run, report = migrate(tmp_path, [name], migrate_volume_data_map={f"{names}-cache": "skip"})
    assert run.returncode == 0, run.stdout[-6000:]
    volumes = {v["name"]: v for v in report[name]["volumes"]}
    assert volumes[f"{names}-plain"]["choice"] == "precopy" and volumes[f"{names}-plain"]["digest"]
    assert volumes[f"{names}-mem"]["choice"] == "copy"
    assert "not a plain local volume (local, tmpfs)" in volumes[f"{names}-mem"]["reason"]
    assert volumes[f"{names}-cache"]["choice"] == "skip"
    assert "migrate_volume_data_map is skip" in volumes[f"{names}-cache"]["reason"]
    assert ssh("host2", f"docker exec {name} cat /plain/p").stdout.strip() == "p"
    # the skipped volume's definition was recreated, without its data
    assert ssh("host2", f"docker exec {name} ls -A /cache").stdout.strip() == ""
    driver = ssh("host2", f"docker volume inspect -f '{{{{.Options.type}}}}' {names}-mem").stdout.strip()
    assert driver == "tmpfs"


XATTRS = (
    "import os, sys\n"
    "for path in sys.argv[1:]:\n"
    "    print(path, sorted((n, os.getxattr(path, n).hex()) for n in os.listxattr(path) if n.startswith('user.')))\n"
)


def test_the_last_delta_carries_the_xattrs_of_what_changed_after_the_last_live_pass(names, tmp_path):
    """The last delta leaves ACLs and xattrs to a second pass over what changed since the last live pass began:
    a file with an xattr whose content a pre-migrate hook changes (rsync writes it anew, without the xattr) and a
    new file keep theirs; the target's digest check covers xattrs, so a miss would fail the migration."""
    name, volume = names, f"{names}-data"
    ssh(
        "host1",
        f"docker volume create {volume} >/dev/null && "
        f"docker run --rm --pull never -v {volume}:/d ferry-lab/busybox sh -c 'echo a > /d/kept; echo a > /d/grows' && "
        f"m=$(docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}) && python3 -c \"import os; "
        f"os.setxattr('$m/kept', 'user.k', b'1'); os.setxattr('$m/grows', 'user.g', b'2'); "
        f"os.setxattr('$m', 'user.top', b'3')\" && "
        # the hook runs once the live passes are done, right before the stop
        f"docker run -d --pull never --name {name} -v {volume}:/d "
        "-l ferry.docker.pre-migrate='echo b >> /d/grows; echo n > /d/new' ferry-lab/busybox "
        "httpd -f -p 8080 -h /d >/dev/null",
    )
    # the restore as a task once the capture returned (migrate_early_restore false), the same checks before use
    run, report = migrate(tmp_path, [name], migrate_early_restore=False)
    assert run.returncode == 0, run.stdout[-6000:]
    assert report[name]["early_restore"] is False, report[name]
    (moved,) = report[name]["volumes"]
    assert moved["choice"] == "precopy" and moved["passes"] >= 1 and moved["final_delta_bytes"] > 0, moved
    assert [hook["status"] for hook in report[name]["hooks"]] == ["ok"]
    listing = {}
    for host in ("host1", "host2"):
        m = ssh(host, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").stdout.strip()
        script = f"python3 - {m} {m}/kept {m}/grows {m}/new <<'EOF'\n{XATTRS}EOF"
        listing[host] = ssh(host, script).stdout.replace(m, "<vol>")
    assert listing["host2"] == listing["host1"], listing
    assert "('user.g', '32')" in listing["host2"] and "('user.top', '33')" in listing["host2"]
    assert ssh("host2", f"docker exec {name} cat /d/grows").stdout.split() == ["a", "b"]


TREE = (
    # every entry with its type, mode, owner, size, times (to the nanosecond) and link target or content digest
    "cd {m} && find . -mindepth 0 -printf '%p %y %m %U %G %s %T@ %l\\n' | LC_ALL=C sort && "
    "find . -type f | LC_ALL=C sort | xargs -r sha256sum"
)


def test_the_last_pass_sends_only_what_differs_from_the_targets_tree_whatever_a_deploy_changed(names, tmp_path):
    """A pre-migrate hook runs after the target kept its tree: it swaps two directories (what is below them keeps
    its change time), removes a tree, turns a file into a directory and a directory into a symlink, adds a file
    and rewrites one. The last pass lists only the paths where the trees differ, and the target's check before use
    reads only those again; both hosts then hold the same tree, times included."""
    name, volume = names, f"{names}-data"
    ssh(
        "host1",
        f"docker volume create {volume} >/dev/null && "
        f"docker run --rm --pull never -v {volume}:/d ferry-lab/busybox sh -c '"
        "mkdir -p /d/blue/css /d/green/css /d/old/deep /d/dir && echo b > /d/blue/css/site && "
        "echo g > /d/green/css/site && echo o > /d/old/deep/x && echo f > /d/file && echo k > /d/dir/k && "
        "for i in $(seq 1 300); do echo $i > /d/n$i; done' && "
        f"docker run -d --pull never --name {name} -v {volume}:/d -l ferry.docker.pre-migrate='"
        "mv /d/blue /d/swap && mv /d/green /d/blue && mv /d/swap /d/green && rm -r /d/old && "
        "rm /d/file && mkdir /d/file && echo in > /d/file/in && rm -r /d/dir && ln -s blue /d/dir && "
        "echo new > /d/new && echo changed > /d/n7' "
        "ferry-lab/busybox httpd -f -p 8080 -h /d >/dev/null",
    )
    # the restore waits on host2 (migrate_early_restore, the default): the capture's note says what the last pass
    # changed, and host2's check reads only that again, from the tree it kept
    run, report = migrate(tmp_path, [name])
    assert run.returncode == 0, run.stdout[-6000:]
    assert report[name]["early_restore"] is True, report[name]
    (moved,) = report[name]["volumes"]
    assert [hook["status"] for hook in report[name]["hooks"]] == ["ok"]
    assert moved["choice"] == "precopy" and "final_whole_tree" not in moved, moved
    # the swapped pair and what is below them, the removed tree, the new entries and their directories: not the
    # 300 files nobody touched
    assert 8 <= moved["final_listed_paths"] < 60, moved
    assert moved["digest_started_early"] is True and moved["digest_listed_paths"] == moved["final_listed_paths"], moved
    assert "digest_walked_whole" not in moved, moved
    trees = {}
    for host in ("host1", "host2"):
        m = ssh(host, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").stdout.strip()
        trees[host] = ssh(host, TREE.format(m=m)).stdout
    assert trees["host2"] == trees["host1"]
    assert ssh("host2", f"docker exec {name} cat /d/dir/css/site /d/file/in /d/n7").stdout.split() == [
        "g",
        "in",
        "changed",
    ]


def test_a_target_disk_that_fills_during_precopy_never_stops_the_source(names, tmp_path):
    name, volume = names, f"{names}-data"
    ssh(
        "host1",
        f"docker volume create {volume} >/dev/null && "
        f"docker run --rm --pull never -v {volume}:/data ferry-lab/busybox sh -c "
        "'head -c 33554432 /dev/urandom > /data/blob' && "
        f"docker run -d --pull never --name {name} -v {volume}:/data ferry-lab/busybox "
        "httpd -f -p 8080 -h /data >/dev/null",
    )
    started = ssh("host1", f"docker inspect -f '{{{{.State.StartedAt}}}}' {name}").stdout.strip()
    # host2 has 8 MiB where the volume's data will go: its Docker root is not touched otherwise
    root = ssh("host2", "docker info -f '{{.DockerRootDir}}'").stdout.strip()
    where = f"{root}/volumes/{volume}"
    ssh("host2", f"mkdir -p {where} && mount -t tmpfs -o size=8m tmpfs {where}")
    try:
        run, report = migrate(tmp_path, [name])
    finally:
        ssh("host2", f"umount {where}; rmdir {where}", check=False)
    assert run.returncode != 0
    entry = report[name]
    assert entry["status"] == "failed" and entry["phase"] == "precopy", entry
    assert "host2 ran out of space during the precopy of volume" in entry["error"]
    assert "bytes free there when the pre-copy began" in entry["error"]
    # the source served throughout: never stopped, not restarted
    assert ssh("host1", f"docker inspect -f '{{{{.State.StartedAt}}}}' {name}").stdout.strip() == started
    assert ssh("host1", f"docker inspect -f '{{{{.State.Running}}}}' {name}").stdout.strip() == "true"
    # the volume the run made on host2 is gone, and so are the source's digest caches of the run
    assert ssh("host2", f"docker volume ls -q | grep -cx {volume} || true").stdout.strip() == "0"
    assert caches_left("host1", name) == []


def caches_left(host, name):
    """The digest caches of ``name``'s volumes and writable layer left in any run's directory on ``host``."""
    return ssh(host, f"find /var/lib/ferry/migrate -name '*{name}*.marshal'").stdout.split()


def tree(host, path):
    """Every entry of ``path`` on ``host`` with its type, mode, owner and content digest."""
    script = (
        f"cd {path} && find . -printf '%P %y %m %U:%G %l\\n' | LC_ALL=C sort && "
        "find . -type f | LC_ALL=C sort | xargs -r sha256sum"
    )
    return ssh(host, script).stdout


def test_bind_data_moves_into_a_path_the_run_makes_and_never_from_a_system_directory(names, tmp_path):
    name, data, conf = names, f"/srv/{names}/data", f"/etc/{names}"
    ssh(
        "host1",
        f"mkdir -p {data}/sub {conf} && echo token > {data}/index.html && head -c 3000000 /dev/urandom > "
        f"{data}/sub/blob && ln -s index.html {data}/link && chown -R 1000:27 {data}/sub && chmod 750 {data} && "
        f"echo x > {conf}/app.conf && "
        f"docker run -d --pull never --name {name} -v {data}:/www -v {conf}:/conf ferry-lab/busybox "
        "httpd -f -p 8080 -h /www >/dev/null",
    )
    before = tree("host1", data)
    run, report = migrate(
        tmp_path,
        [name],
        migrate_bind_data=True,
        migrate_bind_map={f"/srv/{names}": f"/srv/{names}-new"},
    )
    assert run.returncode == 0, run.stdout[-6000:]
    volumes = {v["name"]: v for v in report[name]["volumes"]}
    moved = volumes[f"bind:{data}"]
    assert moved["choice"] == "precopy" and len(moved["digest"]) == 64, moved
    assert volumes[f"bind:{conf}"]["choice"] == "skip"
    assert f"not copied: {conf} is below /etc, a system directory" == volumes[f"bind:{conf}"]["reason"]
    assert tree("host2", f"/srv/{names}-new/data") == before  # owners, modes, links and contents
    answer = ssh("host2", f"docker exec {name} wget -q -O - http://127.0.0.1:8080/index.html").stdout.strip()
    assert answer == "token"
    assert ssh("host2", f"ls -A {conf}").stdout.strip() == ""  # the system path: made empty, not copied


def test_bind_data_never_goes_over_a_target_directory_with_other_data(names, tmp_path):
    name, data = names, f"/srv/{names}/data"
    ssh(
        "host1",
        f"mkdir -p {data} && echo token > {data}/index.html && docker run -d --pull never --name {name} "
        f"-v {data}:/www ferry-lab/busybox httpd -f -p 8080 -h /www >/dev/null",
    )
    ssh("host2", f"mkdir -p {data} && echo theirs > {data}/index.html")
    run, report = migrate(tmp_path, [name], migrate_bind_data=True)
    assert run.returncode != 0
    entry = report[name]
    assert entry["status"] == "failed" and entry["phase"] == "precopy", entry
    assert "exists on this host and is not an empty directory" in entry["error"]
    assert ssh("host2", f"cat {data}/index.html").stdout.strip() == "theirs"
    assert ssh("host1", f"docker inspect -f '{{{{.State.Running}}}}' {name}").stdout.strip() == "true"
    assert ssh("host2", f"docker ps -aq --filter name=^{name}$").stdout.strip() == ""


def mountpoint(host, volume):
    return ssh(host, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").stdout.strip()


def test_stop_streams_a_plain_volume_into_the_target_and_keep_bundle_puts_it_in_the_bundle(names, tmp_path):
    """migrate_strategy stop (D): the volume goes once the source is stopped, straight into host2's volume (no
    archive of it on either host), and host2 checks its digest before use; migrate_keep_bundle puts it in the
    bundle kept on host1 instead."""
    for suffix in ("s", "k"):
        name, volume = f"{names}-{suffix}", f"{names}-{suffix}-data"
        ssh(
            "host1",
            f"docker volume create {volume} >/dev/null && docker run --rm --pull never -v {volume}:/d "
            "ferry-lab/busybox sh -c 'mkdir -p /d/sub && echo token > /d/index.html && head -c 2000000 "
            "/dev/urandom > /d/sub/blob && ln /d/sub/blob /d/hard && ln -s index.html /d/link && "
            "chown -R 1000:27 /d/sub && chmod 750 /d/sub && chmod 711 /d' && "
            # the kept one runs under an init that passes SIGTERM on; httpd alone as PID 1 ignores it
            f"docker run -d --pull never {'--init ' if suffix == 'k' else ''}--name {name} -v {volume}:/www "
            "ferry-lab/busybox httpd -f -p 8080 -h /www >/dev/null",
        )
    streamed, kept = f"{names}-s", f"{names}-k"
    # 40 MB in its own layer: its commit and stream outlast the volume's last pass, so the capture tells the
    # waiting restore that the volume is ready, and host2 digests it while the image still streams
    ssh("host1", f"docker exec {streamed} sh -c 'head -c 40000000 /dev/urandom > /layer.bin'")
    before = tree("host1", mountpoint("host1", f"{streamed}-data"))
    host_report = f"/var/lib/ferry/test-{names}/reports/migrate.json"  # its directories are made for it
    run, report = migrate(
        tmp_path,
        [streamed],
        migrate_strategy="stop",
        migrate_keep_target_bundle=True,
        migrate_stop_timeout=2,
        migrate_host_report_path=host_report,
    )
    assert run.returncode == 0, run.stdout[-6000:]
    # disarming the guard wrote the host's part of the report (the task that would write it otherwise skipped)
    written = json.loads(ssh("host1", f"cat {host_report}").stdout)
    assert written["status"] == "ok" and written["containers"] == list(report.values()), written
    modes = ssh("host1", f"stat -c %a {host_report} $(dirname {host_report}) $(dirname $(dirname {host_report}))")
    assert modes.stdout.split() == ["600", "700", "700"], modes.stdout
    task = run.stdout.split("Write this host's part of the report on the host", 1)[1].split("TASK [", 1)[0]
    assert "skipping: [host1]" in task and "ok: [host1]" not in task, task
    ssh("host1", f"rm -rf /var/lib/ferry/test-{names}")
    # httpd ignored the stop signal: the engine killed it once migrate_stop_timeout ran out, and the report says so
    assert report[streamed]["stop_timed_out"] is True, report[streamed]
    (moved,) = report[streamed]["volumes"]
    assert moved["choice"] == "stream" and len(moved["digest"]) == 64, moved
    assert moved["reason"].startswith("streamed once the source was stopped") and moved["final_delta_bytes"] > 2000000
    assert moved["digest_started_early"] is True, moved
    # the note was read and removed; the layer came along
    assert ssh("host2", "ls -a /var/lib/ferry/incoming/ | grep -c '[.]ready' || true").stdout.strip() == "0"
    assert ssh("host2", f"docker exec {streamed} wc -c /layer.bin").stdout.split()[0] == "40000000"
    assert tree("host2", mountpoint("host2", f"{streamed}-data")) == before  # owners, modes, links, contents
    assert (
        ssh("host2", f"docker exec {streamed} wget -q -O - http://127.0.0.1:8080/index.html").stdout.strip() == "token"
    )
    # no archive of the volume or of the image on either disk: the source's bundle and the bundle host2 received
    # and kept; the image went straight into host2's engine, which runs the copy from it under the migration's tag
    for host, where in (
        ("host1", f"/var/lib/ferry/migrate/*/{streamed}/{streamed}"),
        ("host2", f"/var/lib/ferry/incoming/*-{streamed}/{streamed}"),
    ):
        listing = ssh(host, f"ls {where}").stdout.split()
        assert "manifest.json" in listing, (host, listing)
        assert not [f for f in listing if f.startswith(("volume-", "image."))], (host, listing)
    assert report[streamed]["image_transfer"] == "stream", report[streamed]
    image = ssh("host2", f"docker inspect -f '{{{{.Image}}}}' {streamed}").stdout.strip()
    tags = ssh("host2", f"docker image inspect -f '{{{{json .RepoTags}}}}' {image}").stdout.strip()
    assert tags == f'["ferry-migrate/{streamed}:latest"]', tags

    before = tree("host1", mountpoint("host1", f"{kept}-data"))
    run, report = migrate(tmp_path, [kept], migrate_strategy="stop", migrate_keep_bundle=True)
    assert run.returncode == 0, run.stdout[-6000:]
    assert report[kept]["stop_timed_out"] is False, report[kept]  # it ended on SIGTERM
    (moved,) = report[kept]["volumes"]
    assert moved["choice"] == "copy", moved
    assert moved["reason"] == "stop-and-copy: migrate_keep_bundle is true (the bundle holds the data)", moved
    assert tree("host2", mountpoint("host2", f"{kept}-data")) == before
    listing = ssh("host1", f"ls /var/lib/ferry/migrate/*/{kept}/{kept}").stdout.split()
    assert [f for f in listing if f.startswith(f"volume-{kept}-data")], listing
    assert "image.tar.zst" in listing and report[kept]["image_transfer"] == "bundle", (listing, report[kept])
