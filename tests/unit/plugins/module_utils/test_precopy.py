# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pre-copy: what moves how, when the live passes stop, the source's and the target's steps, the digests."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _migration as m
from ansible_collections.ferry.docker.plugins.module_utils import _precopy as p
from ansible_collections.ferry.docker.plugins.module_utils._volmeta import tree_digest, walk_digest

# ------------------------------------------------------------------ what moves how


@pytest.mark.parametrize(
    "driver, options, kind",
    [
        ("local", {}, "plain"),
        (None, None, "plain"),
        ("local", {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/export"}, "network"),
        ("local", {"type": "cifs", "o": "username=u,password=secret"}, "network"),
        ("local", {"type": "none", "o": "addr=nas,vers=4"}, "network"),
        ("local", {"type": "tmpfs", "device": "tmpfs"}, "special"),
        ("local", {"type": "none", "o": "bind", "device": "/srv/data"}, "special"),
        ("rexray/ebs", {}, "special"),
    ],
)
def test_classify(driver, options, kind):
    found, detail = p.classify(driver, options)
    assert found == kind
    assert "secret" not in detail  # an option's value never reaches the report


def test_choose_auto_skips_network_copies_special_and_precopies_plain():
    assert p.choose("nfs", "network", "local, type nfs", 10**9)["choice"] == "skip"
    assert p.choose("tmp", "special", "local, tmpfs", 10**9)["choice"] == "copy"
    assert p.choose("db", "plain", "local", 10**9)["choice"] == "precopy"
    small = p.choose("db", "plain", "local", 10, min_bytes=100)
    assert small["choice"] == "copy" and "migrate_precopy_min_bytes" in small["reason"]
    stop = p.choose("db", "plain", "local", 10**9, strategy="stop")
    assert stop == {"choice": "stream", "reason": p.STREAM_REASON}
    # stop-and-copy streams only what a pre-copy would take: a small or special volume still goes in the bundle
    assert p.choose("db", "plain", "local", 10, strategy="stop", min_bytes=100)["choice"] == "copy"
    assert p.choose("tmp", "special", "local, tmpfs", 10**9, strategy="stop")["choice"] == "copy"
    with pytest.raises(ValueError, match="volume db: migrate_strategy must be precopy or stop"):
        p.choose("db", "plain", "local", 1, strategy="fast")


def test_choose_keep_bundle_puts_every_copied_volume_in_the_bundle():
    for strategy in ("precopy", "stop"):
        kept = p.choose("db", "plain", "local", 10**9, strategy=strategy, keep_bundle=True)
        assert kept == {
            "choice": "copy",
            "reason": "stop-and-copy: migrate_keep_bundle is true (the bundle holds the data)",
        }
    # a network volume's data is still not copied, and skip still wins
    assert p.choose("nfs", "network", "local, type nfs", 10**9, keep_bundle=True)["choice"] == "skip"
    assert p.choose("db", "plain", "local", 10**9, data="skip", keep_bundle=True)["choice"] == "skip"


def test_choose_consistency_pause_reads_every_copied_volume_into_the_bundle():
    # a paused capture reads each volume while its container is paused: nothing is prepared on the target for it
    for strategy in ("precopy", "stop"):
        paused = p.choose("db", "plain", "local", 10**9, strategy=strategy, consistency="pause")
        assert paused == {"choice": "copy", "reason": p.PAUSE_REASON}
    assert p.choose("nfs", "network", "local, type nfs", 10**9, consistency="pause")["choice"] == "skip"
    assert p.choose("db", "plain", "local", 10**9, data="skip", consistency="pause")["choice"] == "skip"
    bind = p.choose_bind("/srv/www", "/srv/www", True, data=True, strategy="stop", consistency="pause")
    assert bind["choice"] == "skip" and "migrate_consistency is pause" in bind["reason"]
    assert p.choose_bind("/srv/www", "/srv/www", True, data=True, strategy="stop")["choice"] == "stream"


def test_volumes_of_takes_one_choice_or_several():
    member = {"volumes": [{"name": "a", "choice": "precopy"}, {"name": "b", "choice": "stream"}, {"name": "c"}]}
    assert p.volumes_of(member, "precopy") == ["a"]
    assert p.volumes_of(member, p.DIRECT) == ["a", "b"]
    assert p.volumes_of({}, p.DIRECT) == []


def test_choose_per_volume_map_wins_over_the_default():
    data_map = {"nfs": "copy", "db": "skip"}
    assert p.choose("nfs", "network", "local, type nfs", 1, data_map=data_map)["choice"] == "copy"
    skipped = p.choose("db", "plain", "local", 10**9, data_map=data_map)
    assert skipped["choice"] == "skip" and "migrate_volume_data_map" in skipped["reason"]
    assert p.choose("other", "plain", "local", 10**9, data="skip", data_map=data_map)["choice"] == "skip"
    with pytest.raises(ValueError, match="volume db: the volume data mode must be auto, copy or skip"):
        p.choose("db", "plain", "local", 1, data_map={"db": "move"})


# ------------------------------------------------------------------ the live passes


def passes(deltas, delta_bytes=100, max_passes=5):
    plan = p.Passes(delta_bytes, max_passes)
    ran = 0
    for delta in deltas:
        if not plan.again():
            break
        plan.record(delta)
        ran += 1
    plan.again()
    return ran, plan.summary()


def test_passes_stop_once_the_delta_is_small():
    ran, summary = passes([1000, 300, 50, 10])
    assert ran == 3 and summary["outcome"] == "converged" and summary["last_delta_bytes"] == 50


def test_passes_are_capped_and_the_rest_goes_while_stopped():
    ran, summary = passes([1000, 900, 800, 700, 600, 500, 400], max_passes=4)
    assert ran == 4 and summary["outcome"] == "capped"
    assert "the rest (about 700 bytes) goes by stop-and-copy" in summary["note"]


def test_a_writer_as_fast_as_the_copy_ends_the_passes():
    ran, summary = passes([1000, 400, 500, 600, 700], max_passes=10)
    assert ran == 3 and summary["outcome"] == "not_shrinking"
    assert "a writer changes data about as fast as the copy moves it" in summary["note"]


def test_rsync_keeps_every_attribute_and_uses_the_run_key_only():
    argv = p.rsync_argv("/k", 2222, "/src/", "root", "10.1.2.3", "/var/lib/docker/volumes/v/_data")
    for flag in ("--archive", "--hard-links", "--acls", "--xattrs", "--numeric-ids", "--delete", "--stats"):
        assert flag in argv
    assert not any(a.startswith("--chmod") for a in argv)  # the tree's own modes, unlike a bundle's directory
    ssh = argv[argv.index("--rsh") + 1]
    assert "-i /k/id_ed25519" in ssh and "IdentitiesOnly=yes" in ssh and "-p 2222" in ssh
    assert argv[-2:] == ["/src/", "root@10.1.2.3:/var/lib/docker/volumes/v/_data/"]


STATS = """
Number of files: 4 (reg: 3, dir: 1)
Number of regular files transferred: 2
Total file size: 104,857,604 bytes
Total transferred file size: 2,097,152 bytes
Literal data: 1,024 bytes
Matched data: 2,096,128 bytes
Total bytes sent: 4,431
"""


def test_parse_stats():
    assert p.parse_stats(STATS) == {"sent": 4431, "changed": 2097152, "files": 2, "literal": 1024}
    assert p.parse_stats("") == {"sent": 0, "changed": 0, "files": 0, "literal": 0}


def test_a_pass_that_fills_the_target_says_so():
    def run(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 11, "", "rsync: write failed: No space left on device (28)\n")

    with pytest.raises(p.PassFailed) as failed:
        p.copy_pass(["rsync"], "root@h2:/v", 10, run=run)
    assert failed.value.no_space and "No space left on device" in str(failed.value)


def test_a_file_that_vanishes_during_a_live_pass_is_for_the_next_pass_not_a_failure():
    vanished = 'file has vanished: "/v/appendonlydir/appendonly.aof.2.incr.aof"\nrsync warning: some files vanished\n'

    def run(argv, **kwargs):  # Redis rewrote its append-only file while the pass ran
        return subprocess.CompletedProcess(argv, 24, STATS, vanished)

    stats = p.copy_pass(["rsync"], "root@h2:/v", 10, run=run, live=True)
    assert stats == dict(p.parse_stats(STATS), vanished=True)
    with pytest.raises(p.PassFailed) as failed:  # once the source is stopped nothing may vanish
        p.copy_pass(["rsync"], "root@h2:/v", 10, run=run)
    assert "rsync exit 24" in str(failed.value) and not failed.value.no_space


def test_only_the_live_passes_are_live():
    host, copier = Host(), Copier({"db": [5000, 40]})
    m.precopy_groups(host, [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}], OPTIONS, copier)
    assert copier.live == [True, True]
    host, copier = Host(), Copier({"db": [12]})
    spec = {k: v for k, v in SPEC.items() if k != "attributes_since"}
    m.capture_groups(
        host, [{"id": "g", "members": [member("app", PLAN)], "precopy": spec}], OPTIONS, now=clock(), copier=copier
    )
    assert copier.live == [False]  # the last pass, once stopped


# ------------------------------------------------------------------ the source's steps


class Copier:
    """The source's copier: where each volume is here, a pass (its delta from ``deltas``), a digest."""

    def __init__(self, deltas=None, fail=None, local=True, uppers=None):
        self.deltas = {name: iter(values) for name, values in (deltas or {}).items()}
        self.fail = fail
        self.local = local
        self.calls = []
        self.uppers = iter(uppers or [])
        self.saved = []
        self.live = []

    def upper(self, container):
        return f"/upper/{container}", None

    def mountpoint(self, volume):
        return (f"/src/{volume}", None) if self.local else (None, "the engine is remote")

    def sync(self, src, dest, attributes_since=None, live=False):
        self.calls.append(("sync", src, dest))
        self.live.append(live)
        if self.fail:
            raise p.PassFailed(self.fail, no_space="No space" in self.fail)
        name = src.rsplit("/", 1)[-1]
        delta = next(self.deltas[name], 0)
        return {"sent": delta + 100, "changed": delta, "files": 1, "literal": delta}

    def digest(self, path, cache, tree=None, save=True):
        self.calls.append(("digest", path, cache))
        self.saved.append((path, save))
        if path.startswith("/upper/"):
            return next(self.uppers, "u0"), 1, 0
        return "d-" + path.rsplit("/", 1)[-1], 3, 0


class Host:
    def __init__(self):
        self.calls = []

    def __call__(self, module, args):
        self.calls.append((module.rsplit(".", 1)[-1], args))
        if module.endswith("docker_commit_save"):
            return {"image_id": "sha256:x", "size": 10}
        if module.endswith("docker_volume_backup"):
            return {"bytes_written": 5}
        return {}


def member(name, volumes):
    return dict(
        container=name,
        name=name,
        state_before="running",
        running=True,
        has_volumes=bool(volumes),
        exclude_layers=[],
        image_ref=f"ferry-migrate/{name}:latest",
        bundle=f"/b/{name}",
        volumes=volumes,
    )


OPTIONS = dict(
    mode="commit",
    consistency="stop",
    cutover="stop",
    compression="zstd",
    stop_timeout=10,
    journal={"run_id": "r1", "journal_dir": "/j"},
    send={"user": "root", "address": "h2", "port": 22, "key_dir": "/k"},
)
SPEC = dict(
    target="host2",
    volumes={"db": {"mountpoint": "/t/db", "free_bytes": 5000}},
    refused={},
    delta_bytes=100,
    max_passes=5,
    cache_dir="/w/run",
)
PLAN = [
    {"name": "db", "choice": "precopy", "reason": "plain"},
    {"name": "logs", "choice": "copy", "reason": "tmpfs"},
    {"name": "shared", "choice": "skip", "reason": "nfs"},
]


def clock():
    ticks = itertools.count(1000)
    return lambda: float(next(ticks))


def test_precopy_passes_until_the_delta_is_small_journals_and_warms_the_cache():
    host, copier = Host(), Copier({"db": [5000, 700, 40]})
    out = m.precopy_groups(host, [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}], OPTIONS, copier)
    group = out["g"]
    assert group["ok"] and group["volumes"]["db"]["passes"] == 3 and group["volumes"]["db"]["outcome"] == "converged"
    assert group["volumes"]["db"]["sent_bytes"] == 5000 + 700 + 40 + 300
    assert [c[0] for c in copier.calls] == ["sync", "sync", "sync", "digest", "digest", "digest"]
    assert copier.calls[3] == ("digest", "/src/db", "/w/run/.digests/db.marshal")
    # the image was committed while it served, between two digests of its writable layer
    assert copier.calls[4][1:] == ("/upper/app", "/w/run/.digests/upper-app.marshal")
    assert group["images"] == {"app": {"image_id": "sha256:x", "upper_digest": "u0", "bytes": 10}}
    # the journal names what the guard removes on the target if the run is lost; nothing was stopped
    journaled = [a for module, a in host.calls if module == "docker_migrate_guard"]
    assert journaled[0]["phase"] == "precopy" and journaled[0]["containers"] == [{"name": "app", "precopied": ["db"]}]
    assert not [a for module, a in host.calls if module == "docker_container"]


def test_a_full_target_disk_fails_the_group_before_its_sources_stop():
    host = Host()
    copier = Copier(fail="copying to root@h2:/t/db failed (rsync exit 11): No space left on device (28)")
    out = m.precopy_groups(host, [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}], OPTIONS, copier)
    group = out["g"]
    assert not group["ok"] and group["phase"] == "precopy" and group["target_touched"]
    assert "host2 ran out of space during the precopy of volume db" in group["msg"]
    assert "it had 5000 bytes free there" in group["msg"]
    assert not [a for module, a in host.calls if module == "docker_container"]  # never stopped


def test_volumes_the_target_refused_or_that_are_not_local_go_in_the_bundle():
    host = Host()
    spec = dict(SPEC, volumes={}, refused={"db": "volume db already exists on this host"})
    out = m.precopy_groups(host, [{"id": "g", "members": [member("app", PLAN)], "precopy": spec}], OPTIONS, Copier())
    assert out["g"]["volumes"]["db"] == {
        "choice": "copy",
        "reason": "stop-and-copy: volume db already exists on this host",
    }
    out = m.precopy_groups(
        host, [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}], OPTIONS, Copier(local=False)
    )
    assert "its data is not a directory here (the engine is remote)" in out["g"]["volumes"]["db"]["reason"]


def test_capture_moves_the_last_delta_after_the_stop_and_leaves_precopied_and_skipped_volumes_out():
    host, copier = Host(), Copier({"db": [12]})
    groups = [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}]
    out = m.capture_groups(host, groups, dict(OPTIONS, send=None), now=clock(), copier=copier)
    group = out["g"]
    assert group["ok"], group
    modules = [module for module, _a in host.calls]
    # stopped first, then the last delta and the digest, then the capture
    assert modules.index("docker_container") < modules.index("docker_commit_save")
    assert [c[0] for c in copier.calls] == []  # no send option: pre-copy cannot run, everything in the bundle
    volumes = group["members"]["app"]["volumes"]
    assert volumes["db"]["choice"] == "copy"

    host, copier = Host(), Copier({"db": [12]})
    out = m.capture_groups(host, groups, OPTIONS, now=clock(), copier=copier)
    volumes = out["g"]["members"]["app"]["volumes"]
    assert volumes["db"]["choice"] == "precopy" and volumes["db"]["digest"] == "d-db"
    assert volumes["db"]["final_delta_bytes"] == 12
    assert volumes["shared"]["choice"] == "skip" and volumes["logs"]["choice"] == "copy"
    backup = next(a for module, a in host.calls if module == "docker_volume_backup")
    assert backup["exclude_volumes"] == ["db", "shared"]
    order = [module for module, _a in host.calls]
    assert order.index("docker_container") < order.index("docker_volume_backup")


def test_the_run_leaves_no_digest_cache_on_the_source_once_captured_or_failed(tmp_path):
    run_dir = str(tmp_path / "run")

    def caches():
        # what the live passes left: the volume's cache, the writable layer's, another group's, a bind path's
        paths = [p.cache_path(run_dir, n) for n in ("db", "upper-app", "other", "bind:/srv/data")]
        for path in paths:
            cache = p.DigestCache(path)
            cache.entries = {"f": [1, 2, 3, 4, "x"]}
            cache.save()
        return paths

    spec = dict(SPEC, cache_dir=run_dir, volumes=dict(SPEC["volumes"], **{"bind:/srv/data": {"mountpoint": "/t"}}))
    plan = [*PLAN, {"name": "bind:/srv/data", "choice": "precopy", "reason": "bind"}]
    db, upper, other, bind = caches()
    groups = [{"id": "g", "members": [member("app", plan)], "precopy": spec}]
    out = m.capture_groups(Host(), groups, OPTIONS, now=clock(), copier=Copier({"db": [12], "data": [0]}))
    assert out["g"]["ok"], out["g"]
    assert not any(os.path.exists(path) for path in (db, upper, bind)) and os.path.exists(other)
    assert sorted(os.listdir(os.path.join(run_dir, ".digests"))) == ["other.marshal"]  # bind:'s directory too
    m.capture_groups(
        Host(),
        [{"id": "o", "members": [member("other", [])], "precopy": dict(spec, volumes={})}],
        OPTIONS,
        now=clock(),
        copier=None,
    )
    assert os.path.exists(other)  # no copier: this process is not on the source, it removes nothing

    db, upper, other, bind = caches()
    failing = Copier(fail="copying to root@h2:/t/db failed (rsync exit 11): No space left on device (28)")
    out = m.precopy_groups(Host(), groups, OPTIONS, failing)
    assert not out["g"]["ok"] and not any(os.path.exists(path) for path in (db, upper, bind))
    p.drop_caches([other])
    assert os.listdir(run_dir) == []  # the last cache takes .digests with it


def test_the_capture_reads_its_digest_caches_ahead_before_the_stop(monkeypatch):
    host, seen = Host(), []
    monkeypatch.setattr(p, "preload_caches", lambda paths: seen.append((list(paths), len(host.calls))))
    groups = [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}]
    assert m.capture_groups(host, groups, OPTIONS, now=clock(), copier=Copier({"db": [12]}))["g"]["ok"]
    ((paths, calls_before),) = seen
    assert paths == ["/w/run/.digests/db.marshal", "/w/run/.digests/upper-app.marshal"]
    stop = next(i for i, (module, _a) in enumerate(host.calls) if module == "docker_container")
    assert calls_before <= stop


def test_a_streamed_volume_moves_whole_after_the_stop_straight_into_the_target_and_not_in_the_bundle():
    plan = [{"name": "db", "choice": "stream", "reason": p.STREAM_REASON}, PLAN[1]]
    # no live pass: the pre-copy step takes no streamed volume
    host, copier = Host(), Copier({"db": [9000]})
    out = m.precopy_groups(host, [{"id": "g", "members": [member("app", plan)], "precopy": SPEC}], OPTIONS, copier)
    assert copier.calls == [] and out["g"]["volumes"] == {}
    host, copier = Host(), Copier({"db": [9000]})
    groups = [{"id": "g", "members": [member("app", plan)], "precopy": SPEC}]
    out = m.capture_groups(host, groups, OPTIONS, now=clock(), copier=copier)
    group = out["g"]
    assert group["ok"], group
    db = group["members"]["app"]["volumes"]["db"]
    assert db["choice"] == "stream" and db["digest"] == "d-db" and db["final_delta_bytes"] == 9000
    assert db["reason"].startswith("streamed once the source was stopped")
    # the whole copy ran once the source was stopped (and its digest in a thread meanwhile)
    modules = [module for module, _a in host.calls]
    assert modules.index("docker_container") < modules.index("docker_commit_save")
    assert ("sync", "/src/db", "/t/db") in copier.calls
    assert ("digest", "/src/db", "/w/run/.digests/db.marshal") in copier.calls
    backup = next(a for module, a in host.calls if module == "docker_volume_backup")
    assert backup["exclude_volumes"] == ["db"]  # only the tmpfs volume goes in the bundle
    assert group["members"]["app"]["bytes_captured"] == 9100 + 10 + 5


RESTORE_OPTIONS = dict(
    mode="commit",
    create_bind_paths=True,
    allow_privileged=True,
    stop_timeout=10,
    health_timeout=30,
    health_stable_seconds=5,
    health_tcp_port=0,
    health_url="",
    keep_bundle=False,
)  # a restore with health checks and nothing else to say


def test_the_target_checks_each_digest_before_anything_uses_the_volume_and_removes_it_on_mismatch():
    calls = []

    def call(module, args):
        calls.append((module.rsplit(".", 1)[-1], args))
        if module == m.VOLUME_DIGEST:
            return {"digest": "other", "entries": 3}
        return {}

    target = dict(member("app", []), received="/in/run-h1-g/app", precopied={"db": {"digest": "d-db", "entries": 3}})
    options = dict(RESTORE_OPTIONS)
    out = m.restore_groups(call, [{"id": "g", "members": [target]}], options, now=clock())
    assert not out["g"]["ok"] and "volume db on this host does not hold what the source held" in out["g"]["msg"]
    # the digest runs in the background while the image loads, and is awaited before any container is created
    assert calls[0] == ("volume_digest", {"name": "db", "cache_dir": "/in/run-h1-g", "background": "start"})
    modules = [module for module, _a in calls]
    assert modules.index("docker_load") < modules.index("volume_digest", 1)
    assert "docker_container_restore" not in modules
    assert ("docker_volume", {"name": "db", "state": "absent"}) in calls  # removed by the undo


def test_a_digest_the_early_restore_began_before_the_handoff_is_taken_and_reported():
    def call(module, args):
        if module == m.VOLUME_DIGEST:
            return {"started": True, "early": True} if args.get("background") == "start" else {"digest": "d-db"}
        if module.endswith("docker_container_health"):
            return {"containers": {"app": {"up": True}}}
        return {}

    target = dict(member("app", []), received="/in/run-h1-g/app", precopied={"db": {"digest": "d-db", "entries": 3}})
    options = dict(RESTORE_OPTIONS)
    out = m.restore_groups(call, [{"id": "g", "members": [target]}], options, now=clock())
    assert out["g"]["ok"], out["g"]
    assert out["g"]["early_digests"] == ["db"] and out["g"]["digest_checks"] == {}


def test_the_restore_says_how_each_check_read_its_volume():
    def call(module, args):
        if module == m.VOLUME_DIGEST:
            if args.get("background") == "start":
                return {"started": True, "early": True}
            return {"digest": "d-db", "listed_paths": 3}
        if module.endswith("docker_container_health"):
            return {"containers": {"app": {"up": True}}}
        return {}

    target = dict(member("app", []), received="/in/run-h1-g/app", precopied={"db": {"digest": "d-db", "entries": 3}})
    options = dict(RESTORE_OPTIONS)
    out = m.restore_groups(call, [{"id": "g", "members": [target]}], options, now=clock())
    assert out["g"]["ok"] and out["g"]["digest_checks"] == {"db": {"listed_paths": 3}}, out["g"]


# ------------------------------------------------------------------ the digest of a tree


def make_tree(root):
    os.makedirs(root / "sub" / "deep")
    (root / "a").write_bytes(b"hello\n")
    os.link(root / "a", root / "sub" / "hard")
    os.symlink("a", root / "link")
    os.mkfifo(root / "fifo")
    with open(root / "sparse", "wb") as handle:
        handle.truncate(1 << 20)
        handle.seek(1 << 20)
        handle.write(b"end")
    (root / "sub" / "deep" / "big").write_bytes(os.urandom(300_000))
    os.chmod(root / "a", 0o4755)
    try:
        os.setxattr(root / "a", "user.k", b"v")
    except OSError:
        pass


def test_walk_digest_equals_the_archive_digest_and_its_cache_reads_only_what_changed(tmp_path):
    root = tmp_path / "vol"
    make_tree(root)
    cache = {}
    first = walk_digest(str(root), cache, now=10**10)  # as if hashed long after the files were written
    assert first[:2] == tree_digest(str(root))
    assert first[2] > 1_000_000 and cache
    again = walk_digest(str(root), cache, now=10**10)
    assert again[0] == first[0] and again[2] == 0
    (root / "sub" / "deep" / "big").write_bytes(os.urandom(300_000))
    changed = walk_digest(str(root), cache, now=10**10)
    assert changed[0] != first[0] and changed[2] == 300_000
    assert changed[:2] == tree_digest(str(root))


_NAMES = st.sampled_from(["a", "b", "m", "z", "0", "a.b", "é"])


@st.composite
def _random_dirs(draw, depth=0):
    """A directory as ``{name: content}``: bytes for a file, a dict for a subdirectory, a str for a symlink's target,
    ``("link", n)`` for another name of the n-th file written."""
    out = {}
    for name in draw(st.lists(_NAMES, max_size=5, unique=True)):
        kinds = ["file", "symlink", "hard"] + (["dir"] if depth < 3 else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "dir":
            out[name] = draw(_random_dirs(depth=depth + 1))
        elif kind == "symlink":
            out[name] = draw(st.sampled_from(["a", "../z", "/etc"]))
        elif kind == "hard":
            out[name] = ("link", draw(st.integers(0, 3)))
        else:
            out[name] = draw(st.binary(max_size=64))
    return out


def _write_dirs(root, tree, files):
    os.mkdir(root)
    for name, content in tree.items():
        path = os.path.join(root, name)
        if isinstance(content, dict):
            _write_dirs(path, content, files)
        elif isinstance(content, str):
            os.symlink(content, path)
        elif isinstance(content, tuple):
            if files:
                os.link(files[content[1] % len(files)], path)
            else:
                open(path, "wb").close()
        else:
            with open(path, "wb") as handle:
                handle.write(content)
            files.append(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_random_dirs())
def test_walk_digest_of_any_tree_equals_the_archive_digest_and_lists_every_entry(tmp_path_factory, tree):
    """Subdirectories anywhere among their siblings: the walk goes down and comes back to the names after them,
    with and without the cache, and its tree names every entry once."""
    root = str(tmp_path_factory.mktemp("walk") / "vol")
    _write_dirs(root, tree, [])
    expected = {"."} | {
        os.path.relpath(os.path.join(top, name), root) for top, dirs, names in os.walk(root) for name in dirs + names
    }
    cache = {}
    for _round in range(2):  # hashed, then from the cache
        found = {}
        digest = walk_digest(root, cache, now=10**10, tree=found)
        assert digest[:2] == tree_digest(root)
        assert set(found) == expected and digest[1] == len(expected) - 1


def test_walk_digest_reuses_a_cached_entry_only_while_the_files_change_time_is_the_same(tmp_path):
    root = tmp_path / "vol"
    make_tree(root)
    cache = {}
    first = walk_digest(str(root), cache, now=10**10)
    target = root / "sub" / "deep" / "big"
    assert cache["sub/deep/big"][5].startswith("sub/deep/big\0")  # the whole entry is kept
    os.chmod(target, 0o600)  # mode, owner and xattrs changes set the change time; the content is the same
    changed = walk_digest(str(root), cache, now=10**10)
    assert changed[0] != first[0] and changed[2] == 300_000  # a new entry, its content read again
    assert changed[:2] == tree_digest(str(root))
    stale = dict(cache)
    stale["sub/deep/big"] = [*stale["sub/deep/big"][:5], "forged\0entry"]
    stale["sub/deep/big"][3] -= 1  # a different change time: the forged entry is not used
    assert walk_digest(str(root), stale, now=10**10)[:2] == tree_digest(str(root))


def test_walk_digest_does_not_reuse_entries_for_files_with_several_links(tmp_path):
    root = tmp_path / "vol"
    make_tree(root)
    os.link(root / "sub" / "deep" / "big", root / "again")
    cache = {}
    first = walk_digest(str(root), cache, now=10**10)
    assert first[:2] == tree_digest(str(root))
    assert walk_digest(str(root), cache, now=10**10)[:2] == first[:2]
    os.unlink(root / "again")  # the remaining name's link count (not in its entry) changes
    assert walk_digest(str(root), cache, now=10**10)[:2] == tree_digest(str(root))


def test_walk_digest_does_not_trust_the_cache_for_a_file_changed_in_the_last_seconds(tmp_path):
    root = tmp_path / "vol"
    make_tree(root)
    cache = {}
    walk_digest(str(root), cache)  # the files were just written: none of them is cached
    assert cache == {}


def test_the_digest_cache_file_is_private(tmp_path):
    cache = p.DigestCache(p.cache_path(str(tmp_path / "run"), "db"))
    cache.entries = {"a": [1, 2, 3, 4, "x"]}
    cache.save()
    assert oct(os.stat(cache.path).st_mode & 0o777) == "0o600"
    assert p.DigestCache(cache.path).load() == {"a": [1, 2, 3, 4, "x"]}
    with open(cache.path, "r+b") as handle:  # a torn file, or another Python's format: an empty cache
        handle.truncate(5)
    assert p.DigestCache(cache.path).load() == {}
    with open(cache.path, "wb") as handle:
        handle.write(b"\xff not marshal")
    assert p.DigestCache(cache.path).load() == {}


def test_a_preloaded_cache_is_taken_once_and_only_while_its_file_is_the_one_read(tmp_path):
    def saved(name, entries):
        cache = p.DigestCache(p.cache_path(str(tmp_path / "run"), name))
        cache.entries = entries
        cache.save()
        return cache.path

    kept, replaced, gone = saved("kept", {"a": [1]}), saved("replaced", {"b": [2]}), saved("gone", {"c": [3]})
    missing = p.cache_path(str(tmp_path / "run"), "missing")
    p.preload_caches([kept, replaced, gone, missing]).join()
    assert set(p._PRELOADED) >= {kept, replaced, gone} and missing not in p._PRELOADED
    p._PRELOADED[kept][1]["a"].append("read ahead")  # tells the preloaded copy from the file's
    saved("replaced", {"b": [2, "newer"]})  # the settle digest saved it again after the read: the file wins
    os.unlink(gone)
    assert p.DigestCache(kept).load() == {"a": [1, "read ahead"]}
    assert p.DigestCache(replaced).load() == {"b": [2, "newer"]}
    assert p.DigestCache(gone).load() == {}
    assert p.DigestCache(kept).load() == {"a": [1]}  # taken once: the next load reads the file
    assert not {kept, replaced, gone} & set(p._PRELOADED)


def test_passes_share_one_ssh_connection_and_leave_the_run_marker_out(monkeypatch):
    argv = p.rsync_argv("/k", 22, "/src", "root", "h2", "/dst")
    ssh = argv[argv.index("--rsh") + 1].split()
    assert ssh[0] == "ssh" and "ControlMaster=auto" in ssh and "ControlPath=/k/cm-%h-%p" in ssh
    seen = {}

    def run(argv, **kwargs):
        seen.update(kwargs["env"])
        return subprocess.CompletedProcess(argv, 0, STATS, "")

    monkeypatch.setenv("FERRY_MIGRATE_RUN", "r1")
    p.copy_pass(["rsync"], "root@h2:/v", 10, run=run)
    assert "FERRY_MIGRATE_RUN" not in seen and seen.get("PATH") == os.environ["PATH"]


def test_the_guard_removes_precopied_volumes_and_reports_only_those_left(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils import _journal

    docker = tmp_path / "docker"
    docker.write_text(
        '#!/bin/sh\n[ "$1 $2" = "volume rm" ] && [ "$3" = gone ] && exit 0\n'
        '[ "$1 $2" = "volume rm" ] && exit 1\n[ "$1 $2" = "volume inspect" ] && [ "$3" = used ] && exit 0\nexit 1\n'
    )
    docker.chmod(0o755)

    def run(argv, timeout=10):
        script = argv[-1]
        done = subprocess.run(
            ["sh", "-c", script],
            capture_output=True,
            text=True,
            env=dict(os.environ, PATH=f"{tmp_path}:/bin:/usr/bin"),
            check=False,
        )
        return done.returncode, done.stdout, done.stderr

    ops = _journal.TargetOps([{"host": "h2", "address": "10.0.0.2"}], run=run)
    assert ops.drop_volumes("h2", ["gone"]) == (True, "")
    ok, error = ops.drop_volumes("h2", ["gone", "used"])
    assert not ok and error == "still there: used"


def test_a_guard_that_fires_during_the_precopy_removes_the_target_volumes_then_puts_the_source_back():
    from ansible_collections.ferry.docker.plugins.module_utils import _journal

    doc = _journal.new_document("r1", "source", now=1)
    doc["targets"] = [{"host": "h2", "address": "10.0.0.2"}]
    _journal.record(
        doc,
        "app",
        phase="precopy",
        status="in_progress",
        state_before="running",
        target="h2",
        target_name="app",
        target_volumes=["db"],
        precopied=["db"],
    )
    _journal.record(doc, "old", phase="stop", status="in_progress", state_before="running", target="h2")
    plan = dict(_journal.fire_plan(doc))
    assert plan["app"] == [("drop_target_volumes", "h2", ("db",)), ("restore_source", "running")]
    assert plan["old"] == [("restore_source", "running")]
    _journal.record(doc, "app", phase="restore")
    assert dict(_journal.fire_plan(doc))["app"] == [
        ("stop_target", "h2", "app", ("db",)),
        ("drop_target_volumes", "h2", ("db",)),
        ("restore_source", "running"),
    ]


def test_a_guard_that_fires_removes_the_image_streamed_to_the_target_after_its_copy(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils import _journal

    image = "sha256:" + "a" * 64
    doc = _journal.new_document("r1", "source", now=1)
    doc["targets"] = [{"host": "h2", "address": "10.0.0.2"}]
    _journal.record(
        doc, "app", phase="capture", status="in_progress", state_before="running", target="h2", target_name="app"
    )
    assert dict(_journal.fire_plan(doc))["app"] == [("restore_source", "running")]
    _journal.record(doc, "app", streamed_images=[image])
    assert dict(_journal.fire_plan(doc))["app"] == [
        ("drop_target_images", "h2", (image,)),
        ("restore_source", "running"),
    ]
    _journal.record(doc, "app", phase="restore")
    assert [step[0] for step in dict(_journal.fire_plan(doc))["app"]] == [
        "stop_target",
        "drop_target_images",
        "restore_source",
    ]
    scripts = []
    ops = _journal.TargetOps(
        [{"host": "h2", "address": "10.0.0.2"}], run=lambda argv: scripts.append(argv) or (0, "", "")
    )
    assert ops.drop_images("h2", [image]) == (True, "")
    assert 'docker image rm "$name"' in scripts[0][-1] and image in scripts[0][-1]
    assert ops.drop_images("h2", ["web; reboot"]) == (False, "refused to remove ['web; reboot']: not image IDs")
    assert len(scripts) == 1


@pytest.mark.parametrize("after_stop, commits", [("u0", 0), ("u1", 1)])
def test_the_capture_reuses_the_image_committed_while_serving_unless_its_writable_layer_changed(after_stop, commits):
    host, copier = Host(), Copier({"db": [12]}, uppers=[after_stop])
    spec = dict(SPEC, images={"app": {"image_id": "sha256:early", "upper_digest": "u0"}})
    out = m.capture_groups(
        host, [{"id": "g", "members": [member("app", PLAN)], "precopy": spec}], OPTIONS, now=clock(), copier=copier
    )
    assert out["g"]["ok"]
    assert [module for module, _a in host.calls].count("docker_commit_save") == commits
    assert out["g"]["members"]["app"]["image_id"] == ("sha256:early" if not commits else "sha256:x")


def test_a_writable_layer_that_changes_during_the_early_commit_is_committed_after_the_stop():
    host, copier = Host(), Copier({"db": [5]}, uppers=["u0", "u1"])
    out = m.precopy_groups(host, [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}], OPTIONS, copier)
    assert out["g"]["images"] == {"app": {"reason": "its writable layer changed while it was committed"}}


# ------------------------------------------------------------------ bind data


@pytest.mark.parametrize(
    "path, problem",
    [
        ("/", "is / or a system directory"),
        ("/etc", "is / or a system directory"),
        ("/srv", "is / or a system directory"),
        ("/etc/nginx", "is below /etc, a system directory"),
        ("/usr/local/share", "is below /usr, a system directory"),
        ("/proc/1/root", "is below /proc"),
        ("/var/run/docker.sock", "is below /var/run"),
        ("/srv/app/docker.sock", "is a socket path"),
        ("/var/lib/docker/volumes/x/_data", "holds the Docker engine's own data"),
        ("/srv/app/../../etc", "is / or a system directory"),
        ("srv/app", "is not an absolute path"),
        ("/srv/app/data", None),
        ("/home/app/uploads", None),
    ],
)
def test_bind_problem(path, problem):
    found = p.bind_problem(path)
    assert (found is None) if problem is None else (problem in found), found


def test_choose_bind():
    assert p.choose_bind("/srv/a", "/srv/a", True)["choice"] == "skip"  # migrate_bind_data false
    assert p.choose_bind("/srv/a", "/srv/b", True, data=True)["choice"] == "precopy"
    streamed = p.choose_bind("/srv/a", "/srv/b", True, data=True, strategy="stop")
    assert streamed["choice"] == "stream" and "straight into the target's directory" in streamed["reason"]
    assert "below /etc" in p.choose_bind("/etc/app", "/srv/b", True, data=True)["reason"]
    assert "below /etc" in p.choose_bind("/srv/a", "/etc/app", True, data=True)["reason"]  # the target's path too
    assert "not a directory" in p.choose_bind("/srv/a.conf", "/srv/a.conf", False, data=True)["reason"]


class Client:
    def __init__(self, root):
        self.root = root

    def info(self):
        return {"DockerRootDir": self.root, "Name": "h2"}


def test_prepare_bind_data_makes_the_directory_uses_an_empty_one_and_refuses_one_with_data(tmp_path):
    new = tmp_path / "srv" / "new" / "data"
    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("other data")

    def group(path):
        return [{"id": "g", "volumes": [{"name": f"bind:{path}", "container": "app", "path": str(path)}]}]

    done = p.prepare(Client("/var/lib/docker"), group(new), lambda exc: True)["g"]
    assert done["ok"] and new.is_dir() and oct(new.stat().st_mode & 0o777) == "0o700"
    assert done["volumes"][f"bind:{new}"]["remove"] == str(tmp_path / "srv")  # the top directory it made
    assert done["created"]["app"]["bind_data"] == [str(tmp_path / "srv")]
    done = p.prepare(Client("/var/lib/docker"), group(empty), lambda exc: True)["g"]
    assert done["ok"] and done["volumes"][f"bind:{empty}"]["remove"] == f"{empty}/."  # emptied again, not removed
    done = p.prepare(Client("/var/lib/docker"), group(full), lambda exc: True)["g"]
    assert not done["ok"] and "exists on this host and is not an empty directory" in done["msg"]
    assert (full / "x").read_text() == "other data"
    done = p.prepare(Client(str(tmp_path)), group(new), lambda exc: True)["g"]  # below the engine's data
    assert done["refused"] == {f"bind:{new}": f"not copied: {new} holds the Docker engine's own data ({tmp_path})"}


def test_the_undo_empties_a_directory_that_was_there_and_removes_one_it_made(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils import _steps

    made = tmp_path / "made"
    (made / "d").mkdir(parents=True)
    (made / "d" / "f").write_text("x")
    kept = tmp_path / "kept"
    (kept / "d").mkdir(parents=True)
    (kept / ".hidden").write_text("x")
    _steps._remove_path(None, {"path": str(made)})
    _steps._remove_path(None, {"path": f"{kept}/."})
    assert not made.exists() and kept.is_dir() and os.listdir(kept) == []


def test_the_guard_removes_bind_data_it_made_and_refuses_short_paths(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils import _journal

    def run(argv, timeout=10):
        done = subprocess.run(["sh", "-c", argv[-1]], capture_output=True, text=True, check=False)
        return done.returncode, done.stdout, done.stderr

    made = tmp_path / "made"
    (made / "sub").mkdir(parents=True)
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "f").write_text("x")
    ops = _journal.TargetOps([{"host": "h2", "address": "10.0.0.2"}], run=run)
    assert ops.drop_paths("h2", [str(made), f"{kept}/."]) == (True, "")
    assert not made.exists() and kept.is_dir() and os.listdir(kept) == []
    assert ops.drop_paths("h2", ["/srv"])[0] is False
    assert ops.drop_paths("h2", ["/srv/a/../../etc"])[0] is False


def test_a_digest_runs_in_the_background_until_it_is_awaited(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils import _steps

    class Parent:
        client = Client("/var/lib/docker")

    data = tmp_path / "srv" / "data"
    data.mkdir(parents=True)
    (data / "f").write_text("x")
    parent = Parent()
    args = dict(name=f"bind:{data}", cache_dir=str(tmp_path / "in"), path=str(data))
    assert _steps._volume_digest(parent, dict(args, background="start")) == {"changed": False, "started": True}
    # started early (the capture's note): the restore's own start after the handoff takes that one
    again = _steps._volume_digest(parent, dict(args, background="start"))
    assert again == {"changed": False, "started": True, "early": True}
    assert len(parent._ferry_digests) == 1
    found = _steps._volume_digest(parent, dict(args, background="wait"))
    assert (found["digest"], found["entries"]) == tree_digest(str(data))
    assert _steps._volume_digest(parent, dict(args, background="wait"))["failed"]  # awaited once
    refused = _steps._volume_digest(parent, dict(args, path="/etc/app", background="start"))
    assert refused["failed"] and "below /etc" in refused["msg"]


def test_removing_the_run_key_ends_its_shared_connections(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils import _journal

    (tmp_path / "cm-10.0.0.2-22").write_text("")
    (tmp_path / "id_ed25519").write_text("")
    seen = []
    _journal.close_shared_connections(str(tmp_path), run=lambda argv, timeout: seen.append(argv) or (0, "", ""))
    assert seen == [["ssh", "-o", f"ControlPath={tmp_path}/cm-10.0.0.2-22", "-O", "exit", "ferry-shared-connection"]]
    assert sorted(os.listdir(tmp_path)) == ["id_ed25519"]


def test_without_a_run_directory_no_digest_cache_is_kept_anywhere():
    host, copier = Host(), Copier({"db": [5]})
    spec = {k: v for k, v in SPEC.items() if k != "cache_dir"}
    m.precopy_groups(host, [{"id": "g", "members": [member("app", PLAN)], "precopy": spec}], OPTIONS, copier)
    assert [c[2] for c in copier.calls if c[0] == "digest"] == [None, None, None]


# ------------------------------------------------------------------ the image streamed while the source serves


class StreamHost(Host):
    """docker_commit_save with stream_to answers as a stream into the target's engine, a new image each time."""

    def __init__(self):
        super().__init__()
        self.commits = 0

    def __call__(self, module, args):
        result = super().__call__(module, args)
        if module.endswith("docker_commit_save") and args.get("stream_to"):
            self.commits += 1
            image = f"sha256:{self.commits}"
            result = {"image_id": image, "size": 10, "streamed": {"new": True, "bytes": 10, "sha256": "f" * 64}}
        return result


class StreamCopier(Copier):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropped = []

    def stream_target(self):
        return {"user": "root", "address": "h2", "port": 22, "key_dir": "/k", "timeout": 60}

    def start_unpack_probe(self):
        pass

    def drop_image(self, image_id):
        self.dropped.append(image_id)
        return ""


STREAM = dict(OPTIONS, image="stream")


def test_the_image_committed_while_serving_streams_into_the_target_and_the_capture_reuses_it():
    host, copier = StreamHost(), StreamCopier({"db": [5]}, uppers=["u0", "u0"])
    out = m.precopy_groups(host, [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}], STREAM, copier)
    early = out["g"]["images"]["app"]
    assert early["image_id"] == "sha256:1" and early["streamed"]["new"]
    commit = next(args for module, args in host.calls if module == "docker_commit_save")
    assert commit["stream_to"]["address"] == "h2"
    journaled = [
        a["containers"] for module, a in host.calls if module == "docker_migrate_guard" and a["phase"] == "precopy"
    ]
    assert {"name": "app", "streamed_images": ["sha256:1"]} in [c for cs in journaled for c in cs]

    host, copier = StreamHost(), StreamCopier({"db": [0]}, uppers=["u0"])
    spec = dict(SPEC, images={"app": early})
    got = m.capture_groups(
        host, [{"id": "g", "members": [member("app", PLAN)], "precopy": spec}], STREAM, now=clock(), copier=copier
    )
    app = got["g"]["members"]["app"]
    assert host.commits == 0 and app["image_id"] == "sha256:1" and app["image_streamed"] == early["streamed"]
    assert copier.dropped == []


def test_a_capture_that_commits_again_removes_the_image_streamed_while_serving():
    early = {"image_id": "sha256:early", "upper_digest": "u0", "bytes": 10, "streamed": {"new": True, "bytes": 10}}
    host, copier = StreamHost(), StreamCopier({"db": [0]}, uppers=["u1"])
    spec = dict(SPEC, images={"app": early})
    got = m.capture_groups(
        host, [{"id": "g", "members": [member("app", PLAN)], "precopy": spec}], STREAM, now=clock(), copier=copier
    )
    assert copier.dropped == ["sha256:early"] and got["g"]["members"]["app"]["image_id"] == "sha256:1"
    journaled = [c for module, a in host.calls if module == "docker_migrate_guard" for c in a["containers"]]
    assert {"name": "app", "streamed_images": ["sha256:1"]} in journaled


def test_a_failed_precopy_removes_the_image_it_streamed():
    host, copier = StreamHost(), StreamCopier({"db": [5]}, uppers=["u0", "u0"])

    def failing(module, args):
        if module.endswith("docker_migrate_source") or (
            module.endswith("docker_migrate_guard")
            and args.get("phase") == "precopy"
            and any(c.get("streamed_images") for c in args["containers"])
        ):
            return {"failed": True, "msg": "journal full"}
        return host(module, args)

    out = m.precopy_groups(failing, [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}], STREAM, copier)
    assert not out["g"]["ok"] and copier.dropped == ["sha256:1"]


# ------------------------------------------------------------------ the last delta: ACLs and xattrs of what changed


def test_a_pass_without_attributes_and_a_listed_pass():
    full = p.rsync_argv("/k", 22, "/src/db", "root", "h2", "/t/db")
    bare = p.rsync_argv("/k", 22, "/src/db", "root", "h2", "/t/db", attributes=False)
    listed = p.rsync_argv("/k", 22, "/src/db", "root", "h2", "/t/db", listed=True)
    assert {"--acls", "--xattrs", "--delete"} <= set(full) and "--files-from=-" not in full
    assert not {"--acls", "--xattrs"} & set(bare) and "--delete" in bare
    assert {"--acls", "--xattrs", "--files-from=-", "--from0"} <= set(listed) and "--delete" not in listed
    assert full[-2:] == bare[-2:] == listed[-2:] == ["/src/db/", "root@h2:/t/db/"]


def test_what_changed_since_a_moment_is_listed_by_its_change_time(tmp_path):
    (tmp_path / "old").write_text("a")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "kept").write_text("k")
    time.sleep(0.05)
    since = time.time()
    time.sleep(0.05)
    (tmp_path / "dir" / "new").write_text("b")
    os.chmod(tmp_path / "old", 0o600)  # a mode changes the change time as xattrs and ACLs do
    os.symlink("old", tmp_path / "link")
    listed = sorted(p.changed_since(str(tmp_path), since).split(b"\0")[:-1])
    assert listed == [b".", b"./dir", b"./dir/new", b"./link", b"./old"]
    assert p.changed_since(str(tmp_path), time.time() + 60) == b""
    with pytest.raises(OSError):  # the directory is gone: nothing to list, the pass fails
        p.changed_since(str(tmp_path / "gone"), since)


def test_a_last_delta_after_live_passes_leaves_attributes_to_a_listed_pass(monkeypatch):
    calls = []

    def fake_pass(argv, where, timeout, run=None, listed=None, live=False):
        calls.append((argv, listed))
        assert not live  # a last pass, once stopped
        return {"sent": 10, "changed": 1, "files": 1, "literal": 1}

    monkeypatch.setattr(p, "copy_pass", fake_pass)
    monkeypatch.setattr(p, "changed_since", lambda path, since: b"./a\0./b\0" if since == 98.0 else b"")
    copier = p.LocalCopier(None, {"user": "root", "address": "h2", "port": 22, "key_dir": "/k"})
    assert copier.sync("/src/db", "/t/db", attributes_since=100.0) == {
        "sent": 20,
        "changed": 2,
        "files": 2,
        "literal": 2,
    }
    (first, none), (second, paths) = calls
    assert "--xattrs" not in first and none is None
    assert {"--xattrs", "--files-from=-"} <= set(second) and paths == b"./a\0./b\0"
    calls.clear()
    copier.sync("/src/db", "/t/db", attributes_since=500.0)  # nothing changed since: no listed pass
    assert len(calls) == 1
    calls.clear()
    copier.sync("/src/db", "/t/db")  # a streamed volume, or no live pass: one pass with everything
    assert len(calls) == 1 and "--xattrs" in calls[0][0]


class SinceCopier(Copier):
    def sync(self, src, dest, attributes_since=None, live=False):
        self.calls.append(("since", src, attributes_since))
        return super().sync(src, dest, live=live)


def test_the_capture_gives_only_pre_copied_volumes_the_time_of_their_last_live_pass():
    plan = [{"name": "db", "choice": "precopy", "reason": "plain"}, {"name": "big", "choice": "stream", "reason": "s"}]
    spec = dict(
        SPEC,
        volumes={"db": {"mountpoint": "/t/db"}, "big": {"mountpoint": "/t/big"}},
        attributes_since={"db": 123.5, "big": 99.0},
    )
    host, copier = Host(), SinceCopier({"db": [0], "big": [9]})
    out = m.capture_groups(
        host, [{"id": "g", "members": [member("app", plan)], "precopy": spec}], OPTIONS, now=clock(), copier=copier
    )
    assert out["g"]["ok"]
    assert sorted(c[1:] for c in copier.calls if c[0] == "since") == [("/src/big", None), ("/src/db", 123.5)]


class MeetingCopier(Copier):
    """A last pass that only ends once the commit has begun: a capture that commits after its passes waits for
    ever, so the pass gives up after a while and says so."""

    def __init__(self, deltas, committing):
        super().__init__(deltas)
        self.committing = committing
        self.met = None

    def sync(self, src, dest, attributes_since=None, live=False):
        self.met = self.committing.wait(timeout=5)
        return super().sync(src, dest, live=live)


class CommittingHost(Host):
    def __init__(self, fail=False):
        super().__init__()
        self.committing = threading.Event()
        self.fail = fail

    def __call__(self, module, args):
        if module.endswith("docker_commit_save"):
            self.committing.set()
            if self.fail:
                self.calls.append(("docker_commit_save", args))
                return {"failed": True, "msg": "no space left for the layer"}
        return super().__call__(module, args)


def test_the_image_is_committed_while_the_last_passes_run():
    plan = [{"name": "db", "choice": "stream", "reason": p.STREAM_REASON}]
    host = CommittingHost()
    copier = MeetingCopier({"db": [9000]}, host.committing)
    group = {"id": "g", "members": [member("app", plan)], "precopy": dict(SPEC, volumes={"db": {"mountpoint": "/t"}})}
    out = m.capture_groups(host, [group], OPTIONS, now=clock(), copier=copier)
    assert out["g"]["ok"], out["g"]
    assert copier.met, "the last pass ended before the commit began: they ran one after the other"
    app = out["g"]["members"]["app"]
    # both halves are in the member's result
    assert app["image_id"] == "sha256:x" and app["volumes"]["db"]["digest"] == "d-db"
    assert app["bytes_captured"] == 9100 + 10


class SlowCommitHost(Host):
    """A commit that goes on until the test lets it end (``done``): the last passes end first."""

    def __init__(self):
        super().__init__()
        self.done = threading.Event()

    def __call__(self, module, args):
        if module.endswith("docker_commit_save"):
            assert self.done.wait(timeout=5), "the commit was never let go"
        return super().__call__(module, args)


class Handoff:
    """The module's handoff writer: ``ready`` records its note (and lets the commit end), then the handoff."""

    def __init__(self, host, answer=""):
        self.host, self.answer, self.order = host, answer, []

    def __call__(self, dest, doc):
        self.order.append(("handoff", dest, doc["ok"]))
        return ""

    def ready(self, dest, names, changed):
        self.order.append(("ready", dest, names))
        self.changed = changed
        self.host.done.set()
        return self.answer


@pytest.mark.parametrize("answer", ["", "writing root@h2:/in/g.ready failed (exit 255): broken pipe"])
def test_the_restore_hears_that_the_volumes_are_ready_while_the_image_still_streams(answer):
    plan = [{"name": "db", "choice": "stream", "reason": p.STREAM_REASON}]
    host = SlowCommitHost()
    handoff = Handoff(host, answer)
    group = {
        "id": "g",
        "members": [member("app", plan)],
        "precopy": dict(SPEC, volumes={"db": {"mountpoint": "/t"}}),
        "transfer": {"src": "/out/g", "dest": "/in/g"},
    }
    options = dict(OPTIONS, send={"max_bytes": 0, "handoff": True})
    out = m.capture_groups(
        host, [group], options, now=clock(), send=lambda s, d: 1, copier=Copier({"db": [9000]}), handoff=handoff
    )
    assert out["g"]["ok"], out["g"]
    # the note first (the commit was still running), the handoff after it; a note that failed costs nothing else
    assert handoff.order == [("ready", "/in/g", ["db"]), ("handoff", "/in/g", True)]
    assert out["g"].get("ready_note", "") == answer


def test_a_note_also_when_the_image_is_done_first_and_none_without_a_waiting_restore():
    plan = [{"name": "db", "choice": "stream", "reason": p.STREAM_REASON}]
    group = {
        "id": "g",
        "members": [member("app", plan)],
        "precopy": dict(SPEC, volumes={"db": {"mountpoint": "/t"}}),
        "transfer": {"src": "/out/g", "dest": "/in/g"},
    }
    # the commit ends before the last pass does: the note still goes first (the restore digests while the
    # capture ends: the bundle's send, the journal, the handoff)
    host = CommittingHost()
    handoff = Handoff(SlowCommitHost())
    options = dict(OPTIONS, send={"max_bytes": 0, "handoff": True})
    copier = MeetingCopier({"db": [9000]}, host.committing)
    out = m.capture_groups(host, [group], options, now=clock(), send=lambda s, d: 1, copier=copier, handoff=handoff)
    assert out["g"]["ok"] and handoff.order == [("ready", "/in/g", ["db"]), ("handoff", "/in/g", True)]
    # no restore waits (send.handoff false): nothing is told
    host = SlowCommitHost()
    host.done.set()
    out = m.capture_groups(host, [dict(group)], OPTIONS, now=clock(), copier=Copier({"db": [9000]}))
    assert out["g"]["ok"] and "ready_note" not in out["g"]


def test_a_commit_that_fails_beside_the_last_passes_puts_the_source_back():
    plan = [{"name": "db", "choice": "stream", "reason": p.STREAM_REASON}]
    host = CommittingHost(fail=True)
    copier = MeetingCopier({"db": [9000]}, host.committing)
    group = {"id": "g", "members": [member("app", plan)], "precopy": dict(SPEC, volumes={"db": {"mountpoint": "/t"}})}
    out = m.capture_groups(host, [group], OPTIONS, now=clock(), copier=copier)
    failed = out["g"]
    assert not failed["ok"] and failed["phase"] == "capture" and "no space left for the layer" in failed["msg"]
    assert failed["target_touched"]  # the streamed volume is for the role to remove on the target
    modules = [module for module, _a in host.calls]
    assert modules.count("docker_container") == 2  # stopped, then started again
    assert "docker_volume_backup" not in modules


def test_the_live_passes_say_when_the_last_one_began():
    host, copier = Host(), Copier({"db": [500, 5]})
    before = time.time()
    out = m.precopy_groups(host, [{"id": "g", "members": [member("app", PLAN)], "precopy": SPEC}], OPTIONS, copier)
    assert before - 0.01 <= out["g"]["volumes"]["db"]["attributes_since"] <= time.time()


def test_what_went_straight_into_the_target_does_not_make_a_bundle_too_big_to_send_right_away():
    plan = [{"name": "big", "choice": "stream", "reason": "s"}]
    spec = dict(SPEC, volumes={"big": {"mountpoint": "/t/big"}})
    sent = []
    options = dict(OPTIONS, send=dict(OPTIONS["send"], max_bytes=1000))
    group = {"id": "g", "members": [member("app", plan)], "precopy": spec, "transfer": {"src": "/b", "dest": "/in"}}
    out = m.capture_groups(
        Host(),
        [group],
        options,
        now=clock(),
        send=lambda src, dest: sent.append(src) or 7,
        copier=Copier({"big": [10**9]}),
    )
    app = out["g"]["members"]["app"]
    assert app["bytes_captured"] == 10**9 + 100 + 10 and app["direct_bytes"] == 10**9 + 100
    assert out["g"]["sent"] and sent == ["/b"]  # 10 bytes in the bundle: sent in the same process


# ------------------------------------------------------------------ the listed last pass, from the two trees

_RSYNC = subprocess.run(["sh", "-c", "command -v rsync"], capture_output=True, text=True, check=False).stdout.strip()


def _write(path, data, mtime=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))


def _whole_pass(src, dest):
    """A live pass as the pre-copy makes it (the whole tree, deletions included), locally."""
    argv = p.rsync_argv("/keys", 22, str(src), "root", "host", str(dest))
    at = argv.index("--rsh")
    del argv[at : at + 2]
    argv[-1] = f"{dest}/"
    subprocess.run(["rsync", *argv], check=True, timeout=60, capture_output=True)


def _exact_pass(src, dest, send, remove):
    """``REMOVE_LISTED`` and ``rsync_argv(exact=True)`` run locally: the same command and options, without ssh."""
    listed = b"".join(name.encode("utf-8", "surrogateescape") + b"\0" for name in remove)
    done = subprocess.run(["sh", "-c", p.REMOVE_LISTED], cwd=dest, input=listed, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    argv = p.rsync_argv("/keys", 22, str(src), "root", "host", str(dest), exact=True)
    at = argv.index("--rsh")
    del argv[at : at + 2]
    argv[-1] = f"{dest}/"
    listed = b"".join(name.encode("utf-8", "surrogateescape") + b"\0" for name in send)
    done = subprocess.run(["rsync", *argv], input=listed, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def _trees(path):
    tree = {}
    digest = walk_digest(str(path), tree=tree)[0]
    return digest, tree


def _over_the_wire(tree):
    return p.parse_tree(p.tree_record(tree).encode("ascii"))


@pytest.mark.skipif(not _RSYNC, reason="rsync is not installed")
def test_the_listed_last_pass_makes_the_target_tree_the_sources_whatever_changed_after_the_live_pass(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    old = 1_600_000_000_000_000_000
    for name in (
        "same",
        "content",
        "touched",
        "mode",
        "deleted",
        "old/a",
        "old/b/c",
        "gone/x",
        "gone/y/z",
        "x/1",
        "y/2",
        "f2",
        "d2/k",
        "d3/k",
        "hl1",
        "keep/deep/file",
    ):
        _write(str(src / name), name.encode() * 50, mtime=old)
    os.symlink("same", src / "link")
    os.mkdir(src / "emptied")
    _write(str(src / "emptied" / "only"), b"o", mtime=old)
    _whole_pass(src, dest)
    target = _over_the_wire(_trees(dest)[1])
    assert _trees(dest)[0] == _trees(src)[0]

    # what a service and a deploy do once the live pass is over
    _write(str(src / "content"), b"C" * len(b"content" * 50), mtime=old)  # same size, other bytes
    os.utime(src / "touched", ns=(old + 5, old + 5))  # only the time
    os.chmod(src / "mode", 0o600)
    os.remove(src / "deleted")
    _write(str(src / "new" / "deep" / "f"), b"new")
    os.mkdir(src / "new-empty")
    subprocess.run(["rm", "-r", str(src / "gone")], check=True)
    os.rename(src / "old", src / "renamed")  # a renamed directory: what is below it keeps its change time
    os.rename(src / "x", src / "swap")  # two directories swapped
    os.rename(src / "y", src / "x")
    os.rename(src / "swap", src / "y")
    os.remove(src / "f2")  # a file becomes a directory
    _write(str(src / "f2" / "inside"), b"i")
    subprocess.run(["rm", "-r", str(src / "d2")], check=True)  # a directory becomes a file
    _write(str(src / "d2"), b"now a file")
    subprocess.run(["rm", "-r", str(src / "d3")], check=True)  # a directory becomes a symlink
    os.symlink("keep", src / "d3")
    os.remove(src / "link")
    os.symlink("content", src / "link")  # another target
    os.link(src / "hl1", src / "hl2")  # a second name for an unchanged file
    os.remove(src / "emptied" / "only")
    weird = os.fsencode(str(src)) + b"/odd \n name \xff"
    with open(weird, "wb") as handle:
        handle.write(b"odd")
    _write(str(src / "temporary"), b"t")  # made and removed: nothing to do
    os.remove(src / "temporary")

    digest, tree = _trees(src)
    send, remove = p.listed_delta(tree, target)
    assert "same" not in send and "keep/deep/file" not in send  # nothing unchanged goes
    assert "gone" in remove and "gone/x" not in remove  # a removed directory goes as one
    assert "d3" in send and "d3/k" not in remove  # below a directory that became a symlink: replaced with it
    assert set(remove) == {"deleted", "emptied/only", "gone", "old", "x/1", "y/2"}
    _exact_pass(src, dest, send, remove)

    again_digest, again = _trees(dest)
    assert again_digest == digest
    assert {name: value[0] for name, value in again.items()} == {name: value[0] for name, value in tree.items()}
    assert os.stat(dest / "hl1").st_ino == os.stat(dest / "hl2").st_ino  # still one file with two names
    assert os.readlink(dest / "d3") == "keep" and os.path.isfile(dest / "keep" / "deep" / "file")
    # the trees are the same: only the files with several names go every time (with their directory)
    assert p.listed_delta(tree, _over_the_wire(again)) == ([".", "hl1", "hl2"], [])


def test_listed_delta_never_reaches_below_what_the_source_does_not_have_as_a_directory():
    entry = "\0".join
    source = {
        ".": (1, entry([".", "5", "493", "0", "0", "0", "", "", ""]), False),
        "link": (1, entry(["link", "2", "0", "0", "0", "0", "/etc", "", ""]), False),
        "file": (1, entry(["file", "0", "420", "0", "0", "1", "", "ab", ""]), False),
    }
    target = dict(source)
    target["link/shadow"] = (1, "link/shadow\0" + "0" * 32, False)  # the target claims a path below the symlink
    target["file/x"] = (1, "file/x\0" + "0" * 32, False)  # and below a file
    target["gone"] = (1, "gone\0" + "0" * 32, False)
    assert p.listed_delta(source, target) == (["."], ["gone"])


def _record(entries, version=1):
    return json.dumps({"version": version, "entries": entries}).encode()


TOP = [1, ".\0" + "5\0493\0" + "0\0" * 5, False]


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        _record({".": TOP}, version=2),
        json.dumps({"version": 1, "entries": []}).encode(),
        _record({"a": [1, "a\0x", False]}),  # no top directory
        _record({".": TOP, "../etc": [1, "../etc\0x", False]}),
        _record({".": TOP, "/etc": [1, "/etc\0x", False]}),
        _record({".": TOP, "a//b": [1, "a//b\0x", False]}),
        _record({".": TOP, "a/./b": [1, "a/./b\0x", False]}),
        _record({".": TOP, "a": [1, "b\0x", False]}),  # another path's entry
        _record({".": [True, TOP[1], False]}),
        _record({".": [1, 5, False]}),
        _record({".": [1, TOP[1], 0]}),
        _record({".": [1, TOP[1]]}),
    ],
)
def test_a_target_tree_that_is_not_plainly_inside_the_volume_is_refused(text):
    with pytest.raises(ValueError):
        p.parse_tree(text)


def test_the_target_keeps_its_tree_only_with_the_digest_taken_while_the_source_serves(tmp_path):
    root = tmp_path / "vol"
    _write(str(root / "a" / "b"), b"data")
    cache_dir = str(tmp_path / "run")
    p.path_digest(str(root), cache_dir, "bind:/srv/x", "/var/lib/docker")
    assert not os.path.exists(p.tree_path(cache_dir, "bind:/srv/x"))
    assert not os.path.exists(p.cache_path(cache_dir, "bind:_srv_x"))  # the check once stopped: nothing reads it again
    found = p.path_digest(str(root), cache_dir, "bind:/srv/x", "/var/lib/docker", settle=True, sleep=lambda s: None)
    kept = p.parse_tree(open(p.tree_path(cache_dir, "bind:/srv/x"), "rb").read())
    assert set(kept) == {".", "a", "a/b"} and found[1] == 2
    assert os.path.exists(p.cache_path(cache_dir, "bind:_srv_x"))
    assert oct(os.stat(p.tree_path(cache_dir, "bind:/srv/x")).st_mode & 0o777) == "0o600"


class TreeCopier(Copier):
    """A copier whose target kept its trees: ``trees`` per volume, or the error reading one raises."""

    def __init__(self, trees, **kwargs):
        super().__init__(**kwargs)
        self.trees = trees

    def fetch_tree(self, directory, name):
        self.calls.append(("fetch", directory, name, len([c for c in self.calls if c[0] == "stop"])))
        found = self.trees[name]
        if isinstance(found, Exception):
            raise found
        return found, f"{name}-base"

    def digest(self, path, cache, tree=None, save=True):
        if tree is not None:
            tree.update({".": (1, "\0".join([".", "5", "493", "0", "0", "0", "", "", ""]), False)})
            tree["f"] = (2, "\0".join(["f", "0", "420", "0", "0", "3", "", "new", ""]), False)
        return super().digest(path, cache, save=save)

    def sync_exact(self, src, dest, send, remove):
        self.calls.append(("exact", src, dest, send, remove))
        return {"sent": 50, "changed": 3, "files": 1, "literal": 3}


def _two_trees():
    """A member with two pre-copied volumes, the capture's spec, and the tree the target kept of ``db``: ``f`` with
    other content there, ``old`` gone from the source (the source's tree: TreeCopier.digest)."""
    plan = [
        {"name": "db", "choice": "precopy", "reason": "plain"},
        {"name": "logs", "choice": "precopy", "reason": "p"},
    ]
    spec = dict(
        SPEC,
        volumes={"db": {"mountpoint": "/t/db"}, "logs": {"mountpoint": "/t/logs"}},
        target_cache_dir="/t/run",
    )
    target = {".": (1, "\0".join([".", "5", "493", "0", "0", "0", "", "", ""]), False)}
    target["f"] = (2, "\0".join(["f", "0", "420", "0", "0", "3", "", "old", ""]), False)
    target["old"] = (2, "\0".join(["old", "0", "420", "0", "0", "3", "", "o", ""]), False)
    return plan, spec, target


def test_the_capture_reads_the_target_trees_before_the_stop_and_sends_only_what_differs():
    plan, spec, target = _two_trees()
    host, copier = Host(), TreeCopier({"db": target, "logs": OSError("no such file")}, deltas={"logs": [7]})
    stops = []
    host_call = host.__call__

    def call(module, args):
        if module.endswith("docker_container"):
            stops.append(len(copier.calls))
        return host_call(module, args)

    out = m.capture_groups(
        call, [{"id": "g", "members": [member("app", plan)], "precopy": spec}], OPTIONS, now=clock(), copier=copier
    )
    assert out["g"]["ok"], out
    fetched = [c for c in copier.calls if c[0] == "fetch"]
    assert [c[1:3] for c in fetched] == [("/t/run", "db"), ("/t/run", "logs")]
    assert stops and all(copier.calls.index(c) < stops[0] for c in fetched)  # read while the members served
    assert ("exact", "/src/db", "/t/db", [".", "f"], ["old"]) in copier.calls
    assert ("sync", "/src/logs", "/t/logs") in copier.calls  # no tree: the whole tree is compared
    volumes = out["g"]["members"]["app"]["volumes"]
    assert volumes["db"]["final_listed_paths"] == 3 and volumes["db"]["final_sent_bytes"] == 50
    assert volumes["db"]["digest"] == "d-db" and "final_whole_tree" not in volumes["db"]
    assert volumes["logs"]["final_whole_tree"] == "no such file" and "final_listed_paths" not in volumes["logs"]
    assert volumes["logs"]["final_delta_bytes"] == 7
    # the digests once stopped are the run's last on this host: their cache is not written again
    assert sorted(copier.saved) == [("/src/db", False), ("/src/logs", False)]


def test_the_note_to_a_waiting_restore_says_what_each_listed_last_pass_changed_in_which_tree():
    plan, spec, target = _two_trees()
    host = SlowCommitHost()
    handoff = Handoff(host)
    copier = TreeCopier({"db": target, "logs": OSError("no such file")}, deltas={"logs": [7]})
    group = {"id": "g", "members": [member("app", plan)], "precopy": spec, "transfer": {"src": "/o/g", "dest": "/in/g"}}
    options = dict(OPTIONS, send={"max_bytes": 0, "handoff": True})
    out = m.capture_groups(host, [group], options, now=clock(), send=lambda s, d: 1, copier=copier, handoff=handoff)
    assert out["g"]["ok"], out["g"]
    assert handoff.order[0] == ("ready", "/in/g", ["db", "logs"])
    # only the listed pass says what it changed, and from which of the target's trees (logs had none: its
    # check walks the whole tree)
    assert handoff.changed == {"db": {"base": "db-base", "send": [".", "f"], "remove": ["old"]}}


def test_the_walk_closes_every_directory_it_opened_also_when_it_fails(tmp_path, monkeypatch):
    for name in ("a/b/c/f", "a/d/g", "e/h"):
        _write(str(tmp_path / "t" / name), b"x")
    before = len(os.listdir("/proc/self/fd"))
    assert walk_digest(str(tmp_path / "t"))[:2] == tree_digest(str(tmp_path / "t"))
    assert len(os.listdir("/proc/self/fd")) == before
    listdir, calls = os.listdir, []

    def failing(path):
        calls.append(path)
        if len(calls) == 3:  # two directories deep
            raise PermissionError("denied")
        return listdir(path)

    monkeypatch.setattr(os, "listdir", failing)
    with pytest.raises(PermissionError):
        walk_digest(str(tmp_path / "t"))
    monkeypatch.setattr(os, "listdir", listdir)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("answer, expected", [("zstd", {"unpack": "zstd"}), ("none", {"unpack": "none"}), (None, {})])
def test_the_stream_target_says_how_the_target_unpacks_once_asked(monkeypatch, answer, expected):
    asked = []

    def probe(key_dir, port, user, address, timeout):
        asked.append((user, address, timeout))
        if answer is None:
            raise p.SendFailed("ssh: connect to host h2 port 22: Connection refused")
        return answer

    monkeypatch.setattr(p, "probe_unpack", probe)
    send = {"user": "root", "address": "h2", "port": 22, "key_dir": "/k", "timeout": 600}
    copier = p.LocalCopier(None, send)
    base = {"user": "root", "address": "h2", "port": 22, "key_dir": "/k", "timeout": 600}
    assert copier.stream_target() == base  # not asked: nothing known
    copier.start_unpack_probe()
    copier.start_unpack_probe()  # asked once
    assert copier.stream_target() == dict(base, **expected) and asked == [("root", "h2", 60)]


# ------------------------------------------------------------------ the target's check from its kept tree

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["grow", "chmod", "remove", "new-file", "new-dir", "to-dir", "to-file", "to-link", "touch"]),
        st.integers(0, 10**6),
    ),
    max_size=6,
)


def _change(root, ops):
    """Apply ``ops`` (``_OPS``) to the tree at ``root`` in place, each to the entry its number picks."""
    for op, pick in ops:
        paths = sorted(os.path.join(top, name) for top, dirs, names in os.walk(root) for name in dirs + names) or [root]
        path = paths[pick % len(paths)]
        is_dir = os.path.isdir(path) and not os.path.islink(path)
        if op == "grow" and os.path.isfile(path) and not os.path.islink(path):
            with open(path, "ab") as handle:
                handle.write(b"+" * (1 + pick % 5))
        elif op == "chmod" and not os.path.islink(path):
            os.chmod(path, 0o700 if is_dir else 0o640)
        elif op == "remove" and path != root:
            subprocess.run(["rm", "-rf", path], check=True)
        elif op in ("new-file", "new-dir"):
            where = path if is_dir else os.path.dirname(path)
            new = os.path.join(where, f"new{pick}")
            if not os.path.lexists(new):
                if op == "new-dir":
                    os.makedirs(os.path.join(new, "inner"))
                    _write(os.path.join(new, "inner", "f"), b"in")
                else:
                    _write(new, b"n" * (pick % 7))
        elif op == "to-dir" and path != root and not is_dir:
            os.unlink(path)
            os.mkdir(path)
            _write(os.path.join(path, "g"), b"g")
        elif op in ("to-file", "to-link") and path != root:
            subprocess.run(["rm", "-rf", path], check=True)
            if op == "to-file":
                _write(path, b"file now")
            else:
                os.symlink("elsewhere", path)
        elif op == "touch":
            os.utime(path, ns=(1, 10**18 + pick), follow_symlinks=False)


def _tree_lines(tree):
    return {name: entry for name, (_mtime, entry, _links) in tree.items()}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_random_dirs(), ops=_OPS)
def test_the_digest_from_the_kept_tree_and_the_listed_paths_is_the_walks(tmp_path_factory, tree, ops):
    """The target kept its tree after the live passes; the source's last pass changed the paths ``listed_delta``
    names (here the tree is changed in place, and compared with the kept one as the source's would be): reading
    only those gives what a walk of the whole tree gives."""
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import NotListed, listed_digest

    root = str(tmp_path_factory.mktemp("listed") / "vol")
    _write_dirs(root, {k: v for k, v in tree.items() if not isinstance(v, tuple)}, [])
    subprocess.run(["find", root, "-links", "+1", "-type", "f", "-delete"], check=True)  # no hard links here
    cache, kept = {}, {}
    walk_digest(root, cache, now=10**10, tree=kept)
    base = p.parse_tree(p.tree_record(kept).encode())
    _change(root, ops)
    now = {}
    expected = walk_digest(root, dict(cache), now=10**10, tree=now)
    send, remove = p.listed_delta(now, base)
    try:
        found = listed_digest(root, _tree_lines(base), send, remove, dict(cache), now=10**10)
    except NotListed:
        assert any(links for _m, _e, links in now.values())
        return
    assert found[:2] == expected[:2]


def test_the_digest_from_the_kept_tree_reads_only_the_listed_paths(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import listed_digest

    root = tmp_path / "vol"
    for i in range(50):
        _write(str(root / "d" / f"f{i}"), b"x" * 1000)
    kept = {}
    walk_digest(str(root), {}, now=10**10, tree=kept)
    lines = _tree_lines(kept)
    # nothing listed changed: the kept entries alone, even for a file that did change behind the list's back
    (root / "d" / "f3").write_bytes(b"y" * 1000)
    unlisted = listed_digest(str(root), dict(lines), [], [])
    assert unlisted[2] == 0 and unlisted[:2] != tree_digest(str(root))
    # listed: read again (1000 bytes), and the digest is the tree's
    listed = listed_digest(str(root), dict(lines), ["d", "d/f3"], [])
    assert listed[:2] == tree_digest(str(root)) and listed[2] == 1000


def test_a_listed_path_is_never_read_through_a_symlink(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import NotListed, listed_digest

    outside = tmp_path / "outside"
    _write(str(outside / "secret"), b"s")
    root = tmp_path / "vol"
    root.mkdir()
    os.symlink(str(outside), root / "link")
    kept = {}
    walk_digest(str(root), {}, tree=kept)
    lines = _tree_lines(kept)
    # a path below a symlink is not in the tree (as the walk sees it): it is gone, not read
    found = listed_digest(str(root), dict(lines), ["link/secret"], [])
    assert found[:2] == tree_digest(str(root)) and found[2] == 0
    for bad in ("../outside/secret", "/etc/passwd", "a//b", "a/./b"):
        with pytest.raises(NotListed, match="not inside the tree"):
            listed_digest(str(root), dict(lines), [bad], [])


def test_the_check_from_the_kept_tree_needs_the_very_tree_the_last_pass_started_from(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import NotListed

    root = tmp_path / "vol"
    _write(str(root / "f"), b"old")
    run_dir = str(tmp_path / "run")
    # the target's digest while the source served keeps its tree
    first = p.path_digest(str(root), run_dir, "bind:/srv/x", "/var/lib/docker", settle=True, sleep=lambda s: None)
    tree_file, cache_file = p.tree_path(run_dir, "bind:/srv/x"), p.cache_path(run_dir, "bind:_srv_x")
    text = open(tree_file, "rb").read()
    base = __import__("hashlib").sha256(text).hexdigest()
    (root / "f").write_bytes(b"new content")
    (root / "g").write_bytes(b"g")
    changed = {"base": base, "send": [".", "f", "g"], "remove": []}
    p.preload_trees([tree_file]).join()
    found = p.listed_volume_digest(str(root), cache_file, tree_file, changed)
    assert found[:2] == tree_digest(str(root)) != first[:2] and found[2] == len(b"new content") + 1
    # another tree than the pass's (the sha256 of its record differs), none, or hard links: the whole tree is walked
    with pytest.raises(NotListed, match="not the one the last pass started from"):
        p.listed_volume_digest(str(root), cache_file, tree_file, dict(changed, base="0" * 64))
    os.link(root / "g", root / "h")
    p.path_digest(str(root), run_dir, "bind:/srv/x", "/var/lib/docker", settle=True, sleep=lambda s: None)
    rebased = dict(changed, base=__import__("hashlib").sha256(open(tree_file, "rb").read()).hexdigest())
    with pytest.raises(NotListed, match="several names"):
        p.listed_volume_digest(str(root), cache_file, tree_file, rebased)
    os.unlink(tree_file)
    with pytest.raises(NotListed, match="no tree"):
        p.listed_volume_digest(str(root), cache_file, tree_file, changed)


def test_a_tree_read_ahead_is_used_only_while_its_file_is_the_one_read(tmp_path):
    path = str(tmp_path / "t.tree.json")
    tree = {".": (1, "\0".join([".", "5", "493", "0", "0", "0", "", "", ""]), False)}
    p.save_tree(path, tree)
    p.preload_trees([path, str(tmp_path / "missing")]).join()
    assert path in p._PRELOADED and str(tmp_path / "missing") not in p._PRELOADED
    base, found = p._take_tree(path)
    assert found == tree and base == __import__("hashlib").sha256(open(path, "rb").read()).hexdigest()
    assert path not in p._PRELOADED  # taken once
    p.preload_trees([path]).join()
    tree["f"] = (2, "\0".join(["f", "0", "420", "0", "0", "1", "", "c", ""]), False)
    p.save_tree(path, tree)  # replaced since it was read: read again
    assert p._take_tree(path)[1] == tree


def test_a_background_digest_with_what_the_pass_changed_reads_only_that_or_says_why_not(tmp_path):
    from ansible_collections.ferry.docker.plugins.module_utils import _steps

    class Parent:
        client = Client("/var/lib/docker")

    data = tmp_path / "srv" / "data"
    _write(str(data / "f"), b"x")
    cache_dir = str(tmp_path / "in")
    p.path_digest(str(data), cache_dir, f"bind:{data}", "/var/lib/docker", settle=True, sleep=lambda s: None)
    base = __import__("hashlib").sha256(open(p.tree_path(cache_dir, f"bind:{data}"), "rb").read()).hexdigest()
    _write(str(data / "g"), b"gg")
    parent = Parent()
    args = dict(name=f"bind:{data}", cache_dir=cache_dir, path=str(data))
    changed = {"base": base, "send": [".", "g"], "remove": []}
    assert _steps._volume_digest(parent, dict(args, background="start", changed=changed))["started"]
    found = _steps._volume_digest(parent, dict(args, background="wait"))
    assert (found["digest"], found["entries"]) == tree_digest(str(data)) and found["listed_paths"] == 2
    assert found["read_bytes"] == 2
    _steps._volume_digest(parent, dict(args, background="start", changed=dict(changed, base="1" * 64)))
    walked = _steps._volume_digest(parent, dict(args, background="wait"))
    assert (walked["digest"], walked["entries"]) == tree_digest(str(data)) and "listed_paths" not in walked
    assert "not the one the last pass started from" in walked["walked"]


@pytest.mark.parametrize(
    "deploy",
    [
        "rm -r d && echo file > d",  # a directory became a file
        "rm -r d && ln -s e d",  # ... a symlink
        "rm -r d",  # ... is gone
        "rm f && mkdir -p f/g && echo in > f/g/h",  # a file became a directory
        "mv d swap && mv e d && mv swap e",  # two directories swapped (what is below them keeps its times)
        "rm -r d/sub && echo n > d/new && chmod 700 e",
    ],
)
def test_the_digest_from_the_kept_tree_follows_each_kind_of_change(tmp_path, deploy):
    from ansible_collections.ferry.docker.plugins.module_utils._volmeta import listed_digest

    root = tmp_path / "vol"
    for name in ("d/sub/x", "d/y", "e/z", "e/sub/w", "f"):
        _write(str(root / name), name.encode())
    kept = {}
    walk_digest(str(root), {}, tree=kept)
    base = p.parse_tree(p.tree_record(kept).encode())
    subprocess.run(["sh", "-c", deploy], cwd=root, check=True)
    now = {}
    walk_digest(str(root), {}, tree=now)
    send, remove = p.listed_delta(now, base)
    assert listed_digest(str(root), _tree_lines(base), send, remove)[:2] == tree_digest(str(root))
