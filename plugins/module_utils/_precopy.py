# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Pre-copy: a volume's data goes to its target while the source still serves, the rest once it is stopped.

What is decided here, without Ansible and without an engine:

* ``classify(driver, options)``: a volume's kind: ``plain`` (driver ``local`` without options: a directory
  on the engine's host), ``network`` (NFS, CIFS/SMB, Ceph, GlusterFS: the data lives elsewhere and is
  shared) or ``special`` (tmpfs, a bind-backed local volume, any other driver);
* ``choose(...)``: what a migration does with each volume: ``precopy`` (copied in passes while the source
  serves, the last delta once it is stopped), ``stream`` (stop-and-copy, streamed: copied once it is stopped,
  straight into the target's volume, no bundle on either disk), ``copy`` (stop-and-copy in the bundle) or
  ``skip`` (only the definition is recreated), and why;
* ``Passes``: when the live passes stop: the delta fell below the threshold, the pass limit was reached, or
  the writer changes data as fast as the copy moves it (the delta no longer shrinks);
* ``rsync_argv`` and ``parse_stats``: one pass is rsync over SSH with the run's key, straight into the target
  volume's directory, every attribute kept (owners by number, hard links, ACLs, xattrs), files the source no
  longer has deleted;
* ``DigestCache``: the per-file digests of a volume tree kept between two digests of it (``walk_digest``), so
  that the digest taken while the source is stopped reads only what changed since the live passes;
* ``listed_delta``: the last pass once the source is stopped, from the two trees themselves: the target's
  entries as its digest found them after the live passes (``tree_record``, read back with ``parse_tree``)
  against the source's as its digest finds them once stopped. Only the paths that differ go, in one listed
  rsync (``rsync_argv(exact=True)``), instead of a pass that lists and compares the whole tree on both hosts.
"""

from __future__ import annotations

import hashlib
import json
import marshal
import os
import posixpath
import re
import shlex
import subprocess
import threading
import time

from ansible_collections.ferry.docker.plugins.module_utils._transfer import (
    RSYNC_IO_TIMEOUT,
    SendFailed,
    child_environment,
    probe_unpack,
    remote_argv,
    remove_remote_image,
    ssh_command,
)

CHOICES = ("precopy", "stream", "copy", "skip")
# The choices whose data goes straight into the target's volume with rsync (no bundle): ``precopy`` with live
# passes while the source serves, ``stream`` only once it is stopped (stop-and-copy, streamed).
DIRECT = ("precopy", "stream")
NETWORK_TYPES = frozenset(("nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p"))
_STAT_LINES = {
    "sent": re.compile(r"Total bytes sent: ([0-9][0-9,.]*)"),
    "changed": re.compile(r"Total transferred file size: ([0-9][0-9,.]*)"),
    "files": re.compile(r"Number of regular files transferred: ([0-9][0-9,.]*)"),
    "literal": re.compile(r"Literal data: ([0-9][0-9,.]*)"),
}
_NO_SPACE = ("No space left on device", "Disk quota exceeded")


# Bind sources never copied (migrate_bind_data): the root, the top-level system directories and what is below
# the ones that belong to the system, the engine's own data and its socket.
SYSTEM_DIRECTORIES = frozenset(
    (
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/var/lib",
        "/var/log",
        "/var/run",
        "/var/tmp",
    )
)
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run",
)


def bind_problem(path, docker_root="/var/lib/docker"):
    """Why the bind directory ``path`` must not be copied (None if it may): it is not absolute, it is ``/`` or a
    system directory, it is below one of the system's trees, or it is the engine's data or socket."""
    if not isinstance(path, str) or not path.startswith("/"):
        return f"{path!r} is not an absolute path"
    path = posixpath.normpath(path)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if path in SYSTEM_DIRECTORIES:
        return f"{path} is / or a system directory"
    for tree in SYSTEM_TREES:
        if path.startswith(tree + "/"):
            return f"{path} is below {tree}, a system directory"
    root = posixpath.normpath(docker_root or "/var/lib/docker")
    if path == root or path.startswith(root + "/") or root.startswith(path + "/"):
        return f"{path} holds the Docker engine's own data ({root})"
    if posixpath.basename(path).endswith(".sock") or "docker.sock" in path:
        return f"{path} is a socket path (the Docker socket is never copied)"
    return None


def classify(driver, options):
    """``(kind, detail)`` of a volume from its driver and driver options (the options' values are not kept)."""
    options = options or {}
    driver = driver or "local"
    if driver != "local":
        return "special", f"driver {driver}"
    if not options:
        return "plain", "local"
    fstype = str(options.get("type") or "").lower()
    if fstype in NETWORK_TYPES:
        return "network", f"local, type {fstype}"
    if "addr=" in str(options.get("o") or ""):
        return "network", "local, a remote address"
    if fstype == "tmpfs":
        return "special", "local, tmpfs"
    if "bind" in str(options.get("o") or "").split(","):
        return "special", "local, bind-backed"
    return "special", "local with options " + ",".join(sorted(options))


def choose(
    name,
    kind,
    detail,
    size,
    strategy="precopy",
    data="auto",
    data_map=None,
    min_bytes=0,
    keep_bundle=False,
    consistency="stop",
):
    """``{"choice", "reason"}`` for volume ``name`` of kind ``kind``.

    ``data`` (``auto``, ``copy`` or ``skip``) is the run's default and ``data_map`` (volume name -> one of
    those) overrides it per volume. ``auto`` recreates a network volume's definition without copying (the data
    is already shared; a copy could overwrite it) and copies any other volume. A plain one of at least
    ``min_bytes`` goes straight into the target's volume: pre-copied when ``strategy`` is ``precopy``,
    streamed once the source is stopped when it is ``stop``; a smaller one goes in the bundle (in less time than
    the extra steps take), and so does every copied volume with ``keep_bundle`` (the bundle left on the source
    then holds all the data), with ``copy`` in the map, or with ``consistency`` ``pause`` (each volume is read
    while its container is paused, which only the bundle's backup does). Whether the target can take a direct
    copy is settled later, where the copy runs."""
    wanted = (data_map or {}).get(name, data)
    if wanted not in ("auto", "copy", "skip"):
        raise ValueError(f"volume {name}: the volume data mode must be auto, copy or skip, not {wanted!r}")
    if strategy not in ("precopy", "stop"):
        raise ValueError(f"volume {name}: migrate_strategy must be precopy or stop, not {strategy!r}")
    where = "migrate_volume_data_map" if name in (data_map or {}) else "migrate_volume_data"
    if wanted == "skip":
        return {"choice": "skip", "reason": f"{where} is skip: only the definition is recreated ({detail})"}
    if wanted == "auto" and kind == "network":
        return {
            "choice": "skip",
            "reason": f"a network volume ({detail}): the data is shared, only the definition is recreated",
        }
    if kind != "plain":
        return {"choice": "copy", "reason": f"stop-and-copy: not a plain local volume ({detail})"}
    if wanted == "copy":
        return {"choice": "copy", "reason": f"stop-and-copy: {where} is copy"}
    if keep_bundle:
        return {"choice": "copy", "reason": "stop-and-copy: migrate_keep_bundle is true (the bundle holds the data)"}
    if consistency == "pause":
        return {"choice": "copy", "reason": PAUSE_REASON}
    if int(size or 0) < int(min_bytes or 0):
        return {"choice": "copy", "reason": f"stop-and-copy: {size} bytes, below migrate_precopy_min_bytes"}
    if strategy == "stop":
        return {"choice": "stream", "reason": STREAM_REASON}
    return {"choice": "precopy", "reason": "pre-copy while the source serves, the last delta once it is stopped"}


PAUSE_REASON = "stop-and-copy: migrate_consistency is pause (read while paused, into the bundle)"
STREAM_REASON = "stop-and-copy, streamed: once the source is stopped, straight into the target's volume"


class Passes:
    """When the live passes of a volume (or a group's volumes together) stop.

    ``record(changed)`` takes the new bytes a pass moved (rsync's literal data); ``again()`` says whether to run
    another pass: not once the delta is at most ``delta_bytes``, not beyond ``max_passes``, and not when a
    pass after the first did not shrink the delta (a writer as fast as the copy). ``outcome`` says which."""

    def __init__(self, delta_bytes, max_passes):
        self.delta_bytes = max(0, int(delta_bytes))
        self.max_passes = max(1, int(max_passes))
        self.deltas = []
        self.outcome = ""

    def record(self, changed):
        self.deltas.append(int(changed))

    def again(self):
        if not self.deltas:
            return True
        last = self.deltas[-1]
        if last <= self.delta_bytes:
            self.outcome = "converged"
        elif len(self.deltas) >= self.max_passes:
            self.outcome = "capped"
        elif len(self.deltas) > 2 and last >= self.deltas[-2]:
            self.outcome = "not_shrinking"
        else:
            return True
        return False

    def summary(self):
        notes = {
            "converged": "the delta fell to migrate_precopy_delta_bytes or below",
            "capped": "migrate_precopy_passes reached",
            "not_shrinking": "a writer changes data about as fast as the copy moves it",
        }
        left = self.deltas[-1] if self.deltas else 0
        text = notes.get(self.outcome, "")
        if self.outcome in ("capped", "not_shrinking"):
            text += f"; the rest (about {left} bytes) goes by stop-and-copy"
        return {"passes": len(self.deltas), "outcome": self.outcome, "last_delta_bytes": left, "note": text}


def rsync_argv(key_dir, port, src_dir, user, address, dest_dir, attributes=True, listed=False, exact=False):
    """rsync's arguments (without the program) for one pass of ``src_dir`` into ``dest_dir`` on the target:
    the tree as it is (owners by number, hard links, ACLs, xattrs, the top directory's own attributes), files
    gone from the source deleted, each file written beside and renamed into place.

    ``attributes=False`` leaves ACLs and xattrs alone (reading them for every file is half of a pass over an
    unchanged tree); ``listed=True`` copies only the paths given on standard input (NUL-separated, relative to
    ``src_dir``), without recursing and without deleting: the final pass's second step, which carries the ACLs
    and xattrs of what changed since the last pass that carried them.

    ``exact=True`` is the last pass of ``listed_delta``: only the paths given on standard input, each made as the
    source has it (a directory that became something else replaced whole). What the source no longer has is
    removed before it (``REMOVE_LISTED``): rsync's ``--delete-missing-args`` fails with "protocol
    incompatibility" in the rsync of Debian 12's security updates when a missing path follows one that
    exists (RsyncProject/rsync#910)."""
    if exact:  # every listed path differs: no quick check (size and time) may skip one
        mode = ["--files-from=-", "--from0", "--force", "--ignore-times"]
    else:
        mode = ["--files-from=-", "--from0"] if listed else ["--delete"]
    return [
        "--archive",
        "--hard-links",
        *(["--acls", "--xattrs"] if attributes or exact else []),
        "--numeric-ids",
        "--modify-window=-1",  # times compared and kept to the nanosecond, not the second
        *mode,
        "--stats",
        f"--timeout={RSYNC_IO_TIMEOUT}",
        "--rsh",
        " ".join(shlex.quote(part) for part in ssh_command(key_dir, port, shared=True)),
        f"{src_dir.rstrip('/')}/",
        f"{user}@{address}:{dest_dir.rstrip('/')}/",
    ]


def changed_since(path, since, run=subprocess.run, timeout=600):
    """The entries of the tree at ``path`` (relative, ``.`` for its top) whose inode changed at or after
    ``since`` (epoch seconds): content, owner, mode, links, ACLs and xattrs all set the change time. GNU find,
    which never follows a symlink here; NUL-separated bytes. Raises OSError when find fails."""
    done = run(
        ["find", ".", "-newerct", f"@{since:.9f}", "-print0"],
        cwd=path,
        capture_output=True,
        timeout=timeout,
        check=False,
        env=child_environment(),
    )
    if done.returncode != 0:
        raise OSError(f"find in {path} failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[-300:]}")
    return done.stdout


# The margin under the start of the last live pass from which the final pass carries ACLs and xattrs again: the
# change time of a file and the clock read here may differ by a clock tick.
ATTRIBUTES_MARGIN_SECONDS = 2.0


NO_PASS = {"sent": 0, "changed": 0, "files": 0, "literal": 0}  # the stats of a pass with nothing to copy


def _number(text):
    return int(text.replace(",", "").replace(".", ""))


def parse_stats(stats):
    """``{"sent", "changed", "files", "literal"}`` from rsync's ``--stats``: bytes on the wire, bytes of the
    files it transferred (the delta: what the next pass reads again), how many files, and the new data in
    them."""
    out = {}
    for key, pattern in _STAT_LINES.items():
        found = pattern.search(stats or "")
        out[key] = _number(found.group(1)) if found else 0
    return out


class PassFailed(Exception):
    """A pass failed; ``no_space`` when the target ran out of space."""

    def __init__(self, message, no_space=False):
        super().__init__(message)
        self.no_space = no_space


RSYNC_VANISHED = 24  # rsync's exit status when files vanished between its listing and their transfer


def copy_pass(argv, where, timeout, run=subprocess.run, listed=None, live=False):
    """Run one pass (``argv`` with the program; ``listed``: the bytes for its standard input); its
    ``parse_stats``. Raises PassFailed.

    ``live``: a pass while the source serves, where a file may vanish between rsync's listing and its transfer
    (Redis replaces its append-only files when it rewrites them): that pass counts, with ``vanished`` in its
    stats; the next pass, and the last one once the source is stopped, copies what took their place. A pass
    once stopped has no such excuse."""
    try:
        done = run(
            argv,
            input=listed.decode("utf-8", "surrogateescape") if listed is not None else None,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            timeout=timeout,
            check=False,
            env=child_environment(),
        )
    except subprocess.TimeoutExpired:
        raise PassFailed(f"copying to {where} took more than {timeout} s") from None
    except OSError as exc:
        raise PassFailed(f"rsync could not run on this host to copy to {where}: {exc}") from None
    if live and done.returncode == RSYNC_VANISHED:
        return dict(parse_stats(done.stdout), vanished=True)
    if done.returncode != 0:
        lines = (done.stderr or "").strip().splitlines()
        last = " | ".join(line.strip() for line in lines[-3:])
        no_space = any(marker in (done.stderr or "") for marker in _NO_SPACE)
        raise PassFailed(f"copying to {where} failed (rsync exit {done.returncode}): {last}", no_space=no_space)
    return parse_stats(done.stdout)


class DigestCache:
    """The per-file digests of one volume tree between two ``walk_digest`` calls, in a file only root reads.

    The file is in ``marshal``'s format (version 4): 41,000 entries load in about 0.05 s and save in 0.01 s,
    against 0.1 s each with JSON, and the digest after the stop waits for both. It is written by this code
    only, 0600 in the run's 0700 directory; anything in it that is not what ``save`` wrote (another Python's
    format, a torn file) reads as an empty cache: every file is hashed again.
    """

    def __init__(self, path):
        self.path = path
        self.entries = {}

    def load(self):
        taken = _take_ahead(self.path)
        if taken is not None:
            self.entries = taken
            return self.entries
        self.entries = _read_cache(self.path)[1]
        return self.entries

    def save(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        temporary = f"{self.path}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(marshal.dumps(self.entries, 4))
        os.replace(temporary, self.path)


def _read_cache(path):
    """``(stamp, entries)`` of the cache file at ``path``: its inode, size and time as it was read (None when it
    could not be opened), and what it holds (empty when it is not what ``save`` wrote)."""
    try:
        with open(path, "rb") as handle:
            found = os.fstat(handle.fileno())
            data = marshal.loads(handle.read())  # marshal.load reads a file in small pieces: 7 times slower
    except (OSError, EOFError, ValueError, TypeError):
        return None, {}
    return (found.st_ino, found.st_size, found.st_mtime_ns), data if isinstance(data, dict) else {}


_PRELOADED = {}  # file -> (stamp, what it holds), read ahead by _read_ahead and taken once by _take_ahead


def _read_ahead(paths, read):
    """Read the files at ``paths`` with ``read`` (``path -> (stamp, value)``, stamp None when there is nothing to
    keep) in a thread, for a later ``_take_ahead``."""

    def read_all():
        for path in paths:
            stamp, value = read(path)
            if stamp is not None:
                _PRELOADED[path] = (stamp, value)

    thread = threading.Thread(target=read_all, daemon=True)
    thread.start()
    return thread


def _take_ahead(path):
    """What ``_read_ahead`` read from ``path``, once, if the file is still the one read (the same inode, size and
    time: the writers replace the file); else None."""
    stamp, value = _PRELOADED.pop(path, (None, None))
    if stamp is None:
        return None
    try:
        now = os.stat(path)
    except OSError:
        return None
    return value if (now.st_ino, now.st_size, now.st_mtime_ns) == stamp else None


def preload_caches(paths):
    """Read the digest caches at ``paths`` in a thread, while the sources still serve (or while a restore waits),
    so that the digests once they are stopped do not wait for it (41,000 entries: 0.05-0.17 s). A cache is taken
    only if its file is still the one read (``_take_ahead``); one not read yet when its digest starts is read
    then, as without this."""
    return _read_ahead(paths, _read_cache)


def drop_caches(paths):
    """Remove the digest caches at ``paths`` once the run has read them for the last time, and the directories
    that leaves empty up to ``.digests``: they are 250 bytes per file of a volume, and a later run keeps its
    own. Never fails (a cache left behind only takes space)."""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            continue
        parent = os.path.dirname(path)
        while True:
            try:
                os.rmdir(parent)
            except OSError:  # not empty (another group's caches): kept
                break
            if os.path.basename(parent) == ".digests":
                break
            parent = os.path.dirname(parent)


def cache_path(directory, volume):
    return os.path.join(directory, ".digests", f"{volume}.marshal")


def tree_path(directory, name):
    """Where the target keeps the tree of ``name`` (a volume, or ``bind:<path>``) that its digest found while the
    source still served, for the source's last pass."""
    return os.path.join(directory, ".digests", name.replace("/", "_") + ".tree.json")


TREE_VERSION = 1
TREE_LIMIT_BYTES = 256 * 1024 * 1024  # a tree record larger than this is not read: the last pass goes whole
TREE_FETCH_SECONDS = 120


def tree_record(tree):
    """``walk_digest``'s ``tree`` as the JSON text another host reads (``parse_tree``): per path its time, its whole
    digest entry and whether it has several names. Read before the stop, so that once stopped comparing two
    trees costs one string comparison per entry."""
    entries = {name: [mtime, entry, bool(links)] for name, (mtime, entry, links) in tree.items()}
    return json.dumps({"version": TREE_VERSION, "entries": entries}, separators=(",", ":"))


def save_tree(path, tree):
    """Write ``tree_record(tree)`` to ``path`` whole (0600, replaced in one rename)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(tree_record(tree))
    os.replace(temporary, path)


def _relative(name):
    return name == "." or (
        bool(name) and "\0" not in name and all(part not in ("", ".", "..") for part in name.split("/"))
    )


def parse_tree(text):
    """The other host's tree (``tree_record``'s JSON): relative path -> ``(mtime_ns, entry, links)``. Raises
    ValueError for anything else: another version, a path that is not plainly inside the tree (absolute, with
    ``.`` or ``..``, empty parts), a field of the wrong kind, an entry that is not the path's."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a tree record ({exc})") from None
    if not isinstance(doc, dict) or doc.get("version") != TREE_VERSION or not isinstance(doc.get("entries"), dict):
        raise ValueError(f"not a tree record of version {TREE_VERSION}")
    out = {}
    for name, value in doc["entries"].items():
        if not _relative(name):
            raise ValueError(f"the path {name!r} is not inside the tree")
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not isinstance(value[0], int)
            or isinstance(value[0], bool)
            or not isinstance(value[1], str)
            or not value[1].startswith(name + "\0")
            or not isinstance(value[2], bool)
        ):
            raise ValueError(f"the entry of {name!r} is not (mtime, digest entry, links)")
        out[name] = tuple(value)
    if "." not in out:
        raise ValueError("the tree has no top directory")
    return out


CHANGED_LIMIT = 100_000  # listed paths of one volume beyond which its check walks the whole tree


def preload_trees(paths):
    """Read and parse the tree files at ``paths`` (``tree_path``) in a thread, while a restore waits for its
    handoff: the check of a volume once its last pass is done starts from one (``listed_volume_digest``), and
    41,000 entries take 0.1-0.2 s to parse. Taken only if the file is still the one read (``_take_ahead``); one
    that is not is read again."""
    return _read_ahead(paths, _read_tree)


def _read_tree(path):
    """``(stamp, (base, tree))`` of the tree file at ``path``: ``base`` the sha256 of its record, ``tree`` what
    ``parse_tree`` makes of it; ``(None, None)`` when it is missing, unreadable or not a tree record."""
    try:
        with open(path, "rb") as handle:
            found = os.fstat(handle.fileno())
            if found.st_size > TREE_LIMIT_BYTES:
                return None, None
            data = handle.read()
        tree = parse_tree(data)
    except (OSError, ValueError):
        return None, None
    return (found.st_ino, found.st_size, found.st_mtime_ns), (hashlib.sha256(data).hexdigest(), tree)


def _take_tree(path):
    """``(base, tree)`` of the tree file at ``path`` (read ahead if it still is), or ``(None, None)``."""
    taken = _take_ahead(path)
    return taken if taken is not None else (_read_tree(path)[1] or (None, None))


def parse_changed(value):
    """A volume's ``changed`` in the note that its last pass is done (``_handoff.read_ready``), checked: the
    sha256 of the target's tree the pass started from (``base``) and the relative paths it sent and removed
    (``send``, ``remove``, each plainly inside the tree), at most CHANGED_LIMIT in all. Raises ValueError."""
    if not isinstance(value, dict) or set(value) != {"base", "send", "remove"}:
        raise ValueError("not a base, the paths sent and the paths removed")
    if not isinstance(value["base"], str) or not re.fullmatch(r"[0-9a-f]{64}", value["base"]):
        raise ValueError("the base is not a sha256")
    paths = {}
    for key in ("send", "remove"):
        names = value[key]
        if not isinstance(names, list) or not all(isinstance(n, str) and _relative(n) for n in names):
            raise ValueError(f"{key} is not a list of paths inside the tree")
        paths[key] = sorted(set(names))
    if len(paths["send"]) + len(paths["remove"]) > CHANGED_LIMIT:
        raise ValueError(f"more than {CHANGED_LIMIT} paths")
    return {"base": value["base"], **paths}


def listed_volume_digest(path, cache_file, tree_file, changed):
    """``(sha256, entries, bytes read)`` of the tree at ``path`` once its last pass is done, from the tree this
    host's digest kept after the live passes (``tree_file``) and the paths the pass changed (``changed``,
    ``parse_changed``'s): only those are read again (``_volmeta.listed_digest``). The last pass started from that
    tree, and nothing else writes into a volume before its container is created: the result is what a walk of
    the whole tree gives, which the handoff's digest of the source must then match.

    Raises NotListed (a ``_volmeta.NotListed``: the whole tree is walked instead) when the tree file is not the
    one the pass started from (its sha256 is not ``changed["base"]``) or is not there, or when a file with several
    names is among them."""
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import NotListed, listed_digest

    base, tree = _take_tree(tree_file)
    if tree is None:
        raise NotListed(f"no tree of this host's digest at {tree_file}")
    if base != changed["base"]:
        raise NotListed("the tree this host's digest kept is not the one the last pass started from")
    if any(links for _mtime, _entry, links in tree.values()):
        raise NotListed("a file has several names")
    cache = DigestCache(cache_file)
    cache.load()
    lines = {name: entry for name, (_mtime, entry, _links) in tree.items()}
    return listed_digest(path, lines, changed["send"], changed["remove"], cache.entries)


def _listed(names):
    return b"".join(name.encode("utf-8", "surrogateescape") + b"\0" for name in names)


def _kind(entry):
    return entry.split("\0", 2)[1]


def listed_delta(source, target):
    """``(send, remove)``: the relative paths (sorted) that make the target's tree the source's. ``source`` is
    ``walk_digest``'s tree of the stopped source, ``target`` the target's (``parse_tree``) as its digest found it
    after the live passes; nothing has written there since.

    ``remove`` (first, ``REMOVE_LISTED``): every target entry the source no longer has, under a directory the
    source still has (what is below it goes with it; below an entry that changed type, the new entry replaces
    it). ``send`` (then one listed rsync, ``rsync_argv(exact=True)``):

    - every source entry the target has not, or has with another digest entry (type, mode, owner, size,
      content, link target, xattrs) or modification time;
    - every file with several names on either side (hard links are only made between the files rsync lists);
    - the directory holding each entry sent or removed, whose modification time the change sets.
    """
    send = set()
    for name, (mtime, entry, links) in source.items():
        there = target.get(name)
        if there is None or links or there[2] or there[0] != mtime or there[1] != entry:
            send.add(name)
    remove = set()
    for name in target:
        if name not in source:
            parent = source.get(posixpath.dirname(name) or ".")
            if parent is not None and _kind(parent[1]) == "5":  # a directory on the source
                remove.add(name)
    parents = {posixpath.dirname(name) or "." for name in send | remove if name != "."}
    return sorted(send | parents), sorted(remove)


# Run on the target in the volume's directory, the paths on standard input (NUL-separated, each checked by
# parse_tree to be plainly inside the tree, and below a directory of the target's own tree)
REMOVE_LISTED = "xargs -0 -r rm -rf --"


def choose_bind(source, target, is_dir, data=False, strategy="precopy", consistency="stop"):
    """``{"choice", "reason"}`` for the data of a bind mount from ``source`` (``target`` on the target host):
    with ``data`` (migrate_bind_data) a directory is copied as a plain volume is with ``strategy`` (with the
    pre-copy's passes, or streamed once stopped), unless either path is refused (``bind_problem``) or
    ``consistency`` is ``pause`` (bind data only goes straight into the target); anything else is left where it
    is."""
    if not data:
        return {"choice": "skip", "reason": "migrate_bind_data is false: the target's path is used as it is"}
    if consistency == "pause":
        return {"choice": "skip", "reason": "not copied: migrate_consistency is pause (bind data is copied with stop)"}
    problem = bind_problem(source) or bind_problem(target)
    if problem:
        return {"choice": "skip", "reason": f"not copied: {problem}"}
    if not is_dir:
        return {"choice": "skip", "reason": f"not copied: {source} is not a directory"}
    if strategy == "stop":
        return {"choice": "stream", "reason": "bind data, " + STREAM_REASON.replace("volume", "directory")}
    return {"choice": "precopy", "reason": "bind data, copied while the source serves, the last delta once stopped"}


def volumes_of(member, choices):
    """The names of a source member's volumes with one of ``choices`` (a choice or a tuple; its ``volumes``
    plan)."""
    choices = (choices,) if isinstance(choices, str) else tuple(choices)
    return [v["name"] for v in member.get("volumes") or [] if v.get("choice") in choices]


class LocalCopier:
    """The pre-copy's work on the source host: where a volume's data is, one rsync pass, a tree's digest."""

    def __init__(self, client, send, info=None):
        self.client = client
        self.send = send or {}
        self._info = info
        self._unpack = None  # (thread, box) of the question whether the target has zstd (start_unpack_probe)

    def mountpoint(self, volume):
        """``(directory, None)`` when the volume's data is a directory this process reads, else ``(None, why not)``."""
        from ansible_collections.ferry.docker.plugins.module_utils._volmeta import volume_local_reason

        if self._info is None:
            self._info = self.client.info()
        inspect = self.client.inspect_volume(volume)
        reason = volume_local_reason(getattr(self.client, "base_url", None), self._info, inspect)
        return (None, reason) if reason else (inspect.get("Mountpoint"), None)

    def bind_dir(self, path):
        """``(directory, None)`` for a bind source this process reads and may copy, else ``(None, why not)``."""
        from ansible_collections.ferry.docker.plugins.module_utils._volmeta import local_reason

        if self._info is None:
            self._info = self.client.info()
        info = self._info
        reason = bind_problem(path, info.get("DockerRootDir")) or local_reason(
            getattr(self.client, "base_url", None), info.get("Name"), info.get("SecurityOptions"), "bind", path=path
        )
        return (None, reason) if reason else (path, None)

    def upper(self, container):
        """``(directory, None)``: the container's writable layer on this host (overlay2's upper directory), to
        tell whether it changed since a commit; else ``(None, why not)``."""
        from ansible_collections.ferry.docker.plugins.module_utils._volmeta import local_reason

        if self._info is None:
            self._info = self.client.info()
        inspect = self.client.inspect_container(container)
        driver = inspect.get("GraphDriver") or {}
        if driver.get("Name") != "overlay2":
            return None, f"the storage driver is {driver.get('Name')}, not overlay2"
        path = (driver.get("Data") or {}).get("UpperDir")
        info = self._info
        reason = local_reason(
            getattr(self.client, "base_url", None), info.get("Name"), info.get("SecurityOptions"), "bind", path=path
        )
        return (None, reason) if reason else (path, None)

    def sync(self, src, dest, attributes_since=None, live=False):
        """One pass of ``src`` into ``dest`` on the target (``live``: while the source serves, see ``copy_pass``).
        With ``attributes_since`` (epoch seconds: when the last pass that carried ACLs and xattrs began), the pass
        leaves them alone and a second, listed pass carries them for the entries that changed since then; the
        stats are the first pass's plus the second's."""
        s = self.send
        where = f"{s['user']}@{s['address']}:{dest}"
        timeout = s.get("timeout") or 21600
        args = (s["key_dir"], s["port"], src, s["user"], s["address"], dest)
        if attributes_since is None:
            return copy_pass(["rsync", *rsync_argv(*args)], where, timeout, live=live)
        stats = copy_pass(["rsync", *rsync_argv(*args, attributes=False)], where, timeout)
        try:
            listed = changed_since(src, attributes_since - ATTRIBUTES_MARGIN_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PassFailed(f"listing what changed in {src} failed: {exc}") from None
        if listed:
            more = copy_pass(["rsync", *rsync_argv(*args, listed=True)], where, timeout, listed=listed)
            stats = {key: stats.get(key, 0) + more.get(key, 0) for key in set(stats) | set(more)}
        return stats

    def sync_exact(self, src, dest, send, remove=()):
        """The listed last pass (``listed_delta``'s ``send`` and ``remove``) of ``src`` into ``dest`` on the target;
        its stats."""
        s = self.send
        where = f"{s['user']}@{s['address']}:{dest}"
        timeout = s.get("timeout") or 21600
        if remove:
            command = f"cd -- {shlex.quote(dest)} && {REMOVE_LISTED}"
            try:
                done = subprocess.run(
                    remote_argv(s["key_dir"], s["port"], s["user"], s["address"], command),
                    input=_listed(remove),
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                    env=child_environment(),
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise PassFailed(f"removing in {where} what the source no longer has failed: {exc}") from None
            if done.returncode != 0:
                tail = " | ".join(done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:])
                raise PassFailed(f"removing in {where} what the source no longer has failed: {tail[-300:]}")
        if not send:
            return dict(NO_PASS)
        argv = ["rsync", *rsync_argv(s["key_dir"], s["port"], src, s["user"], s["address"], dest, exact=True)]
        return copy_pass(argv, where, timeout, listed=_listed(send))

    def fetch_tree(self, directory, name, limit=TREE_LIMIT_BYTES):
        """``(tree, base)``: the target's tree of ``name`` (``parse_tree``), kept in its run directory ``directory``
        by its digest after the live passes, and the sha256 of its record (what the target's check once stopped
        starts from, see ``listed_volume_digest``). Raises ValueError (unusable) or OSError (not read)."""
        s = self.send
        command = f"head -c {limit + 1} -- {shlex.quote(tree_path(directory, name))}"
        done = subprocess.run(
            remote_argv(s["key_dir"], s["port"], s["user"], s["address"], command),
            capture_output=True,
            timeout=TREE_FETCH_SECONDS,
            check=False,
            env=child_environment(),
        )
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise OSError(f"reading the target's tree of {name} failed: {tail[0][-200:]}")
        if len(done.stdout) > limit:
            raise ValueError(f"the target's tree of {name} is larger than {limit} bytes")
        return parse_tree(done.stdout), hashlib.sha256(done.stdout).hexdigest()

    def start_unpack_probe(self):
        """Ask the target, in a thread, whether it has zstd to unpack an image stream (once): a capture asks while
        its sources still serve, so that the stream starts at once after the commit (see stream_target)."""
        if self._unpack is not None:
            return
        s, box = self.send, {}

        def ask():
            try:
                box["unpack"] = probe_unpack(
                    s["key_dir"], s["port"], s["user"], s["address"], timeout=min(60, s["timeout"])
                )
            except (SendFailed, OSError, ValueError):
                pass  # unknown: the stream asks first, as without the probe

        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        self._unpack = (thread, box)

    def stream_target(self):
        """Where ``docker_commit_save`` streams an image (its ``stream_to``): the target of the sends, and how it
        unpacks the stream when start_unpack_probe found out."""
        s = self.send
        target = dict(user=s["user"], address=s["address"], port=s["port"], key_dir=s["key_dir"], timeout=s["timeout"])
        if self._unpack is not None:
            thread, box = self._unpack
            thread.join()  # bounded by the probe's own timeout; long done by the time a commit has ended
            if box.get("unpack"):
                target["unpack"] = box["unpack"]
        return target

    def drop_image(self, image_id):
        """Remove ``image_id`` from the target's engine unless a container uses it: ``""``, or why not."""
        s = self.send
        return remove_remote_image(s["key_dir"], s["port"], s["user"], s["address"], image_id)

    def digest(self, path, cache_file, tree=None, save=True):
        """``walk_digest`` of ``path`` with the cache in ``cache_file`` (or none); ``tree`` gets its entries.
        ``save=False``: the last digest of the run (once stopped), whose cache nothing reads again."""
        from ansible_collections.ferry.docker.plugins.module_utils._volmeta import walk_digest

        if cache_file is None:  # no run directory to keep a cache in: a full digest
            return walk_digest(path, tree=tree)
        cache = DigestCache(cache_file)
        cache.load()
        found = walk_digest(path, cache.entries, tree=tree)
        if save:
            cache.save()
        return found


def _local_dir(client, name, info):
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import volume_local_reason

    inspect = client.inspect_volume(name)
    reason = volume_local_reason(getattr(client, "base_url", None), info, inspect)
    return (None, reason) if reason else (inspect.get("Mountpoint"), None)


def prepare(client, groups, missing):
    """On the target: create the volumes each group pre-copies (``groups``: ``id``, ``volumes`` with ``name``,
    ``container`` and ``labels``) and say where their data goes. ``missing(exc)`` tells a 404. Per group:
    ``volumes`` (name -> ``mountpoint``, ``free_bytes``), ``refused`` (name -> why it is copied instead) and
    ``created`` (container -> what to remove on failure, as docker_bundle_restore's RV(created))."""
    info = client.info()
    out = {}
    for group in groups:
        done = out[group["id"]] = {"ok": True, "volumes": {}, "refused": {}, "created": {}}
        for volume in group.get("volumes") or []:
            name = volume["name"]
            if volume.get("path"):
                _prepare_bind(volume, info, done)
                if not done["ok"]:
                    break
                continue
            try:
                client.inspect_volume(name)
                done["refused"][name] = f"volume {name} already exists on this host"
                continue
            except Exception as exc:  # the SDK's errors: only "no such volume" lets the pre-copy create it
                if not missing(exc):
                    done["refused"][name] = f"reading volume {name} failed ({exc})"
                    continue
            client.create_volume(name=name, driver="local", labels=dict(volume.get("labels") or {}) or None)
            created = done["created"].setdefault(
                volume["container"],
                {"container": "", "image": "", "image_id": "", "networks": [], "volumes": [], "bind_paths": []},
            )
            created["volumes"].append(name)
            path, reason = _local_dir(client, name, info)
            if reason:
                client.remove_volume(name)
                created["volumes"].remove(name)
                done["refused"][name] = f"the target reads and writes it through the engine only ({reason})"
                continue
            fs = os.statvfs(path)
            done["volumes"][name] = {"mountpoint": path, "free_bytes": fs.f_bavail * fs.f_frsize}
    return out


def _first_missing(path):
    """The top-most directory ``os.makedirs(path)`` creates (what to remove to undo it)."""
    top = path
    parent = posixpath.dirname(top)
    while parent != top and not os.path.lexists(parent):
        top, parent = parent, posixpath.dirname(parent)
    return top


def _prepare_bind(volume, info, done):
    """A bind directory to copy into: only a path that does not exist here (the run makes it, and removes it
    with everything in it on failure); never a refused one (``bind_problem``)."""
    name, path = volume["name"], posixpath.normpath(volume["path"])
    problem = bind_problem(path, info.get("DockerRootDir"))
    if problem:
        done["refused"][name] = f"not copied: {problem}"
        return
    created = done["created"].setdefault(
        volume["container"],
        {"container": "", "image": "", "image_id": "", "networks": [], "volumes": [], "bind_paths": []},
    )
    if os.path.lexists(path):
        if not os.path.isdir(path) or os.path.islink(path) or os.listdir(path):
            # copying over other data would mix it with the source's: the group does not move
            done.update(
                ok=False,
                phase="precopy",
                member=volume["container"],
                msg=f"bind data of {volume['container']}: {path} exists on this host and is not an empty directory; "
                "remove it, or map the bind elsewhere with migrate_bind_map (or set migrate_bind_data false to use "
                "it as it is). Nothing was changed",
            )
            return
        top, empty = path, True  # an empty directory of this host: emptied again on failure, not removed
    else:
        top, empty = _first_missing(path), False
        os.makedirs(path, mode=0o700)
    created.setdefault("bind_data", []).append(top if not empty else f"{top}/.")
    fs = os.statvfs(path)
    done["volumes"][name] = {
        "mountpoint": path,
        "free_bytes": fs.f_bavail * fs.f_frsize,
        "remove": top if not empty else f"{top}/.",
    }


def path_digest(path, cache_dir, name, docker_root, settle=False, sleep=time.sleep):
    """``(sha256, entries, bytes read)`` of a copied bind directory, as ``volume_digest``."""
    problem = bind_problem(path, docker_root)
    if problem:
        raise ValueError(problem)
    tree_file = tree_path(cache_dir, name) if settle else None
    return _cached_digest(path, cache_path(cache_dir, name.replace("/", "_")), settle, sleep, tree_file)


def _cached_digest(path, cache_file, settle, sleep, tree_file=None):
    """The digest with its cache. ``settle`` (the digest while the source serves) saves the cache for the check
    once the source is stopped (the last digest of the run, whose cache nothing reads again); with ``tree_file``
    the tree it found is kept there as well, for the source's listed last pass."""
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import RACY_SECONDS, walk_digest

    cache = DigestCache(cache_file)
    cache.load()
    stats, tree = {}, {}
    found = walk_digest(path, cache.entries, stats=stats, tree=tree)
    if settle and stats.get("racy"):
        sleep(RACY_SECONDS)
        tree.clear()
        digest, count, read = walk_digest(path, cache.entries, tree=tree)
        found = (digest, count, found[2] + read)
    if settle:
        cache.save()
    if tree_file is not None:
        save_tree(tree_file, tree)
    return found


def volume_digest(client, name, cache_dir, settle=False, sleep=time.sleep):
    """``(sha256, entries, bytes read)`` of a pre-copied volume on this host, with its cache in ``cache_dir``.

    ``settle`` (the digest taken while the source still serves): files written in the last RACY_SECONDS cannot
    be cached yet, so it waits that long and digests again, which reads only those; the check once the source
    is stopped then finds them cached."""
    path, reason = _local_dir(client, name, client.info())
    if reason:
        raise ValueError(f"volume {name} is not a directory this module reads ({reason})")
    tree_file = tree_path(cache_dir, name) if settle else None
    return _cached_digest(path, cache_path(cache_dir, name), settle, sleep, tree_file)
