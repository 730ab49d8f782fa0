# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The early restore's handoff: the capture on the source tells the restore already waiting on the target
what it captured, over the run key, so that no Ansible task starts between the two while the service is down.

Each group has one handoff file beside its receiving directory on the target (``<dir>.handoff``). The capture
writes it (``write_command``) after the group's bundle is there and after the journal says ``restore``, so that
a guard that fires from then on stops the copy before it puts the source back. The restore claims it by
renaming it (one reader, once), and reads it as hostile: only the fields a capture returns for the restore (the
image ID, whether the image came straight into the engine, each pre-copied volume's digest), each checked, and
only for the members and volumes the controller named when it started the restore.

Before the handoff, a capture says once the last passes of its volumes are done (``announce_ready``:
``<dir>.ready``, the names of those volumes). The waiting restore then starts their digests at once, beside the
image's stream and the capture's last steps (the bundle's send, the journal, the handoff), instead of after the
handoff. For a volume whose last pass was listed, the note also says which paths the pass sent and removed, in
which of the target's kept trees (its sha256): that digest then reads only those paths again
(``_precopy.listed_volume_digest``). The file is only a hint: the digests are checked against the handoff's, a file
that is not the capture's, or names a volume the controller did not name for the group, starts nothing, and a
volume's paths that are not ``_precopy.parse_changed``'s leave it to a digest of the whole tree.

The restore stops waiting for a group when its handoff says the capture failed, when the controller writes
``<dir>.cancel`` (the role's rescue), when the run key is gone from ``authorized_keys`` (a guard that fired
removes it), or at its time limit.

The capture must know whether the restore took a handoff, also when its ssh fails after the file landed:
otherwise it would put the source back while the copy starts. The file moves one way only, each move a rename:
``.handoff`` (written) -> ``.handoff.taken`` (the restore claimed it) -> ``.handoff.claimed`` (read and accepted;
a refused one is removed instead). The capture's write waits until the restore has done with it and says whether
it was accepted (``claimed``). When that answer does not come, the capture withdraws the handoff (``withdraw``):
renaming ``.handoff`` away succeeds only if the restore has not claimed it, and otherwise ``.taken`` or
``.claimed`` is there to say it has. Only the capture removes ``.claimed``, once it knows (``release``); the undo
of a failed restore removes every file of the handoff, after what it created.
"""

import json
import os
import re
import shlex
import stat
import subprocess
import time

from ansible_collections.ferry.docker.plugins.module_utils import _precopy
from ansible_collections.ferry.docker.plugins.module_utils._transfer import child_environment, remote_argv

VERSION = 1
MAX_BYTES = 1 << 20
WRITE_SECONDS = 60
RELEASE_SECONDS = 2  # how long a release waits for a handoff the restore is still reading
CLAIM_SECONDS = 10  # how long the capture's write waits for the restore (polling every POLL_SECONDS) to take it
POLL_SECONDS = 0.02
KEY_POLL_SECONDS = 1.0
READY_SECONDS = 30  # the write of the note that the volumes are ready: a hint, never worth a long wait
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_IMAGE_ID = re.compile(r"^(sha256:[0-9a-f]{64})?$")
_STREAMED = ("", "new", "present")


class HandoffRefused(Exception):
    """A handoff file that is not what a capture writes; the message names the file and what is wrong."""


def handoff_path(group_dir):
    """The handoff file of a group whose bundles arrive in ``group_dir`` on the target."""
    return group_dir.rstrip("/") + ".handoff"


def cancel_path(group_dir):
    """The file that tells the waiting restore that this group will not be handed off."""
    return group_dir.rstrip("/") + ".cancel"


def ready_path(group_dir):
    """The file that tells the waiting restore which volumes' last passes are done (``announce_ready``)."""
    return group_dir.rstrip("/") + ".ready"


def files(group_dir):
    """Every file the handoff of a group may leave beside its directory (the undo removes them): the handoff, its
    temporary file, its claimed states (taken, then claimed), the name a withdrawal moves it to, the cancel, and
    the note that the volumes are ready (and its temporary file)."""
    final, ready = handoff_path(group_dir), ready_path(group_dir)
    return [
        final,
        final + ".tmp",
        final + ".taken",
        final + ".claimed",
        final + ".withdrawn",
        cancel_path(group_dir),
        ready,
        ready + ".tmp",
    ]


def _quoted(group_dir):
    """The handoff's file names for a shell command: ``final``, ``tmp``, ``taken``, ``claimed``, ``withdrawn``."""
    keys = ("final", "tmp", "taken", "claimed", "withdrawn")
    return dict(zip(keys, (shlex.quote(path) for path in files(group_dir))))


def group_dir(members):
    """The receiving directory of a group on the target (the parent of its members' ``received``)."""
    dirs = {os.path.dirname(m["received"].rstrip("/")) for m in members}
    if len(dirs) != 1:
        raise HandoffRefused(f"the members of a group arrive in more than one directory: {sorted(dirs)}")
    return dirs.pop()


def member_fields(captured):
    """What the restore takes of one member's capture result: ``image_id``, ``image_streamed`` (new, present or
    empty) and ``precopied`` (per volume copied straight into the target: its content ``digest`` and
    ``entries``). The controller's filter and the handoff both build it here."""
    captured = captured or {}
    streamed = captured.get("image_streamed")
    return {
        "image_id": captured.get("image_id", "") or "",
        "image_streamed": ("new" if streamed.get("new") else "present") if streamed else "",
        "precopied": {
            name: {"digest": entry["digest"], "entries": int(entry.get("entries", 0))}
            for name, entry in sorted((captured.get("volumes") or {}).items())
            if entry.get("choice") in ("precopy", "stream") and entry.get("digest")
        },
    }


def document(group_id, result):
    """The handoff of one group from its capture ``result`` (``ok`` false: the restore does not wait for it)."""
    doc = {"version": VERSION, "group": group_id, "ok": bool(result.get("ok"))}
    if doc["ok"]:
        doc["members"] = {name: member_fields(m) for name, m in sorted((result.get("members") or {}).items())}
    return doc


def write_command(group_dir, claim_seconds=0):
    """The shell command, run on the target over the run key, that writes the handoff from its stdin: whole or
    not at all (a rename), readable by its owner only. With ``claim_seconds`` (an accepted capture's handoff) it
    then waits that long for the restore to be done with it, and prints ``claimed`` if the restore accepted it,
    else ``unclaimed``."""
    q = _quoted(group_dir)
    final, taken, claimed = q["final"], q["taken"], q["claimed"]
    command = f"umask 077 && cat > {q['tmp']} && mv -f -- {q['tmp']} {final}"
    if not claim_seconds:
        return command
    polls = max(1, int(claim_seconds / POLL_SECONDS))
    return (
        f"{command} && {{ i=0; while {{ [ -e {final} ] || [ -e {taken} ]; }} && [ $i -lt {polls} ];"
        f" do sleep {POLL_SECONDS}; i=$((i+1)); done;"
        f" if [ -e {claimed} ]; then echo claimed; else echo unclaimed; fi; }}"
    )


def withdraw_command(group_dir):
    """The shell command that takes back a handoff the restore has not claimed; it prints ``withdrawn``, or
    ``taken`` when the restore has it, or ``absent`` when there is none (never written, refused, or removed by
    the undo of a failed restore). The renames only go forward, and the names are tried in their order."""
    q = _quoted(group_dir)
    final, taken, claimed, withdrawn = q["final"], q["taken"], q["claimed"], q["withdrawn"]
    return (
        f"if mv -- {final} {withdrawn} 2>/dev/null; then rm -f -- {withdrawn}; echo withdrawn;"
        f" elif [ -e {taken} ] || [ -e {claimed} ]; then echo taken; else echo absent; fi"
    )


def _remote(send, command, what, stdin=b"", run=subprocess.run, timeout=WRITE_SECONDS):
    """Run ``command`` on the target of ``send`` (the capture's ``send`` options: the run key's shared connection);
    the last word it printed. Raises OSError naming ``what`` and why it failed."""
    argv = remote_argv(send["key_dir"], send["port"], send["user"], send["address"], command)
    try:
        done = run(argv, input=stdin, capture_output=True, timeout=timeout, check=False, env=child_environment())
    except subprocess.TimeoutExpired:
        raise OSError(f"{what} took more than {timeout} s") from None
    if done.returncode != 0:
        said = " | ".join((done.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-3:])[-300:]
        raise OSError(f"{what} failed (exit {done.returncode}): {said}")
    words = (done.stdout or b"").decode("ascii", "replace").split()
    return words[-1] if words else ""


def write(send, group_dir, doc, run=subprocess.run, claim_seconds=0):
    """Write the handoff ``doc`` of the group received in ``group_dir`` on the target of ``send``; with
    ``claim_seconds``, whether the restore accepted it in that time (``claimed``). Raises OSError with why it
    failed."""
    where = f"{send['user']}@{send['address']}:{handoff_path(group_dir)}"
    data = json.dumps(doc, sort_keys=True).encode()
    timeout = WRITE_SECONDS + claim_seconds
    return _remote(send, write_command(group_dir, claim_seconds), f"writing the handoff {where}", data, run, timeout)


def hand_off(send, group_dir, doc, run=subprocess.run, claim_seconds=CLAIM_SECONDS):
    """Hand the group's capture ``doc`` to the restore waiting on the target; ``""``, or a note when it is the
    restore's only because it had taken the handoff before the write failed. A failed capture's handoff is only
    written. Raises OSError when the restore does not have an accepted handoff: then it never will (withdrawn),
    and the source may be put back."""
    if not doc.get("ok"):
        write(send, group_dir, doc, run)
        return ""
    try:
        said = write(send, group_dir, doc, run, claim_seconds)
    except OSError as exc:
        failed = str(exc)
    else:
        if said == "claimed":
            release(send, group_dir, run)
            return ""
        failed = f"the restore did not take the handoff {handoff_path(group_dir)} within {claim_seconds} s"
    where = f"{send['user']}@{send['address']}"
    try:
        state = _remote(send, withdraw_command(group_dir), f"withdrawing the handoff on {where}", run=run)
    except OSError as exc:
        raise OSError(f"{failed}; {exc}: the restore may have it") from None
    if state == "taken":
        release(send, group_dir, run)
        return f"{failed}, but the restore had taken it: the group is the restore's"
    if state not in ("withdrawn", "absent"):
        raise OSError(f"{failed}; withdrawing it said {state[:40]!r}: the restore may have it")
    raise OSError(f"{failed} ({state})")


def ready_command(group_dir):
    """The shell command, run on the target over the run key, that writes the note of ``announce_ready`` from its
    stdin: whole or not at all (a rename), readable by its owner only."""
    ready = ready_path(group_dir)
    final, tmp = shlex.quote(ready), shlex.quote(ready + ".tmp")
    return f"umask 077 && cat > {tmp} && mv -f -- {tmp} {final}"


def announce_ready(send, group_dir, volumes, changed=None, run=subprocess.run):
    """Tell the restore waiting on the target that the last passes of ``volumes`` (names) are done, so that it
    digests them while the capture ends; ``changed`` (volume -> ``base``, ``send``, ``remove``, see
    ``_migration.SourceRun.final_pass``) says what a listed last pass changed, so that its digest reads only that
    again. A volume whose paths would make the note larger than MAX_BYTES is left out of ``changed`` (its digest
    walks the whole tree). Best effort, a hint only: ``""``, or why it could not."""
    changed = dict(changed or {})
    while True:
        data = json.dumps({"version": VERSION, "volumes": sorted(volumes), "changed": changed}, sort_keys=True)
        if len(data) <= MAX_BYTES or not changed:
            break
        del changed[max(changed, key=lambda name: len(changed[name]["send"]) + len(changed[name]["remove"]))]
    where = f"{send['user']}@{send['address']}:{ready_path(group_dir)}"
    try:
        _remote(send, ready_command(group_dir), f"writing {where}", data.encode(), run, READY_SECONDS)
    except OSError as exc:
        return str(exc)
    return ""


def read_ready(group_dir, volumes):
    """The names of ``volumes`` (the volumes the controller named for the group) that the note of
    ``announce_ready`` beside ``group_dir`` says are ready (see ``read_ready_note``)."""
    return read_ready_note(group_dir, volumes)[0]


def read_ready_note(group_dir, volumes):
    """``(names, changed)`` from the note of ``announce_ready`` beside ``group_dir``: the names of ``volumes`` (the
    volumes the controller named for the group) that it says are ready, ``None`` when there is no note, ``[]``
    when it is not the capture's (not a regular file of this user alone, not its JSON, a name not in
    ``volumes``: the restore then digests them after the handoff, as without it); and per named volume what its
    listed last pass changed (``_precopy.parse_changed``; a volume whose entry is not that is left out, and its
    digest walks the whole tree). A note of this user is removed once read. Never raises."""
    path = ready_path(group_dir)
    if not os.path.lexists(path):
        return None, {}
    try:
        data = _read_own(path, path)
    except HandoffRefused:
        return [], {}
    try:
        os.unlink(path)
    except OSError:
        pass
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return [], {}
    names = doc.get("volumes") if isinstance(doc, dict) and doc.get("version") == VERSION else None
    if not isinstance(names, list) or not all(isinstance(n, str) and n in volumes for n in names):
        return [], {}
    changed = {}
    said = doc.get("changed")
    for name, value in (said if isinstance(said, dict) else {}).items():
        if name in names:
            try:
                changed[name] = _precopy.parse_changed(value)
            except ValueError:
                continue
    return sorted(set(names)), changed


def release_command(group_dir):
    """The shell command that removes the restore's mark that it accepted the handoff. A handoff the withdrawal
    found only taken is still being read: it waits (at most ``RELEASE_SECONDS``) until the restore has settled
    it, so that the mark it then leaves is removed too."""
    q = _quoted(group_dir)
    polls = max(1, int(RELEASE_SECONDS / POLL_SECONDS))
    return (
        f"i=0; while [ -e {q['taken']} ] && [ $i -lt {polls} ]; do sleep {POLL_SECONDS}; i=$((i+1)); done;"
        f" rm -f -- {q['claimed']}"
    )


def release(send, group_dir, run=subprocess.run):
    """Remove the restore's mark that it accepted the handoff, once the capture knows; best effort (the undo of a
    failed restore removes it as well)."""
    try:
        _remote(send, release_command(group_dir), "removing the claimed handoff", run=run)
    except OSError:
        pass


def _refuse(path, what):
    raise HandoffRefused(f"handoff {path}: {what}; the group is not restored and its source is put back")


def parse(path, data, group_id, members, volumes):
    """The handoff ``data`` (bytes) of group ``group_id`` checked: ``None`` when the capture failed, else
    ``{container: fields}`` for every member in ``members`` (names), with each pre-copied volume's path taken
    from ``volumes`` (the volumes the target prepared for the group: ``{name: {mountpoint, remove}}``), never from
    the file. Raises HandoffRefused."""
    if len(data) > MAX_BYTES:
        _refuse(path, f"larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        _refuse(path, f"not JSON ({exc})")
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        _refuse(path, f"not a handoff of version {VERSION}")
    if doc.get("group") != group_id:
        _refuse(path, f"names group {str(doc.get('group'))[:80]!r}, not {group_id!r}")
    if not isinstance(doc.get("ok"), bool):
        _refuse(path, "no ok")
    if not doc["ok"]:
        return None
    given = doc.get("members")
    if not isinstance(given, dict) or set(given) != set(members):
        names = sorted(given) if isinstance(given, dict) else given
        _refuse(path, f"its members {str(names)[:200]} are not the group's {sorted(members)}")
    out, seen = {}, set()
    for name in sorted(members):
        fields = given[name]
        if not isinstance(fields, dict) or set(fields) != {"image_id", "image_streamed", "precopied"}:
            _refuse(path, f"member {name}: not image_id, image_streamed and precopied")
        if not isinstance(fields["image_id"], str) or not _IMAGE_ID.match(fields["image_id"]):
            _refuse(path, f"member {name}: image_id is not sha256:<64 hexadecimal digits>")
        if fields["image_streamed"] not in _STREAMED:
            _refuse(path, f"member {name}: image_streamed is not one of {list(_STREAMED)}")
        precopied = fields["precopied"]
        if not isinstance(precopied, dict):
            _refuse(path, f"member {name}: precopied is not a mapping")
        checked = {}
        for volume, entry in sorted(precopied.items()):
            if volume not in volumes or volume in seen:
                _refuse(path, f"member {name}: volume {str(volume)[:80]!r} was not prepared for this group, or twice")
            seen.add(volume)
            if (
                not isinstance(entry, dict)
                or set(entry) != {"digest", "entries"}
                or not isinstance(entry["digest"], str)
                or not _DIGEST.match(entry["digest"])
                or not isinstance(entry["entries"], int)
                or isinstance(entry["entries"], bool)
                or entry["entries"] < 0
            ):
                _refuse(path, f"member {name}: volume {volume}: not a digest and a count of entries")
            checked[volume] = dict(entry)
            prepared = volumes[volume] or {}
            if volume.startswith("bind:"):  # where the bind data went: the target's own answer, not the file's
                if not prepared.get("mountpoint"):
                    _refuse(path, f"member {name}: bind data {volume} has no directory prepared on this host")
                checked[volume]["path"] = prepared["mountpoint"]
                checked[volume]["remove"] = prepared.get("remove") or prepared["mountpoint"]
        out[name] = dict(fields, precopied=checked)
    return out


def read_claimed(path):
    """Claim the handoff at ``path`` (rename it to ``.taken``, so that it is read once) and return its bytes;
    ``None`` when there is none. Only a regular file of this process's user that no one else may write is read.
    The ``.taken`` file stays until ``settle`` says whether it was accepted; one that is refused here is removed."""
    taken = path + ".taken"  # files()
    try:
        os.rename(path, taken)
    except FileNotFoundError:
        return None
    try:
        return _read_own(path, taken)
    except HandoffRefused:
        settle(path, False)
        raise


def _read_own(path, taken):
    """The bytes of the claimed file ``taken`` (the handoff ``path``), or HandoffRefused."""
    try:
        fd = os.open(taken, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        _refuse(path, f"cannot be opened ({exc})")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            _refuse(path, "not a regular file")
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            _refuse(path, f"owned by uid {info.st_uid} with mode {oct(info.st_mode & 0o777)}: not this user's alone")
        chunks, size = [], 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def settle(path, accepted):
    """After ``read_claimed``: mark the handoff at ``path`` accepted (``.taken`` renamed to ``.claimed``, which the
    capture's write waits for) or remove it (refused, or a failed capture's: the capture does not wait for it)."""
    taken = path + ".taken"
    try:
        if accepted:
            os.rename(taken, path + ".claimed")
        else:
            os.unlink(taken)
    except OSError:
        pass


def key_present(key, authorized_keys):
    """Whether the public key ``key`` (``type base64 [comment]``) is in the file ``authorized_keys``; ``None`` when
    the file cannot be read or the key is not given."""
    parts = (key or "").split()
    if len(parts) < 2:
        return None
    try:
        with open(authorized_keys, "rb") as handle:
            text = handle.read(4 << 20)
    except OSError:
        return None
    return parts[1].encode() in text


class Waiter:
    """Wait for the handoffs of several groups: ``wait()`` returns ``({group id: member fields}, {group id: why
    it is not restored})`` once every group is handed off or let go. Raises HandoffRefused for a bad file, and
    TimeoutError (also when the run key is gone) with the reason. ``on_ready(group id, names, changed)`` is called
    once per group whose capture says the last passes of those volumes are done (``read_ready_note``)."""

    def __init__(
        self,
        groups,
        volumes,
        timeout,
        key="",
        authorized_keys="",
        clock=time.monotonic,
        sleep=time.sleep,
        on_ready=None,
    ):
        self.groups = groups
        # on_ready(group id, volume names, changed): the capture says their last passes are done (and what they changed)
        self.on_ready = on_ready
        self.volumes = volumes or {}
        self.timeout = timeout
        self.key = key
        self.authorized_keys = authorized_keys
        self.clock = clock
        self.sleep = sleep

    def wait(self):
        started = self.clock()
        dirs = {g["id"]: group_dir(g["members"]) for g in self.groups}
        key_seen = key_present(self.key, self.authorized_keys)
        key_checked = started
        handed, let_go, readied = {}, {}, set()
        while True:
            for group in self.groups:
                gid = group["id"]
                if gid in handed or gid in let_go:
                    continue
                if self.on_ready is not None and gid not in readied:
                    # before the handoff, which the capture writes after this note: the note is never left unread
                    names, changed = read_ready_note(dirs[gid], self.volumes.get(gid) or {})
                    if names is not None:  # read once, whatever it said
                        readied.add(gid)
                    if names:
                        self.on_ready(gid, names, changed)
                path = handoff_path(dirs[gid])
                data = read_claimed(path)
                if data is not None:
                    names = [m["container"] for m in group["members"]]
                    try:
                        fields = parse(path, data, gid, names, self.volumes.get(gid) or {})
                    except HandoffRefused:
                        settle(path, False)
                        raise
                    settle(path, fields is not None)
                    if fields is None:
                        let_go[gid] = "its capture failed (the handoff says so)"
                    else:
                        handed[gid] = fields
                elif os.path.lexists(cancel_path(dirs[gid])):
                    let_go[gid] = "the controller let it go (its capture did not hand it off)"
                    try:
                        os.unlink(cancel_path(dirs[gid]))
                    except OSError:
                        pass
            if len(handed) + len(let_go) == len(self.groups):
                return handed, let_go
            now = self.clock()
            if now - started > self.timeout:
                waiting = sorted(g["id"] for g in self.groups if g["id"] not in handed and g["id"] not in let_go)
                raise TimeoutError(f"no handoff from the capture within {self.timeout} s for {', '.join(waiting)}")
            if key_seen and now - key_checked >= KEY_POLL_SECONDS:
                key_checked = now
                if key_present(self.key, self.authorized_keys) is False:
                    raise TimeoutError(
                        "the run key is gone from this host's authorized_keys (the run ended, or its guard fired) "
                        "before the capture handed off"
                    )
            self.sleep(POLL_SECONDS)


def merge(group, fields):
    """``group`` (docker_bundle_restore's) with each member's handoff ``fields``."""
    return dict(group, members=[dict(m, **fields[m["container"]]) for m in group["members"]])
