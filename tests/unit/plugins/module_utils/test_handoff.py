# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The early restore's handoff: what the capture writes, and how the waiting restore reads it (as hostile)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _handoff as h

DIGEST = "a" * 64
IMAGE = "sha256:" + "b" * 64
VOLUMES = {"data": {"mountpoint": "/var/lib/docker/volumes/data/_data", "free_bytes": 1}}
BIND = {"bind:/srv/www": {"mountpoint": "/srv/www", "remove": "/srv", "free_bytes": 1}}


def captured(**extra):
    """A member's capture result as SourceRun gives it."""
    return dict(
        {
            "bytes_captured": 10,
            "image_id": IMAGE,
            "image_streamed": {"new": True, "bytes": 5},
            "volumes": {
                "data": {"choice": "precopy", "digest": DIGEST, "entries": 3, "final_seconds": 0.1},
                "small": {"choice": "bundle", "reason": "smaller than migrate_precopy_min_bytes"},
            },
        },
        **extra,
    )


def handoff(**members):
    return {"version": 1, "group": "g", "ok": True, "members": members}


def fields(**extra):
    return dict(
        {"image_id": IMAGE, "image_streamed": "new", "precopied": {"data": {"digest": DIGEST, "entries": 3}}}, **extra
    )


def parse(doc, members=("web",), volumes=None):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return h.parse("/in/r-h-g.handoff", data, "g", list(members), VOLUMES if volumes is None else volumes)


def test_member_fields_keep_only_what_the_restore_takes_and_the_volumes_copied_straight():
    assert h.member_fields(captured()) == {
        "image_id": IMAGE,
        "image_streamed": "new",
        "precopied": {"data": {"digest": DIGEST, "entries": 3}},
    }
    assert h.member_fields(captured(image_streamed={"new": False}))["image_streamed"] == "present"
    assert h.member_fields({}) == {"image_id": "", "image_streamed": "", "precopied": {}}


def test_a_document_of_a_failed_capture_names_no_member():
    assert h.document("g", {"ok": False, "msg": "disk full"}) == {"version": 1, "group": "g", "ok": False}
    doc = h.document("g", {"ok": True, "members": {"web": captured()}})
    assert parse(doc) == {"web": fields()}


def test_a_handoff_that_says_the_capture_failed_lets_the_group_go():
    assert parse({"version": 1, "group": "g", "ok": False}) is None


@pytest.mark.parametrize(
    "doc, said",
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a handoff of version 1"),
        ({"version": 2, "group": "g", "ok": True}, "not a handoff of version 1"),
        ({"version": 1, "group": "other", "ok": True}, "names group 'other'"),
        ({"version": 1, "group": "g", "ok": "yes"}, "no ok"),
        (handoff(), "are not the group's"),
        (handoff(web=fields(), db=fields()), "are not the group's"),
        (handoff(web=dict(fields(), command="rm -rf /")), "not image_id, image_streamed and precopied"),
        (handoff(web=fields(image_id="alpine:latest")), "image_id is not"),
        (handoff(web=fields(image_streamed="yes")), "image_streamed is not"),
        (handoff(web=fields(precopied=[])), "precopied is not a mapping"),
        (handoff(web=fields(precopied={"other": {"digest": DIGEST, "entries": 1}})), "was not prepared"),
        (handoff(web=fields(precopied={"data": {"digest": "z" * 64, "entries": 1}})), "not a digest"),
        (handoff(web=fields(precopied={"data": {"digest": DIGEST, "entries": True}})), "not a digest"),
        (handoff(web=fields(precopied={"data": {"digest": DIGEST, "entries": -1}})), "not a digest"),
        (handoff(web=fields(precopied={"data": {"digest": DIGEST, "entries": 1, "path": "/etc"}})), "not a digest"),
        (b" " * (h.MAX_BYTES + 1), "larger than"),
    ],
)
def test_a_handoff_that_is_not_what_a_capture_writes_is_refused_naming_the_file(doc, said):
    with pytest.raises(h.HandoffRefused) as caught:
        parse(doc)
    assert said in str(caught.value) and "/in/r-h-g.handoff" in str(caught.value)
    assert "its source is put back" in str(caught.value)


def test_a_volume_may_be_named_once_in_a_group():
    doc = handoff(web=fields(), db=fields())
    with pytest.raises(h.HandoffRefused, match="was not prepared for this group, or twice"):
        parse(doc, members=("web", "db"))


def test_where_bind_data_went_is_the_targets_answer_never_the_files():
    doc = handoff(web=fields(precopied={"bind:/srv/www": {"digest": DIGEST, "entries": 2}}))
    got = parse(doc, volumes=BIND)
    assert got["web"]["precopied"]["bind:/srv/www"] == {
        "digest": DIGEST,
        "entries": 2,
        "path": "/srv/www",
        "remove": "/srv",
    }
    with pytest.raises(h.HandoffRefused, match="no directory prepared"):
        parse(doc, volumes={"bind:/srv/www": {}})


def test_the_write_command_writes_whole_and_owner_only(tmp_path):
    group = tmp_path / "r-host1-g"
    doc = h.document("g", {"ok": True, "members": {"web": captured()}})
    done = subprocess.run(
        ["sh", "-c", h.write_command(str(group) + "/")], input=json.dumps(doc).encode(), check=True, timeout=30
    )
    assert done.returncode == 0
    path = tmp_path / "r-host1-g.handoff"
    assert sorted(os.listdir(tmp_path)) == ["r-host1-g.handoff"]  # no .tmp left
    assert path.stat().st_mode & 0o777 == 0o600
    assert h.parse(str(path), h.read_claimed(str(path)), "g", ["web"], VOLUMES) == {"web": fields()}
    assert os.listdir(tmp_path) == ["r-host1-g.handoff.taken"]  # claimed: read once, kept until settled
    h.settle(str(path), True)
    assert os.listdir(tmp_path) == ["r-host1-g.handoff.claimed"]  # accepted: the capture's write waits for this


def test_write_runs_over_the_run_key_without_the_runs_marker(monkeypatch):
    monkeypatch.setenv("FERRY_MIGRATE_RUN", "r1")
    seen = {}

    def run(argv, **kwargs):
        seen.update(argv=argv, **kwargs)
        return subprocess.CompletedProcess(argv, 255, b"", b"ssh: connect to host 192.0.2.12 port 22: timed out\n")

    send = {"key_dir": "/k", "port": 2222, "user": "root", "address": "192.0.2.12"}
    with pytest.raises(OSError) as caught:
        h.write(send, "/in/r-h-g", {"ok": False}, run=run)
    assert "root@192.0.2.12:/in/r-h-g.handoff" in str(caught.value) and "timed out" in str(caught.value)
    assert "/k/id_ed25519" in seen["argv"] and "root@192.0.2.12" in seen["argv"]
    assert seen["argv"][-1] == h.write_command("/in/r-h-g")
    assert "FERRY_MIGRATE_RUN" not in seen["env"] and json.loads(seen["input"]) == {"ok": False}


def test_a_handoff_is_claimed_once(tmp_path):
    path = tmp_path / "g.handoff"
    assert h.read_claimed(str(path)) is None
    path.write_text("{}")
    path.chmod(0o600)
    assert h.read_claimed(str(path)) == b"{}"
    assert h.read_claimed(str(path)) is None and os.listdir(tmp_path) == ["g.handoff.taken"]
    h.settle(str(path), False)  # refused, or a failed capture's: nothing is left
    assert os.listdir(tmp_path) == []


def test_a_handoff_others_could_write_or_a_link_is_refused(tmp_path):
    path = tmp_path / "g.handoff"
    path.write_text("{}")
    path.chmod(0o620)
    with pytest.raises(h.HandoffRefused, match="not this user's alone"):
        h.read_claimed(str(path))
    assert os.listdir(tmp_path) == []  # consumed: a refused file is not read again
    target = tmp_path / "secret"
    target.write_text("{}")
    path.symlink_to(target)
    with pytest.raises(h.HandoffRefused, match="cannot be opened"):
        h.read_claimed(str(path))
    os.mkfifo(path)
    with pytest.raises(h.HandoffRefused, match="not a regular file"):
        h.read_claimed(str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_handoff_of_another_user_is_refused(tmp_path):
    path = tmp_path / "g.handoff"
    path.write_text("{}")
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(h.HandoffRefused, match="owned by uid 65534"):
        h.read_claimed(str(path))


def group(tmp_path, gid, *names):
    return {"id": gid, "members": [{"container": n, "received": f"{tmp_path}/r-h-{gid}/{n}"} for n in names]}


class Steps:
    """sleep() for the waiter: runs the next action each time the waiter sleeps, and advances the clock."""

    def __init__(self, *actions, step=0.02):
        self.actions = list(actions)
        self.now = 0.0
        self.step = step

    def clock(self):
        return self.now

    def sleep(self, _seconds):
        self.now += self.step
        if self.actions:
            self.actions.pop(0)()


def put(path, doc):
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


def test_the_waiter_returns_once_every_group_is_handed_off_or_let_go(tmp_path):
    groups = [group(tmp_path, "a", "web"), group(tmp_path, "b", "db"), group(tmp_path, "c", "app")]
    ok = {"version": 1, "group": "a", "ok": True, "members": {"web": fields()}}
    steps = Steps(
        lambda: None,
        lambda: put(tmp_path / "r-h-a.handoff", ok),
        lambda: put(tmp_path / "r-h-b.handoff", {"version": 1, "group": "b", "ok": False}),
        lambda: None,
        (tmp_path / "r-h-c.cancel").touch,
    )
    waiter = h.Waiter(groups, {"a": VOLUMES}, timeout=60, clock=steps.clock, sleep=steps.sleep)
    handed, let_go = waiter.wait()
    assert handed == {"a": {"web": fields()}}
    assert "capture failed" in let_go["b"] and "controller let it go" in let_go["c"]
    # every file consumed; the accepted handoff is marked so until its capture knows (and removes the mark)
    assert os.listdir(tmp_path) == ["r-h-a.handoff.claimed"]
    merged = h.merge(groups[0], handed["a"])
    assert merged["members"][0]["image_id"] == IMAGE and merged["members"][0]["received"].endswith("/web")


def test_the_waiter_gives_up_at_its_limit(tmp_path):
    steps = Steps(step=1.0)
    waiter = h.Waiter([group(tmp_path, "a", "web")], {}, timeout=5, clock=steps.clock, sleep=steps.sleep)
    with pytest.raises(TimeoutError, match="within 5 s for a"):
        waiter.wait()
    assert 5 < steps.now <= 7


def test_the_waiter_ends_once_the_run_key_is_gone(tmp_path):
    keys = tmp_path / "authorized_keys"
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRUNKEY ferry-run r1"
    keys.write_text(f'ssh-ed25519 AAAAOTHER admin\nrestrict,expiry-time="20261202" {key}\n')
    steps = Steps(lambda: None, lambda: keys.write_text("ssh-ed25519 AAAAOTHER admin\n"), step=0.6)
    waiter = h.Waiter(
        [group(tmp_path, "a", "web")],
        {},
        3600,
        key=key,
        authorized_keys=str(keys),
        clock=steps.clock,
        sleep=steps.sleep,
    )
    with pytest.raises(TimeoutError, match="run key is gone"):
        waiter.wait()
    assert steps.now < 5


def test_a_key_the_waiter_could_not_see_at_its_start_does_not_end_it(tmp_path):
    steps = Steps(step=1.0)
    waiter = h.Waiter(
        [group(tmp_path, "a", "web")],
        {},
        4,
        key="ssh-ed25519 AAAARUNKEY",
        authorized_keys=str(tmp_path / "missing"),
        clock=steps.clock,
        sleep=steps.sleep,
    )
    with pytest.raises(TimeoutError, match="within 4 s"):
        waiter.wait()


def test_a_refused_handoff_ends_the_wait(tmp_path):
    put(tmp_path / "r-h-a.handoff", {"version": 1, "group": "a", "ok": True, "members": {"intruder": fields()}})
    steps = Steps()
    waiter = h.Waiter([group(tmp_path, "a", "web")], {"a": VOLUMES}, 60, clock=steps.clock, sleep=steps.sleep)
    with pytest.raises(h.HandoffRefused, match="are not the group's"):
        waiter.wait()
    assert os.listdir(tmp_path) == []  # refused: not marked claimed, so the capture's write does not hear "claimed"


# -- the capture knows whether the restore has its handoff (hand_off) -------------------------------------------

SEND = {"key_dir": "/k", "port": 22, "user": "root", "address": "192.0.2.12"}


class Target:
    """``run`` for hand_off: each remote command runs in a local shell, as on the target (the paths are local).
    ``before``/``after`` run around it (the restore claiming, say); ``fail`` makes the ssh report a failure
    after the command ran (``landed``) or without running it."""

    def __init__(self, before=None, after=None, fail=None):
        self.before, self.after, self.fail = before, after, fail
        self.commands = []

    def __call__(self, argv, input=b"", timeout=None, **_kwargs):
        command = argv[-1]
        self.commands.append(command)
        failing = self.fail and self.fail(command)
        if failing == "unsent":
            return subprocess.CompletedProcess(argv, 255, b"", b"ssh: connect to host 192.0.2.12: timed out\n")
        if self.before:
            self.before(command)
        done = subprocess.run(["sh", "-c", command], input=input, capture_output=True, timeout=timeout, check=False)
        if self.after:
            self.after(command)
        if failing == "landed":
            return subprocess.CompletedProcess(argv, 255, b"", b"client_loop: send disconnect: Broken pipe\n")
        return done


def restore_claims(path, accept=True):
    """The waiting restore, in a thread: claim the handoff at ``path`` once it is there, then settle it."""

    def work():
        for _attempt in range(500):
            data = h.read_claimed(path)
            if data is not None:
                h.settle(path, accept)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def ok_doc():
    return h.document("g", {"ok": True, "members": {"web": captured()}})


def test_an_accepted_handoff_returns_once_the_restore_took_it_and_leaves_nothing(tmp_path):
    group = str(tmp_path / "r-h-g")
    claimer = restore_claims(h.handoff_path(group))
    target = Target()
    assert h.hand_off(SEND, group, ok_doc(), run=target, claim_seconds=5) == ""
    claimer.join(5)
    assert os.listdir(tmp_path) == []  # the capture removed the restore's mark once it knew
    assert target.commands == [h.write_command(group, 5), h.release_command(group)]


def test_a_handoff_no_restore_takes_is_withdrawn_and_the_group_fails(tmp_path):
    group = str(tmp_path / "r-h-g")
    with pytest.raises(OSError, match=r"did not take the handoff .* within 0.1 s \(withdrawn\)"):
        h.hand_off(SEND, group, ok_doc(), run=Target(), claim_seconds=0.1)
    assert os.listdir(tmp_path) == []  # a restore that comes later finds nothing to restore


def test_a_handoff_the_restore_refuses_is_not_claimed(tmp_path):
    group = str(tmp_path / "r-h-g")
    restore_claims(h.handoff_path(group), accept=False)
    with pytest.raises(OSError, match=r"did not take .* \(absent\)"):
        h.hand_off(SEND, group, ok_doc(), run=Target(), claim_seconds=5)


def test_a_write_whose_ssh_fails_after_the_restore_took_it_is_the_restores(tmp_path):
    group = str(tmp_path / "r-h-g")
    path = h.handoff_path(group)

    def claim(command):  # the restore took it before the capture heard back
        if command.startswith("umask"):
            h.read_claimed(path)
            h.settle(path, True)

    target = Target(before=None, after=claim, fail=lambda c: "landed" if c.startswith("umask") else None)
    note = h.hand_off(SEND, group, ok_doc(), run=target, claim_seconds=0.1)
    assert "Broken pipe" in note and note.endswith("but the restore had taken it: the group is the restore's")
    assert os.listdir(tmp_path) == []  # released

    # taken but not yet accepted counts as the restore's too: the renames only go forward. The restore settles it
    # while the capture releases: the release waits for that, so the mark it leaves is removed as well
    def take_then_settle(command):
        if command.startswith("umask"):
            h.read_claimed(path)
            threading.Timer(0.3, h.settle, (path, True)).start()

    target = Target(after=take_then_settle, fail=lambda c: "landed" if c.startswith("umask") else None)
    assert "had taken it" in h.hand_off(SEND, group, ok_doc(), run=target, claim_seconds=0.1)
    assert os.listdir(tmp_path) == []


def test_a_release_waits_a_bounded_time_for_a_handoff_still_being_read(tmp_path):
    group = str(tmp_path / "r-h-g")
    path = h.handoff_path(group)
    with open(path + ".taken", "w", encoding="ascii") as handle:  # a restore that died while reading it
        handle.write("{}")
    with open(path + ".claimed", "w", encoding="ascii") as handle:  # an earlier claim's mark, say
        handle.write("{}")
    h.release(SEND, group, run=Target())  # it waits RELEASE_SECONDS, then gives up
    assert sorted(os.listdir(tmp_path)) == ["r-h-g.handoff.taken"]  # the undo of the failed restore removes that


def test_a_write_whose_ssh_fails_before_it_landed_fails_the_group(tmp_path):
    group = str(tmp_path / "r-h-g")
    target = Target(fail=lambda c: "unsent" if c.startswith("umask") else None)
    with pytest.raises(OSError, match=r"timed out .*\(absent\)"):
        h.hand_off(SEND, group, ok_doc(), run=target, claim_seconds=5)
    # landed but not taken: withdrawn, so a restore that polls later finds nothing
    target = Target(fail=lambda c: "landed" if c.startswith("umask") else None)
    with pytest.raises(OSError, match=r"Broken pipe.*\(withdrawn\)"):
        h.hand_off(SEND, group, ok_doc(), run=target, claim_seconds=0.1)
    assert os.listdir(tmp_path) == []


def test_when_the_target_cannot_be_asked_the_failure_says_the_restore_may_have_it(tmp_path):
    group = str(tmp_path / "r-h-g")
    said = r"withdrawing the handoff on root@192\.0\.2\.12 failed .*: the restore may have it"
    with pytest.raises(OSError, match=said):
        h.hand_off(SEND, group, ok_doc(), run=Target(fail=lambda c: "unsent"), claim_seconds=5)


def test_a_write_that_fails_on_the_target_says_why(tmp_path):
    group = tmp_path / "missing" / "r-h-g"  # its parent does not exist: cat cannot write
    with pytest.raises(OSError, match=r"writing the handoff .* failed \(exit [12]\): .*(No such file|nonexistent)"):
        h.write(SEND, str(group), {"ok": True}, run=Target(), claim_seconds=5)


def test_a_failed_captures_handoff_is_only_written(tmp_path):
    group = str(tmp_path / "r-h-g")
    target = Target()
    assert h.hand_off(SEND, group, h.document("g", {"ok": False}), run=target) == ""
    assert target.commands == [h.write_command(group)]
    assert os.listdir(tmp_path) == ["r-h-g.handoff"]
    assert h.read_claimed(h.handoff_path(group)) is not None
    h.settle(h.handoff_path(group), False)
    assert os.listdir(tmp_path) == []


def test_the_undo_knows_every_file_of_the_handoff():
    assert [p.rsplit("/", 1)[1] for p in h.files("/in/r-h-g")] == [
        "r-h-g.handoff",
        "r-h-g.handoff.tmp",
        "r-h-g.handoff.taken",
        "r-h-g.handoff.claimed",
        "r-h-g.handoff.withdrawn",
        "r-h-g.cancel",
        "r-h-g.ready",
        "r-h-g.ready.tmp",
    ]


# -- the note that the volumes are ready (announce_ready, read_ready) ---------------------------------------------


def test_the_note_that_the_volumes_are_ready_is_written_whole_and_read_once(tmp_path):
    group = str(tmp_path / "r-h-g")
    target = Target()
    assert h.announce_ready(SEND, group, ["data", "bind:/srv/www"], run=target) == ""
    assert os.listdir(tmp_path) == ["r-h-g.ready"]
    assert os.stat(h.ready_path(group)).st_mode & 0o077 == 0
    assert h.read_ready(group, {**VOLUMES, **BIND}) == ["bind:/srv/www", "data"]
    assert os.listdir(tmp_path) == [] and h.read_ready(group, VOLUMES) is None


BASE = "b" * 64


def test_the_note_says_what_each_listed_last_pass_changed(tmp_path):
    group = str(tmp_path / "r-h-g")
    changed = {"data": {"base": BASE, "send": [".", "appendonly.aof", "caf\udce9"], "remove": ["old/x"]}}
    assert h.announce_ready(SEND, group, ["data", "bind:/srv/www"], changed, run=Target()) == ""
    names, said = h.read_ready_note(group, {**VOLUMES, **BIND})
    assert names == ["bind:/srv/www", "data"] and said == changed


def test_a_note_too_large_for_every_listed_path_leaves_out_the_largest(tmp_path, monkeypatch):
    monkeypatch.setattr(h, "MAX_BYTES", 4000)
    group = str(tmp_path / "r-h-g")
    small = {"base": BASE, "send": [".", "f"], "remove": []}
    large = {"base": BASE, "send": [f"d/{i:05}" for i in range(400)], "remove": []}
    assert (
        h.announce_ready(SEND, group, ["data", "bind:/srv/www"], {"data": large, "bind:/srv/www": small}, run=Target())
        == ""
    )
    assert os.path.getsize(h.ready_path(group)) <= 4000
    assert h.read_ready_note(group, {**VOLUMES, **BIND}) == (["bind:/srv/www", "data"], {"bind:/srv/www": small})


@pytest.mark.parametrize(
    "entry",
    [
        {"base": BASE, "send": ["../etc/passwd"], "remove": []},
        {"base": BASE, "send": ["/etc/passwd"], "remove": []},
        {"base": BASE, "send": ["a//b"], "remove": []},
        {"base": BASE, "send": [], "remove": ["a/./b"]},
        {"base": BASE, "send": [1], "remove": []},
        {"base": BASE, "send": "f", "remove": []},
        {"base": "not a digest", "send": [], "remove": []},
        {"base": BASE + "\n", "send": [], "remove": []},
        {"base": BASE, "send": []},
        {"base": BASE, "send": [], "remove": [], "extra": 1},
        ["f"],
    ],
)
def test_what_a_note_says_a_pass_changed_is_used_only_when_it_is_paths_inside_the_tree(tmp_path, entry):
    path = tmp_path / "r-h-g.ready"
    path.write_text(json.dumps({"version": 1, "volumes": ["data"], "changed": {"data": entry}}))
    path.chmod(0o600)
    # the volume is still ready: its digest walks the whole tree
    assert h.read_ready_note(str(tmp_path / "r-h-g"), VOLUMES) == (["data"], {})


def test_a_note_names_only_the_volumes_it_says_are_ready(tmp_path):
    path = tmp_path / "r-h-g.ready"
    ok = {"base": BASE, "send": ["f"], "remove": []}
    path.write_text(json.dumps({"version": 1, "volumes": [], "changed": {"data": ok}}))
    path.chmod(0o600)
    assert h.read_ready_note(str(tmp_path / "r-h-g"), VOLUMES) == ([], {})


def test_a_note_that_cannot_be_written_is_only_a_reason(tmp_path):
    target = Target(fail=lambda _command: "unsent")
    said = h.announce_ready(SEND, str(tmp_path / "r-h-g"), ["data"], run=target)
    assert "r-h-g.ready" in said and "timed out" in said and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "content, mode",
    [
        ({"version": 1, "volumes": ["data", "etc"]}, 0o600),  # a volume not prepared for the group
        ({"version": 2, "volumes": ["data"]}, 0o600),
        ({"version": 1, "volumes": "data"}, 0o600),
        ({"version": 1, "volumes": [["data"]]}, 0o600),
        ([1], 0o600),
        (b"\xff not json", 0o600),
        ({"version": 1, "volumes": ["data"]}, 0o622),  # others could write it
    ],
)
def test_a_note_that_is_not_the_captures_starts_nothing(tmp_path, content, mode):
    path = tmp_path / "r-h-g.ready"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    path.chmod(mode)
    assert h.read_ready(str(tmp_path / "r-h-g"), VOLUMES) == []


def test_a_note_that_is_a_link_is_not_followed_nor_removed(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(json.dumps({"version": 1, "volumes": ["data"]}))
    secret.chmod(0o600)
    (tmp_path / "r-h-g.ready").symlink_to(secret)
    assert h.read_ready(str(tmp_path / "r-h-g"), VOLUMES) == []
    assert sorted(os.listdir(tmp_path)) == ["r-h-g.ready", "secret"]


def test_the_waiter_starts_the_digests_once_on_the_note_before_the_handoff(tmp_path):
    seen = []
    ok = {"version": 1, "group": "a", "ok": True, "members": {"web": fields()}}
    note = {"version": 1, "volumes": ["data"]}
    steps = Steps(
        lambda: None,
        lambda: put(tmp_path / "r-h-a.ready", note),
        lambda: seen.append(("slept",)),
        # a second note (a capture writes one) is not acted on again
        lambda: put(tmp_path / "r-h-a.ready", note),
        lambda: put(tmp_path / "r-h-a.handoff", ok),
    )
    waiter = h.Waiter(
        [group(tmp_path, "a", "web")],
        {"a": VOLUMES},
        timeout=60,
        clock=steps.clock,
        sleep=steps.sleep,
        on_ready=lambda gid, names, changed: seen.append((gid, names, changed)),
    )
    handed, let_go = waiter.wait()
    assert handed == {"a": {"web": fields()}} and let_go == {}
    assert seen == [("a", ["data"], {}), ("slept",)]


def test_a_note_that_is_not_the_captures_is_read_once_and_starts_nothing(tmp_path):
    seen = []
    put(tmp_path / "r-h-a.ready", {"version": 1, "volumes": ["intruder"]})
    ok = {"version": 1, "group": "a", "ok": True, "members": {"web": fields()}}
    steps = Steps(lambda: put(tmp_path / "r-h-a.handoff", ok))
    waiter = h.Waiter(
        [group(tmp_path, "a", "web")],
        {"a": VOLUMES},
        timeout=60,
        clock=steps.clock,
        sleep=steps.sleep,
        on_ready=lambda gid, names, changed: seen.append((gid, names, changed)),
    )
    assert waiter.wait()[0] == {"a": {"web": fields()}}
    assert seen == [] and os.listdir(tmp_path) == ["r-h-a.handoff.claimed"]
