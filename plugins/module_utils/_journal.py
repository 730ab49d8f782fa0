# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The migration journal: what a run did to a host, written on that host before each step.

One JSON document per run and host, ``<directory>/<run_id>.json``, and a lease file beside it,
``<run_id>.lease``, whose modification time the run renews as it progresses. Both survive the
controller: a guard process on the host (``_guard``) reads them when the lease lapses, and a later
run or recover.yml reads them to resume or roll back.

The document::

    {"version": 1, "run_id": "...", "role": "source" | "target", "created": <epoch>, "updated": <epoch>,
     "guard": {"status": "armed" | "fired" | "disarmed" | "none", "pid": <int>, "timeout": <s>, ...},
     "targets": [{"host": ..., "address": ..., "port": ..., "user": ..., "key": ..., "known_hosts": ...}],
     "containers": {"<name>": {"state_before": "running" | "paused" | ..., "phase": "...",
                               "status": "in_progress" | "migrated" | "rolled_back" | "needs_decision",
                               "target": "<host>", "target_name": "<name>", "history": [...]}}}

Writes are atomic (a temporary file in the same directory, fsync, rename, fsync of the directory)
and serialised with an exclusive ``flock`` on ``<run_id>.lock``. Only the standard library is used:
the guard process imports this file outside Ansible.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

AUTHORIZED_KEYS_LOCK_SECONDS = 30
_LOGIN_USER = re.compile(r"^[^\s/:-][^\s/:]*$")  # a passwd name: one word, no path; $3 is quoted anyway

# The one edit of a login user's authorized_keys, as its owner: under flock(1) on the user's ~/.ssh (two
# runs may move containers onto the same host at once, and a guard may remove its key meanwhile; an
# unlocked read-modify-write of one loses the other's line), the lines holding $1 as whole words (a key's
# blob, or a comment ending the line: "... from host1" never drops "... from host10") are left out, $2 (if
# any) is appended, and the result replaces the file in one rename, mode 0600. $3 names the user whose file
# it is (empty: the one running it). Without flock(1) the edit still happens.
_AUTHORIZED_KEYS_SCRIPT = (
    'umask 077 && h=$HOME && if [ -n "$3" ]; then h=$(getent passwd -- "$3" | cut -d: -f6) && [ -n "$h" ] '
    '|| { echo "no home directory for user $3" >&2; exit 1; }; fi && d="$h/.ssh" && f="$d/authorized_keys" && '
    '{ [ -n "$2" ] || [ -f "$f" ] || exit 0; } && mkdir -p "$d" && exec 9<"$d" && '
    '{ ! command -v flock >/dev/null || flock -w %d 9 || { echo "$d is locked by another edit" >&2; exit 1; }; } && '
    't=$(mktemp "$f.XXXXXX") && '
    '{ [ ! -f "$f" ] || DROP="$1" awk \'index($0 " ", ENVIRON["DROP"] " ") == 0\' "$f" > "$t"; } && '
    '{ [ -z "$2" ] || printf \'%%s\\n\' "$2" >> "$t"; } && chmod 600 "$t" && '
    '{ [ -z "$3" ] || [ "$(id -un)" = "$3" ] || chown -- "$3" "$t"; } && mv -f -- "$t" "$f"'
    % AUTHORIZED_KEYS_LOCK_SECONDS
)


def authorized_keys_argv(drop, add="", user="", then=""):
    """``sh -c`` argv that edits authorized_keys under a lock: drop the lines holding ``drop``, append ``add``.

    ``user``: whose file (empty: the user running it). ``then``: a command run after a successful edit.
    """
    if not drop or "\n" in drop or "\n" in add:
        raise ValueError("authorized_keys: the line to drop must be one non-empty line, and the line to add one line")
    if user and not _LOGIN_USER.match(user):
        raise ValueError(f"authorized_keys: {user!r} is not a login user name")
    script = _AUTHORIZED_KEYS_SCRIPT + (f" && {then}" if then else "")
    return ["sh", "-c", script, "sh", drop, add, user]


# The journal itself works without the Docker SDK, and its steps start about 0.1 s sooner without importing
# it; only SourceOps (the guard putting sources back, recover.yml) needs it, and imports it then. This file
# also runs on its own as the guard process (guard_main), so it imports nothing of the collection.
class _MissingDockerException(Exception):
    """Stand-in so that ``except docker_exception()`` works when the SDK is missing."""


def docker_sdk():
    """The Docker SDK for Python, imported on first use; None when it is not installed."""
    try:
        import docker
        import docker.errors
    except ImportError:
        return None
    return docker


def docker_exception():
    """The SDK's DockerException (the stand-in when the SDK is missing), for ``except`` clauses."""
    sdk = docker_sdk()
    return sdk.errors.DockerException if sdk is not None else _MissingDockerException


VERSION = 1
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_JOURNAL_BYTES = 4 * 1024 * 1024
# The phases of one container, in order. From "restore" on, the target may hold a created or
# started copy, so putting the source back first needs the target copy stopped.
PHASES = ("preflight", "precopy", "stop", "capture", "transfer", "restore", "health", "cutover", "done")
TARGET_MAY_RUN = frozenset(("restore", "health", "cutover"))
OPEN_STATUSES = frozenset(("in_progress", "needs_decision"))


class JournalError(Exception):
    """A journal that cannot be read or written; the message names the file and what to do."""


def check_run_id(run_id):
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise JournalError(
            f"run id {run_id!r} is not valid: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return run_id


def new_document(run_id, role, now=None):
    now = time.time() if now is None else now
    return {
        "version": VERSION,
        "run_id": run_id,
        "role": role,
        "created": now,
        "updated": now,
        "guard": {"status": "none"},
        "targets": [],
        "containers": {},
    }


def validate(doc, path="journal"):
    """Raise JournalError unless ``doc`` has the journal's shape; return it."""
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise JournalError(f"{path} is not a ferry.docker journal of version {VERSION}")
    for key, kind in (("run_id", str), ("guard", dict), ("targets", list), ("containers", dict)):
        if not isinstance(doc.get(key), kind):
            raise JournalError(f"{path}: '{key}' is missing or not a {kind.__name__}")
    check_run_id(doc["run_id"])
    for name, entry in doc["containers"].items():
        if not isinstance(entry, dict) or entry.get("phase") not in PHASES:
            raise JournalError(f"{path}: container {name!r} has no valid phase")
    return doc


def record(doc, name, now=None, **changes):
    """Update the entry of container ``name`` (created if new) and append the change to its history."""
    now = time.time() if now is None else now
    entry = doc["containers"].setdefault(name, {"phase": "preflight", "status": "in_progress", "history": []})
    if "phase" in changes and changes["phase"] not in PHASES:
        raise JournalError(f"unknown phase {changes['phase']!r} for {name}; one of {', '.join(PHASES)}")
    entry.update(changes)
    entry.setdefault("history", []).append(dict(changes, at=round(now, 3)))
    del entry["history"][:-50]
    doc["updated"] = now
    return entry


def open_containers(doc):
    """Names of the containers whose migration the run started and did not finish."""
    return sorted(name for name, entry in doc["containers"].items() if entry.get("status") in OPEN_STATUSES)


class Journal:
    """The journal and lease of one run on this host."""

    def __init__(self, directory, run_id):
        self.directory = directory
        self.run_id = check_run_id(run_id)
        self.path = os.path.join(directory, f"{run_id}.json")
        self.lease_path = os.path.join(directory, f"{run_id}.lease")
        self.lock_path = os.path.join(directory, f"{run_id}.lock")

    def ensure_directory(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    @contextlib.contextmanager
    def locked(self):
        self.ensure_directory()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def exists(self):
        return os.path.exists(self.path)

    def load(self):
        """The document, or None when this run has no journal here."""
        return read_document(self.path)

    def save(self, doc):
        write_atomically(self.path, json.dumps(doc, indent=1, sort_keys=True).encode())

    def update(self, change, role="source"):
        """Apply ``change(doc)`` under the lock and write the result; returns the document."""
        with self.locked():
            doc = self.load() or new_document(self.run_id, role)
            change(doc)
            doc["updated"] = time.time()
            self.save(doc)
            return doc

    def renew(self, now=None):
        """Renew the lease: its modification time is the last sign of life of the run."""
        self.ensure_directory()
        fd = os.open(self.lease_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        now = time.time() if now is None else now
        os.utime(self.lease_path, (now, now))

    def lease_age(self, now=None):
        """Seconds since the lease was last renewed; None when there is no lease."""
        try:
            renewed = os.stat(self.lease_path).st_mtime
        except FileNotFoundError:
            return None
        return (time.time() if now is None else now) - renewed

    def drop_lease(self):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.lease_path)


def read_document(path):
    """A journal document from ``path`` (None if absent), bounded, never following a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JournalError(f"{path} is a symbolic link; a journal must be a regular file") from exc
        raise JournalError(f"cannot open {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        if not os.path.isfile(path) or os.fstat(handle.fileno()).st_size > MAX_JOURNAL_BYTES:
            raise JournalError(f"{path} is not a regular file of at most {MAX_JOURNAL_BYTES} bytes")
        data = handle.read(MAX_JOURNAL_BYTES + 1)
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise JournalError(f"{path} is not valid JSON ({exc}); move it away to start over") from exc
    return validate(doc, path)


def write_atomically(path, data, mode=0o600):
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=".journal-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def runs(directory):
    """Every journal document in ``directory``, oldest first; unreadable ones as ``{"error": ...}``."""
    found = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = os.path.join(directory, name)
        try:
            found.append(read_document(path))
        except JournalError as exc:
            found.append({"run_id": name[: -len(".json")], "error": str(exc)})
    return sorted(found, key=lambda doc: (doc.get("created", 0), doc.get("run_id", "")))


def summary(doc, alive):
    """What an operator (and recover.yml) needs of one journal: the run, its guard, and each container's
    phase, status and state before the run; ``open`` lists the containers the run did not finish."""
    if doc.get("error"):
        return {"run_id": doc.get("run_id", ""), "error": doc["error"], "open": [], "containers": {}}
    return {
        "run_id": doc["run_id"],
        "created": doc.get("created", 0),
        "updated": doc.get("updated", 0),
        "guard": doc["guard"].get("status", "none"),
        "guard_alive": bool(alive(doc)),
        "targets": [target.get("host") for target in doc.get("targets", [])],
        # the run keys on the targets, so that recover.yml removes those the guard could not reach
        "keys": [
            {"host": target.get("host"), "user": target.get("user") or "root", "comment": target["key_comment"]}
            for target in doc.get("targets", [])
            if target.get("key_comment") and target.get("host")
        ],
        "containers": {
            name: {
                key: entry.get(key)
                for key in ("phase", "status", "state_before", "target", "target_name", "target_volumes", "guard")
            }
            for name, entry in doc["containers"].items()
        },
        "open": open_containers(doc),
    }


def unfinished(directory, alive):
    """Summaries of the journals in ``directory`` that still have open containers, oldest first."""
    found = [summary(doc, alive) for doc in runs(directory)]
    return [item for item in found if item["open"] or item.get("error")]


def holders(directory, containers, run_id, alive):
    """Other runs whose guard is still watching one of ``containers``: ``[(run_id, container)]``.

    ``alive(doc)`` tells whether the guard process of a journal still runs. An armed journal whose
    guard is gone (the host rebooted) holds nothing: its containers are for this run to resume or
    roll back, as the journal says.
    """
    taken = []
    for doc in runs(directory):
        if doc.get("error") or doc["run_id"] == run_id or doc["guard"].get("status") != "armed" or not alive(doc):
            continue
        for name in containers:
            if doc["containers"].get(name, {}).get("status") in OPEN_STATUSES:
                taken.append((doc["run_id"], name))
    return taken


# --------------------------------------------------------------------------------------------- the guard
#
# A process detached from the run (its own session, so a lost controller or SSH connection does not
# end it) that watches the lease of one run on the source host. Run as a script:
#     python3 <copy of this file> guard <journal directory> <run id>
# It needs the Docker SDK for Python (the collection's requirement on managed hosts) and ssh.

GUARD_POLL_SECONDS = 1.0
# Disarming sends the guard this signal after it has recorded the disarm, so the guard exits at once
# instead of at its next poll. The guard blocks it and waits for it in place of sleeping.
WAKE_SIGNAL = signal.SIGUSR1
# Every step of a run on the source host carries this variable in its environment (the role sets it
# on the tasks of a migration). While a process with it runs, the run is alive even if it has not
# renewed the lease for a while: a long capture or rsync renews it that way. When the controller is
# lost, its SSH sessions end, the step's processes end with them, and the lease lapses.
RUN_ENVIRONMENT = "FERRY_MIGRATE_RUN"
# The label of every container this collection restores (see _runconfig): the guard removes only those.
DIGEST_LABEL = "ferry.docker.config-digest"
# The repository of the images migrations commit (see the migrate role).
MIGRATE_IMAGE_PREFIX = "ferry-migrate/"
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
SSH_OPTIONS = (
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
)
TARGET_COMMAND_SECONDS = 120
# The grace the guard gives a target's copy before Docker kills it. Not the container's own stop timeout: the
# copy never became the service (its migration is open), what it wrote is removed with it, and every second
# here is a second more that the service is down on both hosts.
TARGET_STOP_SECONDS = 2


# The fire plan's removals on a target: the TargetOps method, and what the guard's note calls what it removes.
_DROPS = {
    "drop_target_paths": ("drop_paths", "the bind data copied to {names} on {host}"),
    "drop_target_volumes": ("drop_volumes", "the volumes the run made on {host}: {names}"),
    "drop_target_images": ("drop_images", "the image the run streamed to {host}: {names}"),
}


def decide(doc, lease_age):
    """What the guard does now: "exit" (nothing to guard), "fire" (the lease lapsed) or "wait"."""
    if doc is None or doc["guard"].get("status") != "armed":
        return "exit"
    if lease_age is None or lease_age > doc["guard"].get("timeout", 120):
        return "fire"
    return "wait"


def fire_plan(doc, target_stopped=False):
    """For each open container: ``(name, steps)`` where steps are ``("stop_target", target, name, volumes)``,
    ``("restore_source", state_before)`` or ``("hold", reason)``; for each migrated container whose
    cutover did not happen, ``("cutover_source", mode)``; pure, in a fixed order.

    The source is put back only when no copy can be running on the target: when the migration had
    not reached the restore phase yet, or after the target's copy has been stopped. Stopping it is
    the first step; if that fails the executor turns the remaining steps into a hold.
    """
    plan = []
    targets = {target.get("host"): target for target in doc.get("targets", [])}
    # Migrated, but the run was lost before its cutover: the copy serves on the target, so the source
    # is the one to stop (never two running copies).
    for name, entry in sorted(doc["containers"].items()):
        if entry.get("status") == "migrated" and entry.get("phase") == "cutover" and entry.get("cutover") != "keep":
            plan.append((name, [("cutover_source", entry.get("cutover") or "stop")]))
    for name in open_containers(doc):
        entry = doc["containers"][name]
        steps = []
        if entry.get("phase") in TARGET_MAY_RUN and not target_stopped:
            target, target_name = entry.get("target"), entry.get("target_name")
            if target not in targets or not target_name:
                plan.append(
                    (name, [("hold", f"the phase was {entry['phase']} and the journal names no target to stop")])
                )
                continue
            steps.append(("stop_target", target, target_name, tuple(entry.get("target_volumes") or ())))
        if entry.get("precopied") and entry.get("target") in targets:
            # volumes a pre-copy created on the target, unused by any container until the restore: removed
            steps.append(("drop_target_volumes", entry["target"], tuple(entry["precopied"])))
        if entry.get("precopied_paths") and entry.get("target") in targets:
            steps.append(("drop_target_paths", entry["target"], tuple(entry["precopied_paths"])))
        if entry.get("streamed_images") and entry.get("target") in targets:
            # an image the capture loaded straight into the target's engine, untagged until the restore tags it
            steps.append(("drop_target_images", entry["target"], tuple(entry["streamed_images"])))
        steps.append(("restore_source", entry.get("state_before", "running")))
        plan.append((name, steps))
    return plan


def ssh_argv(target, command):
    """ssh with the run's key to ``target`` (a journal target), running ``command`` (a string)."""
    argv = ["ssh", *SSH_OPTIONS, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes"]
    if target.get("key"):
        argv += ["-i", target["key"]]
    if target.get("known_hosts"):
        argv += ["-o", f"UserKnownHostsFile={target['known_hosts']}"]
    argv += ["-p", str(target.get("port") or 22), "-l", target.get("user") or "root", target["address"], command]
    return argv


def as_root(target, script):
    """``script`` (shell) as it must run on ``target`` to act as root: as it is for a root login, else through
    ``sudo -n``. The run key logs in as the user Ansible logs in as, which may not be root (Ansible then becomes
    root with sudo); the engine's socket, other users' processes and the run's directories need root. Where sudo
    asks for a password (or a tty), the command fails, as it would without sudo, and the caller says so."""
    if (target.get("user") or "root") == "root":
        return script
    return "sudo -n sh -c " + shlex.quote(script)


class TargetOps:
    """What the guard does on a target host, over ssh with the run's key: as root (``as_root``), except the edit
    of the login user's own authorized_keys."""

    def __init__(self, targets, run=None):
        self.targets = {target["host"]: target for target in targets}
        self.run = run or _run

    def _root_argv(self, host, script):
        target = self.targets[host]
        return ssh_argv(target, as_root(target, script))

    def stop(self, host, name, volumes=()):
        """Stop ``name`` on ``host``; True when it is not running afterwards (also when absent).

        A stopped copy that this collection restored (it carries the config-digest label) is then removed
        with ``volumes``, the named volumes the run created for it (preflight refused volumes that existed
        before), so that a later run finds the target as it was. Anything else is left in place.
        """
        quoted = shlex.quote(name)
        drop = " ".join(shlex.quote(volume) for volume in volumes)
        script = (
            f"docker stop -t {TARGET_STOP_SECONDS} {quoted} >/dev/null 2>&1; "
            f"state=$(docker inspect -f '{{{{.State.Running}}}}' {quoted} 2>&1) || "
            "{ case $state in *'No such'*) exit 0;; esac; echo \"$state\" >&2; exit 3; }; "
            '[ "$state" = false ] || exit 4; '
            f"label=$(docker inspect -f '{{{{index .Config.Labels \"{DIGEST_LABEL}\"}}}}' {quoted}) && "
            f"image=$(docker inspect -f '{{{{.Config.Image}}}}' {quoted}) && "
            f'[ -n "$label" ] && [ "$label" != "<no value>" ] && docker rm {quoted} >/dev/null && '
            f'for volume in {drop}; do docker volume rm "$volume" >/dev/null 2>&1; done; '
            # the tag a migration gives its committed image: a stale one would make the next run's load
            # refuse to move it; removing a tag leaves an image that something else still uses
            f'case $image in {MIGRATE_IMAGE_PREFIX}*) docker image rm "$image" >/dev/null 2>&1;; esac; exit 0'
        )
        code, _out, err = self.run(self._root_argv(host, script))
        return code == 0, err.strip()[-300:]

    def _drop(self, host, kind, names):
        """``docker <kind> rm`` each of ``names`` (already quoted or safe) on ``host``; ``(True, "")`` when none of
        them is left (the engine refuses one that a container uses)."""
        script = (
            f'left=; for name in {" ".join(names)}; do docker {kind} rm "$name" >/dev/null 2>&1 || '
            f'{{ docker {kind} inspect "$name" >/dev/null 2>&1 && left="$left $name"; }}; done; '
            '[ -z "$left" ] || { echo "still there:$left" >&2; exit 5; }'
        )
        code, _out, err = self.run(self._root_argv(host, script))
        return code == 0, err.strip()[-300:]

    def drop_volumes(self, host, volumes):
        """Remove ``volumes`` on ``host`` where no container uses them; ``(True, "")`` when none of them is left."""
        return self._drop(host, "volume", [shlex.quote(volume) for volume in volumes])

    def drop_images(self, host, images):
        """Remove the images ``images`` (IDs only) from ``host`` unless a container uses them; ``(True, "")`` when
        none of them is left."""
        ids = [image for image in images if _IMAGE_ID.match(image)]
        if len(ids) != len(images):
            return False, f"refused to remove {sorted(set(images) - set(ids))}: not image IDs"
        return self._drop(host, "image", ids)

    def drop_paths(self, host, paths):
        """Remove the bind directories a pre-copy made on ``host`` (``<dir>/.``: one that was there empty, emptied
        again). Only absolute paths of two components or more, without ``..``."""
        safe = [
            p for p in paths if p.startswith("/") and ".." not in p.split("/") and len(p.strip("/").split("/")) >= 2
        ]
        if len(safe) != len(paths):
            return False, f"refused to remove {sorted(set(paths) - set(safe))}"
        parts = []
        for path in safe:
            if path.endswith("/."):
                base = shlex.quote(path[:-2])
                parts.append(f"[ ! -d {base} ] || find {base} -xdev -mindepth 1 -delete")
            else:
                parts.append(f"rm -rf --one-file-system -- {shlex.quote(path)}")
        code, _out, err = self.run(self._root_argv(host, " && ".join(parts)))
        return code == 0, err.strip()[-300:]

    def busy(self, host, run_id):
        """Whether a step of ``run_id`` runs on ``host`` (a process with the run's environment marker)."""
        marker = shlex.quote(f"{RUN_ENVIRONMENT}={run_id}")
        script = (
            "for f in /proc/[0-9]*/environ; do "
            f"tr '\\0' '\\n' 2>/dev/null < \"$f\" | grep -qxF {marker} && exit 0; done; exit 1"
        )
        code, _out, _err = self.run(self._root_argv(host, script))
        return code == 0

    def remove_key(self, host, comment):
        """Remove the lines holding ``comment`` from authorized_keys on ``host``; True if done."""
        try:  # the same locked edit as the transfer role's (another run may be adding its key)
            script = shlex.join(authorized_keys_argv(comment))
        except ValueError as exc:
            return False, str(exc)
        code, _out, err = self.run(ssh_argv(self.targets[host], script))
        return code == 0, err.strip()[-300:]


class SourceOps:
    """What the guard does to the source containers, through the Docker engine on this host."""

    def __init__(self, base_url, client=None, announce=None):
        if client is None:
            docker = docker_sdk()
            if docker is None:
                raise JournalError("the guard needs the Docker SDK for Python (python3-docker) on this host")
            client = docker.APIClient(base_url=base_url, version="auto", timeout=60)
        self.client = client
        # ``_neighbour.announce``: after a start, the host asks once for the container's bridge addresses, so that
        # the clients that waited through the outage are not held another second (None: not announced)
        self.announce = announce
        self.announced = {}  # container name -> the interfaces asked on, or why nothing was sent

    def restore(self, name, state_before):
        """Put container ``name`` back in ``state_before``; the state it is in afterwards (``absent`` when the
        container was removed since the run: there is nothing to put back, and nothing waits for a decision)."""
        try:
            state = self.client.inspect_container(name)["State"]
        except docker_exception() as exc:
            if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                return "absent"
            raise
        if state_before in ("running", "paused"):
            if state.get("Paused") and state_before == "running":
                self.client.unpause(name)
            elif not state.get("Running"):
                self.client.start(name)
                if self.announce is not None:
                    self.announced[name] = self.announce(self.client, name)  # never raises: the source runs anyway
            if state_before == "paused" and not self.client.inspect_container(name)["State"].get("Paused"):
                self.client.pause(name)
        state = self.client.inspect_container(name)["State"]
        return "paused" if state.get("Paused") else state.get("Status", "unknown")

    def cut_over(self, name, mode):
        """Stop (``stop``) or remove, volumes kept (``remove``), a source whose copy serves; its state."""
        if mode == "remove":
            self.client.remove_container(name, force=True, v=False)
            return "removed"
        self.client.stop(name)
        return self.client.inspect_container(name)["State"].get("Status", "unknown")


# What a run keeps in its key directory (transfer role, keys_up.yml): removed by name, never by a tree walk.
KEY_DIR_FILES = ("id_ed25519", "id_ed25519.pub", "known_hosts", "rsync.progress")


def close_shared_connections(key_dir, run=None):
    """End the SSH connections the run's rsync shares (control sockets ``cm-*`` in its key directory, see
    ``_transfer.ssh_command``) and remove their sockets: nothing of the run's key outlives its removal."""
    run = run or _run
    try:
        names = [name for name in os.listdir(key_dir) if name.startswith("cm-")]
    except OSError:
        return
    for name in names:
        path = os.path.join(key_dir, name)
        run(["ssh", "-o", f"ControlPath={path}", "-O", "exit", "ferry-shared-connection"], timeout=10)
        with contextlib.suppress(OSError):
            os.unlink(path)


def remove_run_keys(doc, target_ops, whole_dir=False):
    """Remove the run key from every target of ``doc`` (over ssh, with the key itself) and the key pair on
    this host; ``whole_dir`` also removes the key directory's other files (KEY_DIR_FILES) and the directory.

    ``[{host, removed, error}]`` per target with a key comment; a key pair that could not be removed is
    listed with ``host`` "localhost"."""
    keys, key_paths = [], []
    for target in doc.get("targets", []):
        if target.get("key_comment"):
            removed, error = target_ops.remove_key(target["host"], target["key_comment"])
            keys.append({"host": target["host"], "removed": removed, "error": error})
        if target.get("key") and target["key"] not in key_paths:
            key_paths.append(target["key"])
    for key in key_paths:
        close_shared_connections(os.path.dirname(key))
        paths = [key, key + ".pub"]
        if whole_dir:
            paths += [os.path.join(os.path.dirname(key), name) for name in KEY_DIR_FILES]
        for path in paths:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                os.unlink(path)
        if whole_dir:
            try:
                os.rmdir(os.path.dirname(key))
            except FileNotFoundError:
                pass
            except OSError as exc:
                keys.append({"host": "localhost", "removed": False, "error": f"{os.path.dirname(key)}: {exc}"})
    return keys


def fire(journal, source_ops, target_ops, now=time.time, force=False, target_stopped=False):
    """Carry out fire_plan under the journal's lock and record every outcome; the new document.

    Re-checks under the lock that the guard is still armed and the lease still lapsed, so a run that
    renews or disarms at the same moment either wins or finds the guard fired. ``force`` (recover.yml)
    rolls back whatever is open whatever the guard's state; ``target_stopped`` says that the caller has
    already stopped the target copies.
    """
    with journal.locked():
        doc = journal.load()
        lease_age = journal.lease_age()
        if doc is None or (not force and decide(doc, lease_age) != "fire"):
            return doc
        started, results = now(), []
        for name, steps in fire_plan(doc, target_stopped=target_stopped):
            outcome, notes = "rolled_back", []
            for step in steps:
                if step[0] == "hold":
                    outcome, detail = "needs_decision", step[1]
                elif step[0] == "cutover_source":
                    try:
                        detail = f"source is {source_ops.cut_over(name, step[1])} (cutover {step[1]} of a migrated run)"
                        outcome = "migrated"
                    except (docker_exception(), OSError, KeyError) as exc:
                        outcome, detail = "needs_decision", f"could not cut over the source: {exc}"
                elif step[0] == "stop_target":
                    stopped, error = target_ops.stop(step[1], step[2], step[3])
                    if not stopped:
                        outcome = "needs_decision"
                        detail = (
                            f"could not stop {step[2]} on {step[1]} ({error or 'no answer'}): the source stays as it is"
                        )
                        break
                    detail = f"stopped {step[2]} on {step[1]}"
                elif step[0] in _DROPS:
                    method, what = _DROPS[step[0]]
                    dropped, error = getattr(target_ops, method)(step[1], step[2])
                    text = what.format(host=step[1], names=", ".join(step[2]))
                    notes.append(f"removed {text}" if dropped else f"could not remove {text} ({error})")
                else:
                    try:
                        detail = f"source is {source_ops.restore(name, step[1])} (was {step[1]} before the run)"
                    except (docker_exception(), OSError, KeyError) as exc:
                        outcome, detail = "needs_decision", f"could not put the source back: {exc}"
                    asked = source_ops.announced.get(name)
                    if isinstance(asked, list) and asked:
                        notes.append(f"asked for its addresses on {', '.join(asked)}")
            detail = "; ".join([detail, *notes])
            changes = {"phase": "done"} if outcome == "migrated" else {}
            record(doc, name, now(), status=outcome, guard=detail, **changes)
            results.append({"container": name, "status": outcome, "detail": detail})
        # the whole key directory: once the key is gone its known_hosts serves no step, and a run whose
        # controller was lost has no disarm that would remove it later
        keys = remove_run_keys(doc, target_ops, whole_dir=True)
        # when it started and how old the lease was then: what an operator needs to tell a late guard from slow steps
        doc["guard"].update(
            status="fired", firing_at=started, lease_age=lease_age, fired_at=now(), results=results, keys=keys
        )
        doc["updated"] = now()
        journal.save(doc)
        return doc


def run_busy(run_id, proc="/proc", own_pid=None):
    """The pid (a string) of a process of this host, other than ``own_pid``, that runs a step of ``run_id``;
    None when there is none."""
    marker = f"{RUN_ENVIRONMENT}={run_id}".encode()
    own_pid = os.getpid() if own_pid is None else own_pid
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit() and int(name) != own_pid]
    except OSError:
        return False
    for pid in pids:
        try:
            with open(os.path.join(proc, pid, "environ"), "rb") as handle:
                if marker in handle.read().split(b"\0"):
                    return pid
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return None


def command_line(pid, proc="/proc", limit=200):
    """``pid <pid> (<its command line>)``, for the guard's log; the pid alone once the process is gone."""
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
            words = handle.read(limit).split(b"\0")
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({' '.join(word.decode(errors='replace') for word in words if word)[:limit]})"


# A step on a target runs as several module processes one after the other, with a gap of up to a second
# or two between them in which none carries the run's marker. The guard fires only once the targets have
# looked idle for this long, checked at every poll.
TARGET_IDLE_SECONDS = 8


def target_watched(doc):
    """Whether the run may work on a target the guard can reach (an open container in a target phase)."""
    reachable = {target.get("host") for target in doc.get("targets", []) if target.get("key")}
    return any(
        doc["containers"][name].get("phase") in TARGET_MAY_RUN and doc["containers"][name].get("target") in reachable
        for name in open_containers(doc)
    )


def target_busy(doc, target_ops):
    """The target where a step of the run still works (the restore or the health check of a container whose
    migration is open runs there, not on this host), or None. Only targets the journal can reach count."""
    hosts = sorted(
        {
            doc["containers"][name].get("target")
            for name in open_containers(doc)
            if doc["containers"][name].get("phase") in TARGET_MAY_RUN
        }
    )
    reachable = {target.get("host") for target in doc.get("targets", []) if target.get("key")}
    return next((host for host in hosts if host in reachable and target_ops.busy(host, doc["run_id"])), None)


def watch(
    journal,
    source_ops,
    target_ops,
    sleep=time.sleep,
    poll=GUARD_POLL_SECONDS,
    busy=run_busy,
    clock=time.monotonic,
    log=lambda line: None,
):
    """The guard's loop: wait while the lease is fresh or a step of the run works (here, or on a target
    it restores to, which must look idle for TARGET_IDLE_SECONDS), fire once the lease lapses, exit when
    disarmed. ``log`` gets a line each time the reason it waits or acts changes (the guard's log file), so
    that an operator can tell why a guard acted when it did.

    The targets are asked from TARGET_IDLE_SECONDS before the lease would lapse, so that the idle window
    has already passed when it lapses: the guard acts at the lapse, not TARGET_IDLE_SECONDS later.

    A poll that fails (an unreadable journal, a full disk, a bug) is logged and tried again at the next
    poll: the guard is the only thing left that can put the sources back, so it never ends on an error.
    """
    state = {"idle_since": None, "said": None}

    def say(reason):
        if reason != state["said"]:
            state["said"] = reason
            log(reason)

    def poll_once():
        working_here = busy(journal.run_id)
        if working_here:
            journal.renew()
        doc = journal.load()
        lease_age = journal.lease_age()
        action = decide(doc, lease_age)
        closing = action == "fire" or (
            action == "wait"
            and lease_age is not None
            and lease_age > doc["guard"].get("timeout", 120) - TARGET_IDLE_SECONDS
        )
        if working_here:
            say(f"waits: a step of the run works on this host: {command_line(working_here)}")
        elif not closing and action == "wait":
            say("waits: the lease is fresh")
        if not closing:
            state["idle_since"] = None  # renewed: a later lapse counts idleness afresh
        elif target_watched(doc):
            working_there = target_busy(doc, target_ops)
            if working_there:
                journal.renew()
                state["idle_since"], action = None, "wait"
                say(f"waits: a step of the run works on {working_there}")
            else:
                if state["idle_since"] is None:
                    state["idle_since"] = clock()
                if action == "fire" and clock() - state["idle_since"] < TARGET_IDLE_SECONDS:
                    action = "wait"
                say("waits: the lease is closing and the targets look idle")
        if action == "exit":
            say("exits: " + ("the journal is gone" if doc is None else f"the guard is {doc['guard'].get('status')}"))
            return "exit"
        if action == "fire":
            say("fires: " + ("no lease" if lease_age is None else f"the lease is {lease_age:.1f} s old"))
            doc = fire(journal, source_ops, target_ops)
            if doc is not None and doc["guard"].get("status") == "fired":
                return "fired"
        return None

    while True:
        try:
            outcome = poll_once()
        except Exception as exc:  # logged; the next poll tries again
            say(f"a poll failed, tries again: {type(exc).__name__}: {exc}")
            outcome = None
        if outcome:
            return outcome
        sleep(poll)


def guard_alive(doc, proc="/proc"):
    """Whether the guard process recorded in ``doc`` still runs (and is this run's guard)."""
    pid = (doc or {}).get("guard", {}).get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
            cmdline = handle.read().split(b"\0")
    except OSError:
        return False
    return b"guard" in cmdline and doc["run_id"].encode() in cmdline


def spawn(script, directory, run_id, python):
    """Start ``python script guard directory run_id`` detached (new session, no terminal) and return.

    Double fork: the guard is re-parented to init and outlives the module, the SSH session and the
    controller. Its output goes to ``<run_id>.guard.log`` in the journal directory.
    """
    log_path = os.path.join(directory, f"{run_id}.guard.log")
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            null = os.open(os.devnull, os.O_RDONLY)
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, 1024)
            environment = {k: v for k, v in os.environ.items() if k != RUN_ENVIRONMENT}
            os.execve(python, [python, script, "guard", directory, run_id], environment)
        finally:
            os._exit(127)
    os.waitpid(child, 0)


def _run(argv, timeout=TARGET_COMMAND_SECONDS):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 255, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def wakeable_sleep(seconds):
    """Sleep up to ``seconds``; return True at once if WAKE_SIGNAL arrives (it must be blocked: see
    ``block_wake_signal``), False after the full time. The signal is taken, so it wakes one sleep only."""
    return signal.sigtimedwait([WAKE_SIGNAL], seconds) is not None


def block_wake_signal():
    """Block WAKE_SIGNAL in this thread, so that it waits for ``wakeable_sleep`` instead of killing the process."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [WAKE_SIGNAL])


def wake_guard(doc):
    """Wake the guard recorded in ``doc`` (only if it is this run's guard); return whether it was signalled."""
    if not guard_alive(doc):
        return False
    try:
        os.kill(doc["guard"]["pid"], WAKE_SIGNAL)
    except OSError:
        return False
    return True


def neighbour_path(directory, run_id):
    """Where the guard finds its copy of ``_neighbour`` (written beside its script when it is armed)."""
    return os.path.join(directory, f"{run_id}.neighbour.py")


def load_announce(path):
    """``announce`` of the ``_neighbour`` copy at ``path``, or None when it is missing or does not load."""
    import importlib.util

    try:
        spec = importlib.util.spec_from_file_location("ferry_guard_neighbour", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.announce
    except Exception:  # an older run's directory, a damaged copy: the guard puts sources back without it
        return None


def guard_main(argv):
    """``guard <journal directory> <run id>``: the guard process."""
    directory, run_id = argv
    block_wake_signal()  # before it records its pid: a disarm may signal it from then on
    journal = Journal(directory, run_id)

    def armed(doc):
        doc["guard"]["pid"] = os.getpid()
        doc["guard"]["started_at"] = time.time()

    doc = journal.update(armed)
    announce = load_announce(neighbour_path(directory, run_id))
    source_ops = SourceOps(doc["guard"].get("docker_host") or "unix:///var/run/docker.sock", announce=announce)

    def log(line):  # the guard's log file; a full disk must not stop the guard
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write(f"ferry.docker guard {run_id}: {line} at {stamp}\n")
            sys.stdout.flush()

    outcome = watch(journal, source_ops, TargetOps(doc.get("targets", [])), sleep=wakeable_sleep, log=log)
    log(outcome)
    return 0


if __name__ == "__main__":  # pragma: no cover - the guard process
    if len(sys.argv) != 4 or sys.argv[1] != "guard":
        sys.stderr.write("usage: _journal.py guard <journal directory> <run id>\n")
        raise SystemExit(2)
    raise SystemExit(guard_main(sys.argv[2:]))
