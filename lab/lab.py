#!/usr/bin/env python
"""Build and run the ferry.docker lab: Docker hosts in containers, reached over real SSH.

Every lab host is a container of ``ferry-lab/host`` (Debian 12 made with debootstrap) with its own
dockerd, its own /var/lib/docker volume and an sshd that Ansible logs in to as root with the lab key.
No registry is used: both images are built locally and rebuilt only when their recipe changes.

    python lab/lab.py images            build ferry-lab/host, /busybox, /postgres and /redis if their recipe changed
    python lab/lab.py load IMAGE        build (if needed) and load a lab image (ferry-lab/postgres) into the hosts
    python lab/lab.py up [--hosts N] [--subnet CIDR] [--sudo-host]
                                        start (or repair) the lab and write lab/.state/inventory.ini;
                                        --sudo-host adds sudo1 (see SUDO_HOST), kept by later runs
    python lab/lab.py status            table of hosts: container state, IP, dockerd and sshd answering
    python lab/lab.py inventory         rewrite inventory, known_hosts and ssh_config from running hosts
    python lab/lab.py down [--images]   remove the lab containers, their volumes and network (and images)

Generated state (key, known_hosts, inventory, ssh_config) lives in lab/.state/, which git ignores.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import inspect
import io
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent
STATE_DIR = LAB_DIR / ".state"
HOST_FILES = LAB_DIR / "host"
KEY_FILE = STATE_DIR / "id_ed25519"
KNOWN_HOSTS = STATE_DIR / "known_hosts"
INVENTORY = STATE_DIR / "inventory.ini"
SSH_CONFIG = STATE_DIR / "ssh_config"
LOCK_FILE = STATE_DIR / "lock"
BUILD_ROOT = Path(os.environ.get("FERRY_LAB_BUILD_DIR", "/var/tmp/ferry-lab-build"))

HOST_IMAGE = "ferry-lab/host:latest"
WORKLOAD_IMAGE = "ferry-lab/busybox:latest"
POSTGRES_IMAGE = "ferry-lab/postgres:latest"
REDIS_IMAGE = "ferry-lab/redis:latest"
NETWORK = "ferry-lab"
LABEL = "ferry.lab=1"
HOST_LABEL = "ferry.lab.host"
RECIPE_LABEL = "ferry.lab.recipe"
DEFAULT_HOSTS = 2
# Tried in order; the first one that overlaps no Docker network and no route of this machine is used.
# LAB_SUBNET=<cidr> (or `lab.py up --subnet`) asks for one subnet instead. The subnet in use is in the
# state files below: tests, benchmarks and the demo read the hosts' addresses from there, never from here.
SUBNET_CANDIDATES = ("172.31.250.0/24", "172.30.250.0/24", "10.250.250.0/24", "192.168.250.0/24")
SUBNET_ENV = "LAB_SUBNET"
HOST_IP_OFFSET = 10  # host<N> gets the subnet's address .(10 + N)

SUITE = "bookworm"  # the default release of a host, and the release of the workload images
# LAB_SUITES="bookworm bookworm trixie" (or `lab.py up --suites ...`) gives host<N> the N-th release; hosts
# beyond the list get SUITE. Each release's host image is ferry-lab/host:<release> (SUITE's stays :latest).
SUITES_ENV = "LAB_SUITES"
KNOWN_SUITES = ("bookworm", "trixie")
# Debian 13 moved the docker command out of docker.io into docker-cli, which docker.io only recommends and
# debootstrap does not install: without it lab-init's readiness check cannot pass. Debian 12 has no such package.
SUITE_PACKAGES = {"trixie": ("docker-cli",)}
SUITE_LABEL = "ferry.lab.suite"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_PACKAGES = (
    "python3",
    "python3-docker",
    "python3-zstandard",
    "python3-cffi-backend",  # provides python3-cffi-backend-api-*, which debootstrap cannot resolve
    "docker.io",
    "tini",
    "openssh-server",
    "rsync",
    "zstd",
    "iproute2",
    "iptables",
    "ca-certificates",
    "procps",
    "curl",
)
HOST_CHANGES = (
    'ENTRYPOINT ["/usr/bin/tini", "--"]',
    'CMD ["/usr/local/sbin/lab-init"]',
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "EXPOSE 22",
    "VOLUME /var/lib/docker",
)
# Paths removed from the host rootfs before import: caches, docs and the build's SSH host keys.
HOST_PRUNE = (
    "var/cache/apt/archives",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/log/*.log",
    "var/log/apt",
    "etc/ssh/ssh_host_*",
)
# ferry-lab/postgres: Debian 12's PostgreSQL 15, run as the user postgres; the tests put its data
# directory on a named volume. Loaded into the lab hosts only by the tests that use it (`lab.py load`).
POSTGRES_FILES = LAB_DIR / "postgres"
POSTGRES_PACKAGES = ("postgresql",)
POSTGRES_DATA = "/var/lib/postgresql/15/main"
POSTGRES_CHANGES = (
    'ENTRYPOINT ["/usr/local/bin/ferry-postgres"]',
    "USER postgres",
    "WORKDIR /var/lib/postgresql",
    "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"ENV PGDATA={POSTGRES_DATA}",
    "ENV LANG=C.UTF-8",
    "EXPOSE 5432",
)
# Removed before import (children only, so that each directory keeps its owner and mode): caches, docs,
# translations, the cluster Debian's postinst made (the entry point makes one in the volume), and LLVM,
# which only the just-in-time compiler loads (off in this image): about 640 MB down to about 250 MB.
POSTGRES_PRUNE = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*_*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/i18n/*",
    "var/log/*.log",
    "var/log/apt/*",
    "var/lib/postgresql/15/main/*",
    "etc/postgresql/15/main",
    "usr/lib/*-linux-gnu/libLLVM-*",
    "usr/lib/*-linux-gnu/libz3.so*",
    "usr/lib/postgresql/15/lib/llvmjit*",
    "usr/lib/postgresql/15/lib/bitcode",
)
# ferry-lab/redis: Debian 12's redis-server, run as the user redis in the foreground with its
# defaults (no config file: Debian's daemonizes and logs to a file), its data in /var/lib/redis
# (0750, redis), meant for a named volume. Loaded only by the tests that use it (`lab.py load`).
REDIS_PACKAGES = ("redis-server",)
REDIS_DATA = "/var/lib/redis"
REDIS_CHANGES = (
    f'ENTRYPOINT ["redis-server", "--dir", "{REDIS_DATA}", "--bind", "0.0.0.0", "--protected-mode", "no"]',
    "USER redis",
    f"WORKDIR {REDIS_DATA}",
    "ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "EXPOSE 6379",
)
REDIS_PRUNE = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*_*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/i18n/*",
    "var/log/*.log",
    "var/log/apt/*",
    "var/lib/redis/*",
)
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\nnogroup:x:65534:\n"
RECIPE_VERSION = "1"  # bump to force a rebuild of both images

# The sudo host (`lab.py up --sudo-host`): one more lab host, sudo1, that refuses root logins
# (PermitRootLogin no) and is reached as the user `ferry`, who may run anything with sudo, without a
# password (become). Not in inventory.ini, so that plays on `all` or `lab` never reach it: its own
# inventory is lab/.state/inventory-sudo.ini. Its address is the lab subnet's last usable one. sudo
# is installed from Debian's package, downloaded on this machine (the host image is left as it is).
SUDO_HOST = "sudo1"
SUDO_CONTAINER = "ferry-lab-sudo1"
SUDO_VOLUME = "ferry-lab-sudo1-docker"
SUDO_LABEL = "ferry.lab.sudo-host"
SUDO_USER = "ferry"
SUDO_GROUP = "lab_sudo"
SUDO_INVENTORY = STATE_DIR / "inventory-sudo.ini"
SUDO_SSHD_CONF = "/etc/ssh/sshd_config.d/00-lab-sudo-host.conf"

WAIT_SECONDS = 120
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=5")
# Written into ssh_config and the inventory, so that every ssh to a lab host gives up on a host that
# does not answer instead of hanging: 10 s to connect, and a connection dead for 30 s is dropped.
SSH_CONNECT_TIMEOUT = 10
SSH_ALIVE_INTERVAL = 5
SSH_ALIVE_COUNT = 6


class LabError(Exception):
    """A failure the user can act on; main() prints it without a traceback."""


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(args, *, check=True, input=None, timeout=None) -> subprocess.CompletedProcess:
    """Run a command and capture its output as text; raise LabError with its stderr if it fails."""
    try:
        result = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{args[0]} is not installed; run `bash lab/ensure-docker.sh` as root first") from exc
    except subprocess.TimeoutExpired as exc:
        if check:
            raise LabError(f"`{' '.join(map(str, args))}` did not finish within {timeout} s") from exc
        return subprocess.CompletedProcess(args, 124, "", "timed out")
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(map(str, args))}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def docker(*args, **kwargs) -> subprocess.CompletedProcess:
    return run(["docker", *args], **kwargs)


def pipe(producer: list[str], consumer: list[str]) -> None:
    """Run `producer | consumer` without holding the stream in memory."""
    with subprocess.Popen(producer, stdout=subprocess.PIPE) as first:
        second = subprocess.run(consumer, stdin=first.stdout, capture_output=True, text=True, check=False)
        first.stdout.close()
    if first.returncode != 0 or second.returncode != 0:
        raise LabError(f"`{' '.join(producer)} | {' '.join(consumer)}` failed: {second.stderr.strip()}")


@contextlib.contextmanager
def lab_lock():
    """Serialise lab.py runs that change the lab (pytest and molecule may both call `up`)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def require_docker() -> None:
    result = run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30)
    if result.returncode != 0:
        raise LabError(
            "no Docker engine answers (`docker info` failed: "
            f"{result.stderr.strip()}); run `bash lab/ensure-docker.sh` as root, then retry"
        )


# --------------------------------------------------------------------------------------------- images


def recipe_hash(*parts: str | bytes) -> str:
    """A short hash of everything that goes into an image, its builder function's source included."""
    digest = hashlib.sha256(RECIPE_VERSION.encode())
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def host_image(suite: str = SUITE) -> str:
    return HOST_IMAGE if suite == SUITE else f"ferry-lab/host:{suite}"


def host_packages(suite: str) -> tuple[str, ...]:
    return (*HOST_PACKAGES, *SUITE_PACKAGES.get(suite, ()))


def host_recipe(suite: str = SUITE) -> str:
    files = sorted(p for p in HOST_FILES.iterdir() if p.is_file())
    host_files = (f.name.encode() + f.read_bytes() for f in files)
    return recipe_hash(
        suite, *host_packages(suite), *HOST_CHANGES, *HOST_PRUNE, *host_files, inspect.getsource(build_host)
    )


def requested_suites(value: str | None) -> list[str]:
    """The release of each host, from LAB_SUITES or --suites ("bookworm bookworm trixie"); refuses unknown ones."""
    suites = (value or "").replace(",", " ").split()
    unknown = sorted(set(suites) - set(KNOWN_SUITES))
    if unknown:
        raise LabError(
            f"{SUITES_ENV}: unknown Debian release(s) {', '.join(unknown)}; known: {', '.join(KNOWN_SUITES)}"
        )
    return suites


def suite_of(number: int, suites: list[str]) -> str:
    return suites[number - 1] if number <= len(suites) else SUITE


def wanted_suites(count: int, suites: list[str], existing: dict[int, str]) -> dict[int, str]:
    """The release of host1..host<count>: as asked; with no list asked for, an existing host keeps its own (so a
    plain `up`, which pytest and every molecule scenario run, never recreates the trixie host of another's)."""
    return {
        number: existing[number] if not suites and number in existing else suite_of(number, suites)
        for number in range(1, count + 1)
    }


def busybox_binary() -> Path:
    path = shutil.which("busybox") or "/bin/busybox"
    if not Path(path).is_file():
        raise LabError("no busybox binary found; install Debian's busybox-static (`bash lab/ensure-docker.sh`)")
    if shutil.which("file") and "statically linked" not in run(["file", "-L", path], check=False).stdout:
        raise LabError(f"{path} is not statically linked; install busybox-static instead of busybox")
    return Path(path)


def busybox_recipe() -> str:
    return recipe_hash(busybox_binary().read_bytes(), PASSWD, GROUP, inspect.getsource(build_busybox))


def image_recipe(image: str) -> str | None:
    """The recipe label of a local image, or None when the image does not exist."""
    result = docker("image", "inspect", "--format", "{{json .Config.Labels}}", image, check=False)
    if result.returncode != 0:
        return None
    return (json.loads(result.stdout) or {}).get(RECIPE_LABEL, "")


def docker_import(source: list[str] | bytes, image: str, recipe: str, changes: tuple[str, ...]) -> None:
    """Import a rootfs tar (a command writing it to stdout, or the bytes) as `image`, labelled with its recipe."""
    args = ["docker", "import"]
    for change in (*changes, f"LABEL {RECIPE_LABEL}={recipe} ferry.lab.image=1"):
        args += ["--change", change]
    args += ["-", image]
    if isinstance(source, list):
        pipe(source, args)
        return
    result = subprocess.run(args, input=source, capture_output=True, check=False)
    if result.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed: {result.stderr.decode(errors='replace').strip()}")


def build_busybox(recipe: str) -> None:
    """A rootfs with a static busybox and its applet links, built as a tar in memory (about 2 MB)."""
    binary = busybox_binary()
    applets = run([str(binary), "--list-full"]).stdout.split()
    buffer = io.BytesIO()
    now = int(time.time())

    def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.linkname, info.size = kind, mode, now, link, len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "www", "var", "var/tmp"):
            add(directory, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, binary.read_bytes())
        for applet in applets:
            if applet not in ("bin/busybox", "linuxrc"):
                add(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP.encode())
        add("www/index.html", tarfile.REGTYPE, 0o644, b"ferry-lab busybox\n")
    docker_import(buffer.getvalue(), WORKLOAD_IMAGE, recipe, ('CMD ["sh"]', "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin"))


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (FERRY_LAB_MIRROR overrides it)."""
    if os.environ.get("FERRY_LAB_MIRROR"):
        return os.environ["FERRY_LAB_MIRROR"]
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            if "deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if words[:1] == ["deb"] and words[2:3] == [SUITE]:
                return words[1]
    return DEFAULT_MIRROR


def apt_proxy_env() -> dict[str, str]:
    """debootstrap downloads with wget, which ignores apt's proxy setting; pass it on when there is one."""
    env = dict(os.environ)
    if "http_proxy" not in env and shutil.which("apt-config"):
        proxy = run(["apt-config", "shell", "P", "Acquire::http::Proxy"], check=False).stdout
        match = re.match(r"P='(.+)'", proxy.strip())
        if match:
            env["http_proxy"] = match.group(1)
    return env


def build_host(recipe: str, suite: str = SUITE) -> None:
    """Debian minbase of ``suite`` plus the host packages, made with debootstrap and imported as its host image."""
    if os.geteuid() != 0:
        raise LabError("building ferry-lab/host needs root (debootstrap); run as root")
    if not shutil.which("debootstrap"):
        raise LabError("debootstrap is not installed; run `bash lab/ensure-docker.sh` as root")
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix="host-rootfs-", dir=BUILD_ROOT))
    mirror = debian_mirror()
    try:
        log(f"debootstrap {suite} from {mirror} into {rootfs} (about a minute)")
        packages = ",".join(host_packages(suite))
        args = ["debootstrap", "--variant=minbase", f"--include={packages}", suite, str(rootfs), mirror]
        result = subprocess.run(args, env=apt_proxy_env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            debootstrap_log = rootfs / "debootstrap" / "debootstrap.log"
            tail = debootstrap_log.read_text()[-2000:] if debootstrap_log.exists() else result.stderr[-2000:]
            raise LabError(f"debootstrap failed (mirror {mirror}):\n{tail}")
        for pattern in HOST_PRUNE:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    path.mkdir()
                else:
                    path.unlink()
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        shutil.copy2(HOST_FILES / "lab-init", rootfs / "usr/local/sbin/lab-init")
        shutil.copy2(HOST_FILES / "sshd-lab.conf", rootfs / "etc/ssh/sshd_config.d/lab.conf")
        log(f"importing {host_image(suite)}")
        changes = (*HOST_CHANGES, f"LABEL {SUITE_LABEL}={suite}")
        docker_import(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], host_image(suite), recipe, changes)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def postgres_recipe() -> str:
    entrypoint = (POSTGRES_FILES / "ferry-postgres").read_bytes()
    return recipe_hash(
        SUITE,
        *POSTGRES_PACKAGES,
        *POSTGRES_CHANGES,
        *POSTGRES_PRUNE,
        entrypoint,
        inspect.getsource(debootstrap_rootfs),
        inspect.getsource(build_postgres),
    )


@contextlib.contextmanager
def debootstrap_rootfs(prefix: str, packages: tuple[str, ...]):
    """A Debian minbase root filesystem with `packages`, in a temporary directory removed afterwards."""
    if os.geteuid() != 0:
        raise LabError("building the lab images needs root (debootstrap); run as root")
    if not shutil.which("debootstrap"):
        raise LabError("debootstrap is not installed; run `bash lab/ensure-docker.sh` as root")
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    rootfs = Path(tempfile.mkdtemp(prefix=prefix, dir=BUILD_ROOT))
    # mkdtemp makes the directory 0700, and the tar's "./" entry carries that mode into the image's root.
    # The container's / would then stay 0700 (seen under the vfs storage driver, which lab-init falls back to), and a
    # process without CAP_DAC_OVERRIDE cannot even exec its entrypoint. A Debian root is 0755.
    rootfs.chmod(0o755)
    mirror = debian_mirror()
    try:
        log(f"debootstrap {SUITE} with {', '.join(packages)} from {mirror} into {rootfs} (about a minute)")
        args = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE, str(rootfs), mirror]
        result = subprocess.run(args, env=apt_proxy_env(), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            debootstrap_log = rootfs / "debootstrap" / "debootstrap.log"
            tail = debootstrap_log.read_text()[-2000:] if debootstrap_log.exists() else result.stderr[-2000:]
            raise LabError(f"debootstrap failed (mirror {mirror}):\n{tail}")
        yield rootfs
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def build_postgres(recipe: str) -> None:
    """Debian 12 minbase plus Debian's postgresql (PostgreSQL 15), imported as ferry-lab/postgres."""
    with debootstrap_rootfs("postgres-rootfs-", POSTGRES_PACKAGES) as rootfs:
        for pattern in POSTGRES_PRUNE:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        # Whether Debian's postinst made a cluster depends on the build machine; the image has none, only
        # the empty data directory (0700, postgres), so that a new named volume mounted there gets its
        # owner and mode, as PostgreSQL requires.
        account = next(
            (
                line.split(":")
                for line in (rootfs / "etc/passwd").read_text().splitlines()
                if line.startswith("postgres:")
            ),
            None,
        )
        if account is None:
            raise LabError("the postgresql package made no user postgres; the recipe needs a look")
        uid, gid = int(account[2]), int(account[3])
        data = rootfs / POSTGRES_DATA.lstrip("/")
        data.mkdir(parents=True, exist_ok=True)
        for path, mode in ((data.parent, 0o755), (data, 0o700)):
            os.chown(path, uid, gid)
            path.chmod(mode)
        shutil.copy2(POSTGRES_FILES / "ferry-postgres", rootfs / "usr/local/bin/ferry-postgres")
        log(f"importing {POSTGRES_IMAGE}")
        docker_import(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], POSTGRES_IMAGE, recipe, POSTGRES_CHANGES
        )


def redis_recipe() -> str:
    return recipe_hash(
        SUITE,
        *REDIS_PACKAGES,
        *REDIS_CHANGES,
        *REDIS_PRUNE,
        inspect.getsource(debootstrap_rootfs),
        inspect.getsource(build_redis),
    )


def build_redis(recipe: str) -> None:
    """Debian 12 minbase plus Debian's redis-server, imported as ferry-lab/redis."""
    with debootstrap_rootfs("redis-rootfs-", REDIS_PACKAGES) as rootfs:
        for pattern in REDIS_PRUNE:
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        account = next(
            (line.split(":") for line in (rootfs / "etc/passwd").read_text().splitlines() if line.startswith("redis:")),
            None,
        )
        if account is None:
            raise LabError("the redis-server package made no user redis; the recipe needs a look")
        # The empty data directory (0750, redis), so that a new named volume mounted there gets its owner and mode.
        data = rootfs / REDIS_DATA.lstrip("/")
        data.mkdir(parents=True, exist_ok=True)
        os.chown(data, int(account[2]), int(account[3]))
        data.chmod(0o750)
        log(f"importing {REDIS_IMAGE}")
        docker_import(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], REDIS_IMAGE, recipe, REDIS_CHANGES)


# Built by `lab.py images`; `lab.py up` builds only the first two, `lab.py load` builds the one it loads.
IMAGES = {
    WORKLOAD_IMAGE: (busybox_recipe, build_busybox),
    HOST_IMAGE: (host_recipe, build_host),
    POSTGRES_IMAGE: (postgres_recipe, build_postgres),
    REDIS_IMAGE: (redis_recipe, build_redis),
}
# The host images of the other releases: built only when a host asks for one (LAB_SUITES).
SUITE_HOST_IMAGES = {
    host_image(suite): (functools.partial(host_recipe, suite), functools.partial(build_host, suite=suite))
    for suite in KNOWN_SUITES
    if suite != SUITE
}


def ensure_images(force: bool = False, images: tuple[str, ...] = (WORKLOAD_IMAGE, HOST_IMAGE)) -> None:
    """Build each lab image whose recipe label differs from the current recipe."""
    require_docker()
    for image in images:
        recipe_of, build = IMAGES.get(image) or SUITE_HOST_IMAGES[image]
        recipe = recipe_of()
        current = image_recipe(image)
        if current == recipe and not force:
            log(f"{image} is up to date (recipe {recipe})")
            continue
        reason = "missing" if current is None else f"recipe changed ({current or 'none'} -> {recipe})"
        log(f"building {image}: {reason}")
        started = time.monotonic()
        build(recipe)
        log(f"built {image} in {time.monotonic() - started:.0f} s")
    # Old builds of the lab images lose their tag; drop them so they do not pile up.
    for image_id in docker(
        "images", "-q", "--filter", "dangling=true", "--filter", "label=ferry.lab.image=1"
    ).stdout.split():
        docker("rmi", image_id, check=False)


# ---------------------------------------------------------------------------------------------- hosts


@dataclass
class Host:
    name: str  # host1, host2, ...
    container: str  # ferry-lab-host1
    state: str  # running, exited, created, ...
    ip: str
    image_id: str
    suite: str = SUITE  # the Debian release the host runs

    @property
    def number(self) -> int:
        return int(self.name.removeprefix("host"))


def container_name(number: int) -> str:
    return f"ferry-lab-host{number}"


def volume_name(number: int) -> str:
    return f"ferry-lab-host{number}-docker"


def lab_hosts() -> list[Host]:
    """The lab host containers that exist, in host order."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
    if not ids:
        return []
    hosts = []
    for info in json.loads(docker("inspect", *ids).stdout):
        name = info["Config"]["Labels"].get(HOST_LABEL)
        if not name:
            continue
        network = info["NetworkSettings"]["Networks"].get(NETWORK) or {}
        ip = network.get("IPAddress") or (network.get("IPAMConfig") or {}).get("IPv4Address", "")
        suite = info["Config"]["Labels"].get(SUITE_LABEL) or SUITE
        hosts.append(Host(name, info["Name"].lstrip("/"), info["State"]["Status"], ip, info["Image"], suite))
    return sorted(hosts, key=lambda host: host.number)


def used_subnets() -> list[ipaddress.IPv4Network]:
    subnets = []
    for network_id in docker("network", "ls", "-q").stdout.split():
        for config in json.loads(docker("network", "inspect", network_id).stdout)[0]["IPAM"]["Config"] or []:
            if "Subnet" in config and ":" not in config["Subnet"]:
                subnets.append(ipaddress.ip_network(config["Subnet"], strict=False))
    routes = run(["ip", "-4", "route", "show"], check=False).stdout
    for destination in re.findall(r"^(\d+\.\d+\.\d+\.\d+/\d+)", routes, re.MULTILINE):
        subnets.append(ipaddress.ip_network(destination, strict=False))
    return subnets


def requested_subnet(value: str | None) -> ipaddress.IPv4Network | None:
    """The subnet asked for with --subnet or LAB_SUBNET, checked; None to pick a free candidate."""
    value = value or os.environ.get(SUBNET_ENV, "").strip()
    if not value:
        return None
    try:
        subnet = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise LabError(
            f"{SUBNET_ENV}={value!r} is not an IPv4 network in CIDR form (for example 10.99.0.0/24): {exc}"
        ) from exc
    if subnet.version != 4 or subnet.num_addresses < 2 * HOST_IP_OFFSET + 16:
        raise LabError(
            f"{SUBNET_ENV}={value} must be an IPv4 network of at least a /27 (the hosts take .{HOST_IP_OFFSET + 1} on)"
        )
    return subnet


def pick_subnet(requested, used) -> ipaddress.IPv4Network:
    """The requested subnet if nothing uses it, else the first free candidate; LabError if none is."""
    candidates = [requested] if requested is not None else list(map(ipaddress.ip_network, SUBNET_CANDIDATES))
    for candidate in candidates:
        clash = next((subnet for subnet in used if candidate.overlaps(subnet)), None)
        if clash is None:
            return candidate
        if requested is not None:
            raise LabError(
                f"{SUBNET_ENV}={requested} overlaps {clash}, which a Docker network or a route of this machine "
                f"already uses; choose another subnet"
            )
    raise LabError(
        f"every candidate subnet for {NETWORK} overlaps an existing network: {', '.join(SUBNET_CANDIDATES)}; "
        f"set {SUBNET_ENV} to a free IPv4 /24"
    )


def ensure_network(requested: ipaddress.IPv4Network | None = None) -> ipaddress.IPv4Network:
    """The ferry-lab bridge network (created on first use with a subnet nothing else uses)."""
    result = docker("network", "inspect", NETWORK, check=False)
    if result.returncode == 0:
        existing = ipaddress.ip_network(json.loads(result.stdout)[0]["IPAM"]["Config"][0]["Subnet"])
        if requested is not None and existing != requested:
            raise LabError(
                f"the lab network {NETWORK} already uses {existing}, not {requested}; "
                "`make lab-down` first to move the lab to another subnet"
            )
        return existing
    candidate = pick_subnet(requested, used_subnets())
    log(f"creating network {NETWORK} ({candidate})")
    docker("network", "create", "--driver", "bridge", "--subnet", str(candidate), "--label", LABEL, NETWORK)
    return candidate


@functools.cache
def privilege_flags() -> tuple[str, ...]:
    """--privileged where the engine allows it; otherwise the narrower set that still runs dockerd.

    Some sandboxes refuse --privileged ("unable to apply caps") because the engine's own capability
    bounding set lacks a capability. Probe once with the workload image instead of guessing.
    """
    probe = docker("run", "--rm", "--privileged", "--network", "none", WORKLOAD_IMAGE, "true", check=False)
    if probe.returncode == 0:
        return ("--privileged",)
    reason = next((line for line in probe.stderr.splitlines() if "rror" in line), probe.stderr.strip())
    log(f"this engine refuses --privileged ({reason.strip()}); using an explicit capability set")
    return (
        "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    )  # fmt: skip


def create_host(number: int, subnet: ipaddress.IPv4Network, suite: str = SUITE) -> None:
    name, volume = container_name(number), volume_name(number)
    ip = subnet.network_address + HOST_IP_OFFSET + number
    log(f"creating {name} ({ip}, Debian {suite})")
    docker("volume", "create", "--label", LABEL, "--label", f"{HOST_LABEL}=host{number}", volume)
    docker(
        "run", "--detach", "--name", name, "--hostname", f"host{number}",
        "--label", LABEL, "--label", f"{HOST_LABEL}=host{number}", "--label", f"{SUITE_LABEL}={suite}",
        "--network", NETWORK, "--ip", str(ip),
        "--volume", f"{volume}:/var/lib/docker", "--stop-timeout", "30",
        *privilege_flags(), host_image(suite),
    )  # fmt: skip


def remove_host(host: Host) -> None:
    log(f"removing {host.container} and its volume")
    docker("rm", "--force", "--volumes", host.container)
    docker("volume", "rm", "--force", volume_name(host.number), check=False)


def host_log_tail(host: Host) -> str:
    outer = docker("logs", "--tail", "20", host.container, check=False)
    inner = docker("exec", host.container, "tail", "-n", "20", "/var/log/dockerd.log", check=False)
    return (
        f"--- docker logs {host.container} ---\n{outer.stdout}{outer.stderr}"
        f"--- /var/log/dockerd.log in {host.container} ---\n{inner.stdout or inner.stderr}"
    )


# lab-init's line once its dockerd is the one that stays: until then it may still kill a dockerd that was slow
# to start (and that answered a moment before) and try again, overlay2 twice, then vfs, up to 60 s each.
DOCKERD_SETTLED = "lab-init: dockerd is up"
DOCKERD_WAIT_SECONDS = 200


def dockerd_settled(log_text: str) -> bool:
    return any(line.startswith(DOCKERD_SETTLED) for line in log_text.splitlines())


def dockerd_answers(host: Host) -> bool:
    """The host's dockerd answers, and lab-init has kept it (said so since the container last started)."""
    started = docker("inspect", "--format", "{{.State.StartedAt}}", host.container, check=False, timeout=20)
    since = started.stdout.strip()
    if started.returncode != 0 or not since:
        return False
    logs = docker("logs", "--since", since, host.container, check=False, timeout=20)
    if not dockerd_settled(logs.stdout):
        return False
    check = docker("exec", host.container, "docker", "info", "--format", "{{.ID}}", check=False, timeout=20)
    return check.returncode == 0


def sshd_answers(host: Host) -> bool:
    if not SSH_CONFIG.exists():
        return False
    check = run(["ssh", "-F", str(SSH_CONFIG), *SSH_OPTIONS, host.name, "true"], check=False, timeout=20)
    return check.returncode == 0


def wait_for(host: Host, what: str, answers, seconds: int = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not answers(host):
        state = docker("inspect", "--format", "{{.State.Status}}", host.container, check=False).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            reason = f"stopped (state {state})" if state != "running" else f"did not answer within {seconds} s"
            raise LabError(f"{what} on {host.name} {reason}.\n{host_log_tail(host)}")
        time.sleep(1)


def authorize_key(host: Host) -> None:
    """Add this checkout's key; keys of other checkouts that share the lab stay authorised."""
    public_key = KEY_FILE.with_suffix(".pub").read_text().strip()
    script = (
        "umask 077 && mkdir -p /root/.ssh && touch /root/.ssh/authorized_keys && "
        'read -r key && (grep -qxF "$key" /root/.ssh/authorized_keys || echo "$key" >> /root/.ssh/authorized_keys)'
    )
    docker("exec", "-i", host.container, "sh", "-c", script, input=public_key + "\n")


def load_workload_image(host: Host) -> None:
    """Copy ferry-lab/busybox into the host's own engine unless it already has the same image."""
    load_image(host, WORKLOAD_IMAGE)


def load_image(host: Host, image: str) -> bool:
    """Copy a lab image into the host's own engine unless it already has the same image; True if loaded."""
    wanted = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    inner = docker("exec", host.container, "docker", "image", "inspect", "--format", "{{.Id}}", image, check=False)
    if inner.stdout.strip() == wanted:
        return False
    log(f"loading {image} into {host.name}")
    pipe(["docker", "save", image], ["docker", "exec", "-i", host.container, "docker", "load", "-q"])
    return True


def named(hosts: list[Host], only: list[str] | None, others: tuple[str, ...] = ()) -> list[Host]:
    """The hosts of ``hosts`` named in ``only`` (all of them when it is None).

    A run that names its hosts touches no other host's engine: another test may be using one
    (molecule's migrate scenario takes host3's Docker socket away for one test, beside the benchmark).
    ``others`` are names that are valid but not in ``hosts`` (the sudo host)."""
    if only is None:
        return hosts
    known = {host.name for host in hosts} | set(others)
    unknown = sorted(set(only) - known)
    if unknown:
        raise LabError(f"no lab host named {', '.join(unknown)}; the lab has {', '.join(sorted(known))}")
    return [host for host in hosts if host.name in only]


def load(image: str, only: list[str] | None = None) -> None:
    """Build `image` if its recipe changed, then load it into every running lab host (or those in ``only``)
    that lacks it."""
    reference = image if ":" in image else f"{image}:latest"
    if reference not in IMAGES:
        raise LabError(f"{image} is not a lab image; choose one of {', '.join(IMAGES)}")
    ensure_images(images=(reference,))
    running = [host for host in lab_hosts() if host.state == "running"]
    if not running:
        raise LabError("no lab host is running; run `python lab/lab.py up` first")
    for host in named(running, only):
        if not load_image(host, reference):
            log(f"{host.name} already has {reference}")


def ensure_key() -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    if not KEY_FILE.exists():
        log(f"generating {KEY_FILE}")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ferry-lab", "-f", str(KEY_FILE)])


def scan_host_keys(host: Host) -> list[str]:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        scan = run(["ssh-keyscan", "-T", "5", "-t", "ed25519,ecdsa,rsa", host.ip], check=False, timeout=30)
        lines = [line for line in scan.stdout.splitlines() if line and not line.startswith("#")]
        if lines:
            return lines
        if time.monotonic() > deadline:
            raise LabError(
                f"sshd on {host.name} ({host.ip}) gave no host keys within {WAIT_SECONDS} s.\n{host_log_tail(host)}"
            )
        time.sleep(1)


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(mode)
    temporary.replace(path)


def write_client_files(hosts: list[Host], known_hosts: list[str]) -> None:
    """inventory.ini for Ansible, ssh_config for `ssh -F`, and the known_hosts both of them check against."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    write_atomically(KNOWN_HOSTS, "".join(f"{line}\n" for line in known_hosts))
    common_args = (
        f"-o UserKnownHostsFile={KNOWN_HOSTS} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
        f"-o ConnectTimeout={SSH_CONNECT_TIMEOUT} -o ServerAliveInterval={SSH_ALIVE_INTERVAL} "
        f"-o ServerAliveCountMax={SSH_ALIVE_COUNT}"
    )
    inventory = ["# Written by lab/lab.py; rewritten on every `lab.py up`.", "[lab]"]
    inventory += [f"{host.name} ansible_host={host.ip}" for host in hosts]
    for suite in sorted({host.suite for host in hosts}):  # the hosts grouped by Debian release
        inventory += ["", f"[debian_{suite}]", *(host.name for host in hosts if host.suite == suite)]
    inventory += [
        "",
        "[lab:vars]",
        "ansible_user=root",
        "ansible_port=22",
        f"ansible_ssh_private_key_file={KEY_FILE}",
        "ansible_python_interpreter=/usr/bin/python3",
        f"ansible_ssh_common_args='{common_args}'",
    ]
    write_atomically(INVENTORY, "\n".join(inventory) + "\n")
    config = ["# Written by lab/lab.py. Usage: ssh -F lab/.state/ssh_config host1"]
    for host in hosts:
        config += [
            f"Host {host.name}",
            f"  HostName {host.ip}",
            "  User root",
            "  Port 22",
            f"  IdentityFile {KEY_FILE}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {KNOWN_HOSTS}",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            f"  ConnectTimeout {SSH_CONNECT_TIMEOUT}",
            f"  ServerAliveInterval {SSH_ALIVE_INTERVAL}",
            f"  ServerAliveCountMax {SSH_ALIVE_COUNT}",
            "",
        ]
    write_atomically(SSH_CONFIG, "\n".join(config))


def refresh_client_files(hosts: list[Host]) -> None:
    known_hosts = [line for host in hosts if host.state == "running" for line in scan_host_keys(host)]
    sudo = sudo_host()
    if sudo is not None and sudo.state == "running":
        known_hosts += scan_host_keys(sudo)
    write_client_files(hosts, known_hosts)
    write_sudo_client_files(sudo if sudo is not None and sudo.state == "running" else None)


# ---------------------------------------------------------------------------------------- sudo host


def sudo_host() -> Host | None:
    """The sudo host's container, if it exists."""
    ids = docker("ps", "-aq", "--filter", f"label={SUDO_LABEL}").stdout.split()
    if not ids:
        return None
    info = json.loads(docker("inspect", ids[0]).stdout)[0]
    network = info["NetworkSettings"]["Networks"].get(NETWORK) or {}
    ip = network.get("IPAddress") or (network.get("IPAMConfig") or {}).get("IPv4Address", "")
    return Host(SUDO_HOST, info["Name"].lstrip("/"), info["State"]["Status"], ip, info["Image"])


def sudo_package() -> Path:
    """Debian's sudo package for the hosts' suite, downloaded once into the build directory."""
    debs = BUILD_ROOT / "debs"
    found = sorted(debs.glob("sudo_*.deb"))
    if found:
        return found[-1]
    release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    if f"VERSION_CODENAME={SUITE}" not in release or not shutil.which("apt-get"):
        raise LabError(
            f"the sudo host gets Debian {SUITE}'s sudo package from this machine's apt, so it needs Debian {SUITE}"
        )
    debs.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", "sudo"]
    result = subprocess.run(download, cwd=debs, env=apt_proxy_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0 and os.geteuid() == 0:
        # No package lists yet (a fresh machine): fetch them once and try again.
        run(["apt-get", "update", "-qq"], check=False, timeout=600)
        result = subprocess.run(download, cwd=debs, env=apt_proxy_env(), capture_output=True, text=True, check=False)
    found = sorted(debs.glob("sudo_*.deb"))
    if result.returncode != 0 or not found:
        raise LabError(f"`apt-get download sudo` failed (run `apt-get update` as root first?): {result.stderr.strip()}")
    return found[-1]


def create_sudo_host(subnet: ipaddress.IPv4Network) -> None:
    ip = subnet.broadcast_address - 1
    log(f"creating {SUDO_CONTAINER} ({ip})")
    labels = ("--label", LABEL, "--label", f"{SUDO_LABEL}={SUDO_HOST}")
    docker("volume", "create", *labels, SUDO_VOLUME)
    docker(
        "run", "--detach", "--name", SUDO_CONTAINER, "--hostname", SUDO_HOST, *labels,
        "--network", NETWORK, "--ip", str(ip),
        "--volume", f"{SUDO_VOLUME}:/var/lib/docker", "--stop-timeout", "30",
        *privilege_flags(), HOST_IMAGE,
    )  # fmt: skip


def configure_sudo_host(host: Host) -> None:
    """sudo, the user with the lab key and passwordless sudo, and no root login; each step only if missing."""
    has_sudo = docker("exec", host.container, "sh", "-c", "command -v sudo", check=False).returncode == 0
    if not has_sudo:
        log(f"installing sudo on {host.name}")
        docker("cp", str(sudo_package()), f"{host.container}:/tmp/sudo.deb")
        docker("exec", host.container, "sh", "-c", "dpkg -i /tmp/sudo.deb >/dev/null && rm -f /tmp/sudo.deb")
    script = (
        'user="$1"; conf="$2"; read -r key; '
        'id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"; '
        'mkdir -p /etc/sudoers.d; printf "%s ALL=(ALL:ALL) NOPASSWD: ALL\\n" "$user" > /etc/sudoers.d/ferry-lab; '
        "chmod 0440 /etc/sudoers.d/ferry-lab; "
        'home=$(getent passwd "$user" | cut -d: -f6); umask 077; mkdir -p "$home/.ssh"; '
        'touch "$home/.ssh/authorized_keys"; '
        'grep -qxF "$key" "$home/.ssh/authorized_keys" || echo "$key" >> "$home/.ssh/authorized_keys"; '
        'chown -R "$user:$user" "$home/.ssh"; '
        'if [ ! -f "$conf" ]; then printf "PermitRootLogin no\\n" > "$conf"; '
        'kill -HUP "$(pgrep -o -x sshd)"; fi'
    )
    public_key = KEY_FILE.with_suffix(".pub").read_text().strip()
    docker("exec", "-i", host.container, "sh", "-c", script, "sh", SUDO_USER, SUDO_SSHD_CONF, input=public_key + "\n")


def ensure_sudo_host(subnet: ipaddress.IPv4Network, create: bool) -> Host | None:
    """Start (or repair) the sudo host if it exists, or create it if asked to; None when there is none."""
    host = sudo_host()
    if host is None and not create:
        return None
    if host is None:
        create_sudo_host(subnet)
    elif host.state != "running":
        log(f"starting {host.container} (was {host.state})")
        docker("start", host.container)
    host = sudo_host()
    wait_for(host, "dockerd", dockerd_answers, DOCKERD_WAIT_SECONDS)
    configure_sudo_host(host)
    load_workload_image(host)
    return host


def write_sudo_client_files(host: Host | None) -> None:
    """inventory-sudo.ini and the sudo host's entry at the end of ssh_config (or no inventory when there is none)."""
    if host is None:
        SUDO_INVENTORY.unlink(missing_ok=True)
        return
    common_args = (
        f"-o UserKnownHostsFile={KNOWN_HOSTS} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
        f"-o ConnectTimeout={SSH_CONNECT_TIMEOUT} -o ServerAliveInterval={SSH_ALIVE_INTERVAL} "
        f"-o ServerAliveCountMax={SSH_ALIVE_COUNT}"
    )
    inventory = [
        "# Written by lab/lab.py: the sudo host (`lab.py up --sudo-host`); root logins are refused there.",
        f"[{SUDO_GROUP}]",
        f"{host.name} ansible_host={host.ip}",
        "",
        f"[{SUDO_GROUP}:vars]",
        f"ansible_user={SUDO_USER}",
        "ansible_become=true",
        "ansible_port=22",
        f"ansible_ssh_private_key_file={KEY_FILE}",
        "ansible_python_interpreter=/usr/bin/python3",
        f"ansible_ssh_common_args='{common_args}'",
    ]
    write_atomically(SUDO_INVENTORY, "\n".join(inventory) + "\n")
    entry = [
        f"Host {host.name}",
        f"  HostName {host.ip}",
        f"  User {SUDO_USER}",
        "  Port 22",
        f"  IdentityFile {KEY_FILE}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {KNOWN_HOSTS}",
        "  StrictHostKeyChecking yes",
        "  BatchMode yes",
        f"  ConnectTimeout {SSH_CONNECT_TIMEOUT}",
        f"  ServerAliveInterval {SSH_ALIVE_INTERVAL}",
        f"  ServerAliveCountMax {SSH_ALIVE_COUNT}",
        "",
    ]
    write_atomically(SSH_CONFIG, SSH_CONFIG.read_text() + "\n".join(entry))


def up(
    requested: int | None,
    subnet_arg: str | None = None,
    with_sudo_host: bool = False,
    suites_arg: str | None = None,
    only: list[str] | None = None,
) -> None:
    """Create, start or repair the lab hosts, then write the client files for all of them.

    With ``only``, the engines (and sshd) of the other hosts are left alone: they are neither waited
    for nor given the workload image (``named``)."""
    suites = requested_suites(suites_arg if suites_arg is not None else os.environ.get(SUITES_ENV))
    existing = {host.number: host for host in lab_hosts()}
    count = requested or max([DEFAULT_HOSTS, len(suites), *existing])
    wanted = wanted_suites(count, suites, {number: host.suite for number, host in existing.items()})
    ensure_images(images=(WORKLOAD_IMAGE, *dict.fromkeys(host_image(suite) for suite in wanted.values())))
    ensure_key()
    subnet = ensure_network(requested_subnet(subnet_arg))
    for number, host in existing.items():
        if number > count:
            remove_host(host)
        elif host.suite != wanted[number]:  # a lab host is disposable: another release means a new host
            log(f"{host.name} runs Debian {host.suite}, asked for {wanted[number]}")
            remove_host(host)
            existing[number] = None
    images = {
        suite: docker("image", "inspect", "--format", "{{.Id}}", host_image(suite)).stdout.strip()
        for suite in set(wanted.values())
    }
    for number in range(1, count + 1):
        host = existing.get(number)
        if host is None:
            create_host(number, subnet, wanted[number])
        elif host.state != "running":
            log(f"starting {host.container} (was {host.state})")
            docker("start", host.container)
        if host is not None and host.image_id != images[host.suite]:
            log(f"{host.name} runs an older {host_image(host.suite)}; `lab.py down && lab.py up` recreates it")
    hosts = [host for host in lab_hosts() if host.number <= count]
    touched = list(named(hosts, only, (SUDO_HOST,)))
    for host in touched:
        wait_for(host, "dockerd", dockerd_answers, DOCKERD_WAIT_SECONDS)
        authorize_key(host)
        load_workload_image(host)
    if only is None or SUDO_HOST in only or with_sudo_host:
        sudo = ensure_sudo_host(subnet, with_sudo_host)
        touched += [sudo] if sudo is not None else []
    else:
        sudo = None  # left alone, as its engine is
    refresh_client_files(hosts)
    for host in touched:
        wait_for(host, "sshd", sshd_answers)
    log(f"lab is up: {', '.join(f'{host.name}={host.ip}' for host in hosts)}; inventory {INVENTORY}")
    if sudo is not None:
        log(f"sudo host {sudo.name}={sudo.ip} (user {SUDO_USER}, sudo, no root login); inventory {SUDO_INVENTORY}")


def down(remove_images: bool) -> None:
    require_docker()
    for host in lab_hosts():
        remove_host(host)
    for container in docker("ps", "-aq", "--filter", f"label={LABEL}").stdout.split():
        docker("rm", "--force", "--volumes", container)
    for volume in docker("volume", "ls", "-q", "--filter", f"label={LABEL}").stdout.split():
        docker("volume", "rm", "--force", volume)
    if docker("network", "ls", "-q", "--filter", f"name=^{NETWORK}$", "--filter", f"label={LABEL}").stdout.strip():
        log(f"removing network {NETWORK}")
        docker("network", "rm", NETWORK)
    if remove_images:
        for image in IMAGES:
            if image_recipe(image) is not None:
                log(f"removing image {image}")
                docker("rmi", image)
    if STATE_DIR.exists():
        # The hosts are gone: leave an inventory with an empty group rather than one pointing at nothing.
        write_client_files([], [])
        write_sudo_client_files(None)
    log("lab is down")


def status() -> int:
    require_docker()
    hosts = lab_hosts()
    if not hosts:
        print("no lab hosts; run `python lab/lab.py up`")
        return 1
    rows = [("HOST", "CONTAINER", "STATE", "IP", "DOCKERD", "SSHD")]
    healthy = True
    for host in hosts:
        running = host.state == "running"
        dockerd_ok = running and dockerd_answers(host)
        sshd_ok = running and sshd_answers(host)
        healthy = healthy and dockerd_ok and sshd_ok
        rows.append((host.name, host.container, host.state, host.ip or "-", yes_no(dockerd_ok), yes_no(sshd_ok)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0 if healthy else 1


def yes_no(value: bool) -> str:
    return "yes" if value else "NO"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n", maxsplit=1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    images = commands.add_parser("images", help="build the lab images if their recipe changed")
    images.add_argument("--force", action="store_true", help="rebuild even if the recipe is unchanged")
    up_parser = commands.add_parser("up", help="start or repair the lab hosts and write the inventory")
    up_parser.add_argument(
        "--hosts", type=int, help=f"number of hosts (default: as many as exist, at least {DEFAULT_HOSTS})"
    )
    up_parser.add_argument(
        "--sudo-host",
        action="store_true",
        help=f"also start {SUDO_HOST}: reached as {SUDO_USER} with sudo, root login refused ({SUDO_INVENTORY.name})",
    )
    up_parser.add_argument(
        "--suites",
        help=f"Debian release of each host in order, e.g. 'bookworm bookworm trixie' (default: ${SUITES_ENV}; "
        f"hosts not listed run {SUITE}; with no list, an existing host keeps its release)",
    )
    up_parser.add_argument(
        "--subnet", help=f"IPv4 subnet of a new lab network (default: ${SUBNET_ENV}, else the first free candidate)"
    )
    only_help = "touch only the engines of these hosts (e.g. host1 host2), which another test may be using"
    up_parser.add_argument("--only", nargs="+", metavar="HOST", help=only_help)
    down_parser = commands.add_parser("down", help="remove the lab containers, volumes and network")
    down_parser.add_argument("--images", action="store_true", help="also remove the lab images")
    load_parser = commands.add_parser("load", help="build a lab image if needed and load it into every lab host")
    load_parser.add_argument("image", help=f"lab image to load, for example {POSTGRES_IMAGE.partition(':')[0]}")
    load_parser.add_argument("--only", nargs="+", metavar="HOST", help=only_help)
    commands.add_parser("status", help="show each host's state and whether dockerd and sshd answer")
    commands.add_parser("inventory", help="rewrite inventory, known_hosts and ssh_config from the running hosts")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            return status()
        if args.command == "up" and args.hosts is not None and args.hosts < 1:
            parser.error("--hosts must be at least 1")
        with lab_lock():
            if args.command == "images":
                ensure_images(force=args.force, images=tuple(IMAGES))
            elif args.command == "load":
                require_docker()
                load(args.image, args.only)
            elif args.command == "up":
                up(args.hosts, args.subnet, args.sudo_host, args.suites, args.only)
            elif args.command == "down":
                down(args.images)
            elif args.command == "inventory":
                require_docker()
                ensure_key()
                refresh_client_files(lab_hosts())
                log(f"wrote {INVENTORY}, {KNOWN_HOSTS} and {SSH_CONFIG}")
    except LabError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
