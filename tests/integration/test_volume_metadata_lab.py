# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Volume metadata across two lab hosts: back up on host1, restore on host2 (new volume, then force).

The volume of issue 17's probe (root ``0750 999:999`` with an old mtime and an xattr, a ``user.*``
xattr, a POSIX ACL, a default ACL on a setgid directory, ``security.capability``, a hard-link pair,
a 64 MiB sparse file, old mtimes, a symlink) is written on host1 with the filesystem's own calls,
backed up with docker_volume_backup, copied to host2 over SSH and restored there with
docker_volume_restore. Both volumes are then listed on their hosts by an independent script
(stat, xattrs, sha256, allocated blocks) and compared entry by entry; the content digest of
``_volmeta`` of the source archive is compared with that of a backup of the restored volume.

If a lab host's /var/lib/docker cannot hold one of the attributes, writing it on host1 fails the
test naming the attribute; if host2's cannot, the restore must report it, and the test checks
that report instead of the attribute. Everything is named ``ferry-it-vml-<random>-*`` and removed
in ``finally``.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _bundle
from ansible_collections.ferry.docker.plugins.module_utils._restore import artifact_fingerprint

REPO_ROOT = Path(__file__).resolve().parents[2]
SSH_CONFIG = REPO_ROOT / "lab" / ".state" / "ssh_config"
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"]
TIMEOUT = 300
OLD = 1_000_000_000
SPARSE_SIZE = 64 * 1024 * 1024

POPULATE = r"""
import os, struct, sys
root = sys.argv[1]
OLD = 1_000_000_000
def acl(*entries):
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in entries)
U = 0xFFFFFFFF
XATTRS = {
    ".": {"user.origin": b"volume root"},
    "data/notes.txt": {"user.comment": b"keep me",
                       "system.posix_acl_access": acl((1, 6, U), (2, 4, 1234), (4, 4, U), (0x10, 4, U), (0x20, 0, U))},
    "shared": {"system.posix_acl_default": acl((1, 7, U), (2, 5, 1234), (4, 5, U), (0x10, 5, U), (0x20, 0, U))},
    "bin/ping": {"security.capability": struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)},
}
os.makedirs(root + "/data"); os.makedirs(root + "/bin"); os.mkdir(root + "/shared")
open(root + "/data/notes.txt", "w").write("notes\n")
open(root + "/data/a", "w").write("linked\n")
os.link(root + "/data/a", root + "/data/b")
open(root + "/bin/ping", "wb").write(b"\x7fELF not really"); os.chmod(root + "/bin/ping", 0o755)
with open(root + "/sparse.img", "wb") as f:
    f.truncate(64 * 1024 * 1024); f.seek(1024 * 1024); f.write(b"x" * 4096)
os.chown(root + "/shared", 0, 50); os.chmod(root + "/shared", 0o2775)
os.symlink("data/notes.txt", root + "/link")
os.chown(root + "/data/notes.txt", 999, 999)
for name, attributes in XATTRS.items():
    for key, value in attributes.items():
        try:
            os.setxattr(os.path.join(root, name), key, value)
        except OSError as exc:
            sys.exit(f"cannot set {key} on {name}: {exc.strerror}")
for name in ("data/notes.txt", "data/a", "bin/ping", "sparse.img", "shared", "data", "bin"):
    os.utime(root + "/" + name, (OLD, OLD))
os.utime(root + "/link", (OLD, OLD), follow_symlinks=False)
os.chown(root, 999, 999); os.chmod(root, 0o750); os.utime(root, (OLD + 1, OLD + 1))
"""

PROBE = r"""
import json, os, struct, sys, tempfile
U = 0xFFFFFFFF
acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, U) for t, p in ((1, 6), (4, 4), (0x20, 0)))
lost = []
with tempfile.TemporaryDirectory(dir=sys.argv[1]) as tmp:
    path = os.path.join(tmp, "f")
    with open(path, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    if os.stat(path).st_blocks * 512 >= 8 * 1024 * 1024:
        lost.append("sparse")
    attempts = [("user.comment", path, b"x"), ("user.origin", tmp, b"x"), ("system.posix_acl_access", path, acl),
                ("system.posix_acl_default", tmp, acl),
                ("security.capability", path, struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))]
    for key, target, value in attempts:
        try:
            os.setxattr(target, key, value)
        except OSError:
            lost.append("xattr " + key)
print(json.dumps(lost))
"""

LISTING = r"""
import hashlib, json, os, stat, sys
root = sys.argv[1]
out = {}
def entry(path, name):
    st = os.lstat(path)
    kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
    xattrs = {}
    try:
        for key in sorted(os.listxattr(path, follow_symlinks=False)):
            xattrs[key] = os.getxattr(path, key, follow_symlinks=False).hex()
    except OSError:
        pass
    content = os.readlink(path) if kind == "l" else ""
    if kind == "f":
        with open(path, "rb") as f:
            content = hashlib.sha256(f.read()).hexdigest()
    out[name] = dict(kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                     size=st.st_size if kind == "f" else 0, content=content, xattrs=xattrs,
                     mtime=int(st.st_mtime), inode=st.st_ino, allocated=st.st_blocks * 512)
entry(root, ".")
for top, dirs, files in os.walk(root):
    for name in sorted(dirs + files):
        path = os.path.join(top, name)
        entry(path, os.path.relpath(path, root))
print(json.dumps(out))
"""


def ssh(host, command, stdin=None):
    result = subprocess.run(
        ["ssh", "-F", str(SSH_CONFIG), *SSH_OPTIONS, host, command],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"ssh {host} {command!r} failed: {result.stderr.decode(errors='replace')[-2000:]}"
    return result.stdout


def python_on(host, script, *args):
    return ssh(host, "python3 - " + " ".join(args), stdin=script.encode())


def mountpoint(host, volume):
    return ssh(host, f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").decode().strip()


def listing(host, volume):
    return json.loads(python_on(host, LISTING, mountpoint(host, volume)))


def ok(results, host):
    result = results[host]
    assert not result.get("unreachable") and not result.get("failed"), result.get("msg", result)
    return result


def comparable(entries, names_of_directories_filled):
    """Drop what differs by nature between two hosts: inode numbers, and mtimes of directories filled."""
    out = {}
    for name, fields in entries.items():
        fields = {k: v for k, v in fields.items() if k not in ("inode", "allocated")}
        if fields["kind"] == "d" and name in names_of_directories_filled:
            fields.pop("mtime")
        out[name] = fields
    return out


def fetch_artifact(host, bundle, volume, into):
    """Copy a bundle from a lab host to this machine; return (bundle dir, artifact)."""
    local = into / Path(bundle).name
    local.mkdir()
    data = ssh(host, f"tar -C {bundle} -c .")
    subprocess.run(["tar", "-x", "-C", str(local)], input=data, check=True, timeout=TIMEOUT)
    manifest = _bundle.load_manifest(str(local))
    return str(local), _bundle.find_artifact(manifest, "volume", volume)


def assert_restored(src, dst, report):
    """Entry by entry, except what the restore reported as not kept (which must then really be missing)."""
    not_kept = {(item["attribute"], path) for item in report for path in item["paths"]}
    directories = {name for name, fields in src.items() if fields["kind"] == "d" and name != "."}
    expected, got = comparable(src, directories), comparable(dst, directories)
    for attribute, path in not_kept:
        if attribute.startswith("xattr "):
            key = attribute.split(" ", 1)[1]
            assert key not in dst[path]["xattrs"], f"{attribute} of {path} was reported lost but is there"
            expected[path]["xattrs"].pop(key, None)
    assert got == expected
    # the explicit checks
    assert (dst["."]["mode"], dst["."]["uid"], dst["."]["gid"], dst["."]["mtime"]) == (0o750, 999, 999, OLD + 1)
    assert dst["data/a"]["inode"] == dst["data/b"]["inode"]
    assert dst["shared"]["mode"] == 0o2775 and dst["link"]["content"] == "data/notes.txt"
    if ("sparse", "sparse.img") not in not_kept:
        assert dst["sparse.img"]["allocated"] < SPARSE_SIZE // 8, dst["sparse.img"]
    assert dst["sparse.img"]["size"] == SPARSE_SIZE and dst["sparse.img"]["mtime"] == OLD


@pytest.fixture
def names(lab):
    prefix = f"ferry-it-vml-{uuid.uuid4().hex[:8]}"
    yield prefix
    for host in ("host1", "host2"):
        volumes = f"docker volume ls -q --filter name={prefix} | xargs -r docker volume rm -f >/dev/null"
        ssh(host, f"{volumes}; rm -rf /tmp/{prefix}-*")


def test_volume_metadata_host1_to_host2(lab, ansible_adhoc, names):
    source, bundle = f"{names}-src", f"/tmp/{names}-bundle"
    ssh("host1", f"docker volume create {source} >/dev/null")
    python_on("host1", POPULATE, mountpoint("host1", source))
    original = listing("host1", source)
    assert original["sparse.img"]["allocated"] < SPARSE_SIZE // 8, "host1 did not keep the source file sparse"

    backup = ok(
        ansible_adhoc("host1", "ferry.docker.docker_volume_backup", {"volumes": [source], "dest": bundle}), "host1"
    )
    assert backup["results"][0]["read_from"] == "directory", backup
    assert backup["metadata_not_kept"] == []
    ssh("host2", f"mkdir -m 0700 {bundle}")
    ssh("host2", f"tar -C {bundle} -x", stdin=ssh("host1", f"tar -C {bundle} -c ."))

    # a new volume on host2
    restored = ok(ansible_adhoc("host2", "ferry.docker.docker_volume_restore", {"bundle": bundle}), "host2")
    report = restored["volumes"][0]["metadata_not_kept"]
    docker_root = ssh("host2", "docker info -f '{{.DockerRootDir}}'").decode().strip()
    cannot = set(json.loads(python_on("host2", PROBE, docker_root + "/volumes")))
    assert {item["attribute"] for item in report} == cannot, "the restore's report differs from what host2 can hold"
    assert_restored(original, listing("host2", source), report)

    # force into an existing volume on host2 holding other data and Docker's default root
    busy = f"{names}-busy"
    ssh("host2", f"docker volume create {busy} >/dev/null")
    ssh("host2", f"echo stays > {mountpoint('host2', busy)}/other.txt")
    forced = ok(
        ansible_adhoc(
            "host2",
            "ferry.docker.docker_volume_restore",
            {"bundle": bundle, "volume_map": {source: busy}, "force": True},
        ),
        "host2",
    )
    assert forced["volumes"][0]["action"] == "overwrite"
    overwritten = listing("host2", busy)
    assert overwritten.pop("other.txt")["content"]
    assert_restored(original, overwritten, forced["volumes"][0]["metadata_not_kept"])

    # the digest: source archive == a backup of the restored volume
    again = f"/tmp/{names}-again"
    ok(ansible_adhoc("host2", "ferry.docker.docker_volume_backup", {"volumes": [source], "dest": again}), "host2")
    with tempfile.TemporaryDirectory() as tmp:
        first = fetch_artifact("host1", bundle, source, Path(tmp))
        second = fetch_artifact("host2", again, source, Path(tmp))
        if not report:
            assert artifact_fingerprint(*first) == artifact_fingerprint(*second)
