# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The state machine of one migration group, on each side, without Ansible and without an engine.

The migrate role moves a *group* at a time: the containers of one source host that must move together
(see ``_groups``), in dependency order. Two managers run it, each where its Docker engine is:

* ``SourceRun`` on the source host: journals the phases, stops (or, with ``consistency=pause``, only
  pauses while reading) the members in reverse dependency order, captures each member's image or
  filesystem and volumes into its bundle, and starts them again for ``cutover=keep``. When a step
  fails it puts every member back as it was before the run (``put_back``) and raises ``StepFailed``.
* ``TargetRun`` on the target host: restores each member in dependency order (image, volumes,
  networks, container), then checks the health of those that were running, and removes the received
  bundles. Everything it creates is recorded as soon as it exists; when a step fails it removes
  exactly that (``undo``) and raises ``StepFailed``.

Both talk to their host only through ``call(module, args)``, which runs an Ansible module there and
returns its result (the action plugins pass ``ActionBase._execute_module``). ``now`` is the clock.
Results hold sizes, IDs, names and timings: never a run config or an environment value.
"""

from __future__ import annotations

import concurrent.futures
import functools
import posixpath
import subprocess
import threading
import time
import types

from ansible_collections.ferry.docker.plugins.module_utils import _handoff, _precopy, _transfer
from ansible_collections.ferry.docker.plugins.module_utils._health import failure_message

GUARD = "ferry.docker.docker_migrate_guard"
PRE_MIGRATE_LABEL = "ferry.docker.pre-migrate"
DOCKER_CONTAINER = "community.docker.docker_container"
DOCKER_IMAGE = "community.docker.docker_image"


PROGRESS_MODULE = "ferry.docker.job_progress"
VOLUME_DIGEST = "ferry.docker.volume_digest"  # done in docker_bundle_restore's process (see _steps)
# How often a restored copy's state is read while it is watched: an inspect is cheap, and every second
# between the copy turning healthy and the check seeing it is a second of downtime.
HEALTH_POLL_SECONDS = 0.25


def quiet_caller(action, task_vars, display=None, now=time.monotonic):
    """``call(module, args, progress=None)`` for an action plugin: runs the module on the task's host with the
    connection's no_log set, so that at -vvv the steps' raw results (inspect data, environment values) are
    not printed; the action's own result, which carries no run config, stays visible.

    With ``progress`` (``path``, ``label``, ``interval``, ``timeout``) the module runs as an async job, the
    way a task with ``async`` and ``poll: 0`` does, and job_progress is asked every ``interval`` seconds how
    many bytes the job has written under ``path``; each answer is displayed (``display(text)``), which AWX
    records as the job's output while the step runs. The job's own result is returned, as without."""

    def execute(module, module_args, wrap_async=False):
        context = action._connection._play_context
        before, context.no_log = context.no_log, True
        try:
            return action._execute_module(
                module_name=module, module_args=module_args, task_vars=task_vars, wrap_async=wrap_async
            )
        finally:
            context.no_log = before

    def call(module, module_args, progress=None):
        if not progress:
            return execute(module, module_args)
        task = action._task
        limit, task.async_val = task.async_val, int(progress["timeout"])
        try:
            job = execute(module, module_args, wrap_async=True)
        finally:
            task.async_val = limit
        if job.get("failed") or not job.get("results_file"):
            return job
        started = now()
        interval, label = max(1, int(progress["interval"])), progress["label"]
        if display is not None:
            display(f"{label}: started in the background; the bytes written are shown every {interval} s")
        while True:
            args = dict(results_file=job["results_file"], path=progress["path"], wait=interval)
            polled = execute(PROGRESS_MODULE, args)
            if polled.get("failed") or polled.get("unreachable") or polled.get("finished"):
                return polled
            if display is not None:
                display(f"{label}: {polled.get('msg', 'running')} ({round(now() - started)} s)")

    return call


class StepFailed(Exception):
    """A step of the group failed; ``phase`` and ``member`` say where, ``result`` what the module said."""

    def __init__(self, phase, member, message, result=None):
        super().__init__(message)
        self.phase = phase
        self.member = member
        self.result = result or {}


class Phases:
    """Seconds spent in each phase, in the order they were entered."""

    def __init__(self, now):
        self.now = now
        self.durations = {}
        self.current = None
        self.started = None

    def enter(self, phase):
        at = self.now()
        self.close(at)
        self.current, self.started = phase, at
        return at

    def close(self, at=None):
        if self.current is not None:
            at = self.now() if at is None else at
            self.durations[self.current] = round(self.durations.get(self.current, 0) + at - self.started, 3)
            self.current = None
        return self.durations


def _killed_at_timeout(result, seconds, stop_timeout):
    """Whether a stop ran into its timeout and the engine killed the container (exit 137, SIGKILL): its process
    ignored the stop signal, or needed longer than ``stop_timeout`` to end cleanly."""
    exit_code = ((result.get("container") or {}).get("State") or {}).get("ExitCode")
    return exit_code == 137 and seconds >= max(0, int(stop_timeout or 0)) - 0.5


def _keep_progress(entry, result):
    """A step that ran in the background ends with its last progress report: the member's result keeps it."""
    if result.get("progress"):
        entry.setdefault("progress", []).append(result["progress"])


def _checked(result, phase, member, what):
    if result.get("failed") or result.get("unreachable"):
        message = result.get("msg") or "failed without a message"
        raise StepFailed(phase, member, f"{what}: {message}", result)
    return result


class SourceRun:
    """Stop and capture a group on its source host; put it back when the run fails."""

    def __init__(self, call, members, options, now=time.time):
        self.call = call
        self.members = members
        self.options = options
        self.phases = Phases(now)
        self.now = now
        self.stopped = []
        self.down_at = 0  # when the capture had stopped the running members (0: it did not take them down)
        self.streamed = {}  # member: the IDs of the images its commits loaded into the target's engine (new ones)
        # volumes_ready(names, changed): tells a restore waiting on the target that these volumes' last passes are
        # done, and per volume of a listed last pass what it changed in which tree of the target (capture_groups
        # sets it when it hands off); ``""`` or why it could not
        self.volumes_ready = None
        self.tree_bases = {}  # volume: the sha256 of the target's tree its listed last pass compared with
        self.changed = {}  # volume: what its listed last pass changed (``base``, ``send``, ``remove``)
        # member: the removal of the image its capture committed, running beside the rest of the capture (see
        # _commit); finish_removals() waits for them
        self.removals = {}

    def _run(self, phase, member, module, args, what, progress=None):
        if progress:
            return _checked(self.call(module, args, progress=progress), phase, member, what)
        return _checked(self.call(module, args), phase, member, what)

    def _progress(self, member, what):
        """How ``what`` of ``member`` reports progress: None (a plain step) unless the member's expected bytes
        reach the ``progress`` option's ``bytes`` (0 turns progress off)."""
        progress = self.options.get("progress") or {}
        threshold = int(progress.get("bytes") or 0)
        if not threshold or int(member.get("expected_bytes") or 0) < threshold:
            return None
        return {
            "path": member["bundle"],
            "label": f"{what} {member['container']}",
            "interval": progress.get("interval") or 10,
            "timeout": progress.get("timeout") or 21600,
        }

    def journal(self, phase, precopied=None, streamed=None):
        journal = self.options.get("journal")
        if not journal:
            return
        containers = [{"name": m["container"]} for m in self.members]
        for entry in containers:
            if (streamed or {}).get(entry["name"]):
                # what the guard removes from the target's engine if the run is lost before the restore tags it
                entry["streamed_images"] = list(streamed[entry["name"]])
        if precopied is not None:
            # what the guard removes from the target if the run is lost before the container exists there: the
            # volumes, and the bind directories the pre-copy made (or filled, when they were there empty)
            for entry, member in zip(containers, self.members):
                mine = [name for name in _precopy.volumes_of(member, _precopy.DIRECT) if name in precopied]
                entry["precopied"] = [name for name in mine if not name.startswith("bind:")]
                paths = [precopied[name] for name in mine if name.startswith("bind:") and precopied[name]]
                if paths:
                    entry["precopied_paths"] = paths
        args = dict(
            run_id=journal["run_id"],
            journal_dir=journal["journal_dir"],
            state="renewed",
            containers=containers,
            phase=phase,
        )
        self._run(phase, "", GUARD, args, "journaling the " + phase + " phase")

    def _precopy_ready(self, spec, copier, choices=_precopy.DIRECT):
        """``({volume: (source directory, target directory)}, {volume: why it is copied instead})`` for the
        group's volumes planned for a direct copy (``choices``: pre-copy, streamed) that both hosts can take
        (``spec["volumes"]``: the target's directory of each volume it prepared)."""
        ready, instead = {}, {}
        prepared = (spec or {}).get("volumes") or {}
        for member in self.members:
            sources = {v["name"]: v.get("source") for v in member.get("volumes") or []}
            for name in _precopy.volumes_of(member, choices):
                if name in ready or name in instead:
                    continue
                if self.options["consistency"] != "stop":
                    instead[name] = "stop-and-copy: consistency pause reads the volumes while paused, not stopped"
                elif copier is None or not self.options.get("send"):
                    instead[name] = (
                        "stop-and-copy: a direct copy needs the direct transfer with a root login on the target"
                    )
                elif name not in prepared:
                    why = ((spec or {}).get("refused") or {}).get(name) or "the target did not prepare it"
                    instead[name] = f"stop-and-copy: {why}"
                else:
                    try:
                        path, reason = copier.bind_dir(sources[name]) if sources.get(name) else copier.mountpoint(name)
                    except Exception as exc:  # the SDK's errors: the volume stays in the bundle
                        path, reason = None, f"reading it failed ({exc})"
                    if reason:
                        instead[name] = f"stop-and-copy: its data is not a directory here ({reason})"
                    else:
                        ready[name] = (path, prepared[name]["mountpoint"])
        return ready, instead

    def _pass(self, copier, name, dirs, spec, phase, attributes_since=None, listed=None):
        try:
            if listed is not None:
                return copier.sync_exact(*dirs, *listed)
            if attributes_since is not None:
                return copier.sync(*dirs, attributes_since=attributes_since)
            if phase == "precopy":  # while the source serves: a file may vanish during the pass
                return copier.sync(*dirs, live=True)
            return copier.sync(*dirs)
        except _precopy.PassFailed as exc:
            message = f"{phase} of volume {name}: {exc}"
            if exc.no_space:
                free = ((spec.get("volumes") or {}).get(name) or {}).get("free_bytes")
                message = (
                    f"{spec.get('target', 'the target')} ran out of space during the {phase} of volume {name}"
                    + (f" (it had {free} bytes free there when the pre-copy began)" if free is not None else "")
                    + f"; free space there or move the volume with migrate_volume_data_map copy: {exc}"
                )
            raise StepFailed(phase, self._owner(name), message) from None

    def _owner(self, volume):
        return next((m["container"] for m in self.members if volume in _precopy.volumes_of(m, _precopy.DIRECT)), "")

    def precopy(self, spec, copier):
        """The live passes of the group's pre-copied volumes while the members serve (state=precopied):
        passes until each volume's delta is small (``spec``: ``delta_bytes``, ``max_passes``), then a digest
        of each source tree that fills its cache. Per volume what happened."""
        spec = spec or {}
        out = {"volumes": {}}
        self.phases.enter("precopy")
        ready, instead = self._precopy_ready(spec, copier, ("precopy",))
        for name, reason in instead.items():
            out["volumes"][name] = _fallback(name, reason)
        if ready:
            prepared = spec.get("volumes") or {}
            self.journal("precopy", precopied={name: (prepared.get(name) or {}).get("remove") for name in ready})
        passes = {name: _precopy.Passes(spec.get("delta_bytes", 0), spec.get("max_passes", 1)) for name in ready}
        sent = dict.fromkeys(ready, 0)
        active = sorted(ready)
        began = {}
        while active:
            for name in active:
                began[name] = time.time()  # the files' clock: the final pass carries ACLs and xattrs from here on
                stats = self._pass(copier, name, ready[name], spec, "precopy")
                # the new data a pass moved: a file that only grew (an append-only log) counts what it gained
                passes[name].record(stats["literal"])
                sent[name] += stats["sent"]
            active = [name for name in active if passes[name].again()]
        for name in sorted(ready):
            copier.digest(ready[name][0], _cache_file(spec, name))
            out["volumes"][name] = dict(
                passes[name].summary(),
                choice="precopy",
                reason=_PRECOPY_REASON,
                sent_bytes=sent[name],
                attributes_since=round(began[name] - 0.001, 3),
            )
        if ready or spec.get("images"):
            out["images"] = self.precommit(spec, copier)
        out["phases"] = self.phases.close()
        return out

    def _upper_digest(self, copier, spec, container):
        path, reason = copier.upper(container)
        if reason:
            return None, reason
        return copier.digest(path, _cache_file(spec, f"upper-{container}"))[0], None

    def precommit(self, spec, copier):
        """Commit and save each member's image into its bundle while it serves (commit mode), with the digest
        of its writable layer before and after: the capture after the stop reuses the image when that layer
        is still the same, and commits only when it changed. Per member: ``image_id``, ``upper_digest``, or
        ``reason`` why not."""
        images = {}
        if self.options.get("mode", "commit") != "commit":
            return images
        for member in self.members:
            name = member["container"]
            try:
                before, reason = self._upper_digest(copier, spec, name)
            except Exception as exc:  # the SDK's errors, an unreadable layer: the capture commits after the stop
                before, reason = None, f"reading its writable layer failed ({exc})"
            if reason:
                images[name] = {"reason": reason}
                continue
            result, streamed = self._commit("precopy", member, copier)
            after = self._upper_digest(copier, spec, name)[0]
            if after != before:
                self._drop_stale(copier, name, result.get("image_id", ""))
                images[name] = {"reason": "its writable layer changed while it was committed"}
                continue
            images[name] = {
                "image_id": result.get("image_id", ""),
                "upper_digest": before,
                "bytes": int(result.get("size") or 0),
            }
            if streamed:
                images[name]["streamed"] = streamed
        return images

    def _stream_to_wanted(self, copier):
        """Whether this capture commits an image to stream into the target's engine (``start_unpack_probe``)."""
        return copier is not None and self.options.get("image") == "stream" and self.options.get("mode") == "commit"

    def _stream_to(self, copier):
        """``stream_to`` for docker_commit_save when images go straight into the target's engine, else None."""
        return copier.stream_target() if copier is not None and self.options.get("image") == "stream" else None

    def _commit(self, phase, member, copier, progress=None):
        """docker_commit_save of ``member`` (into the target's engine with image=stream); its result, and the
        member's ``image_streamed`` (or None). A new image on the target is journaled for the guard at once."""
        name = member["container"]
        args = self._commit_args(member)
        target = self._stream_to(copier)
        if target:
            args["stream_to"] = target  # straight into the target's engine: no archive on either disk
        # Once stopped, the committed image is removed beside the capture's last steps (the handoff, the bundle's
        # send), not before them: deleting a layer of a few hundred MB takes the engine most of a second. Only in
        # this module's process (copier), where the removal can run in a thread; a failed step removes it at once.
        later = phase == "capture" and copier is not None and not args.get("keep_image")
        if later:
            args["keep_image"] = True
        try:
            result = self._run(phase, name, "ferry.docker.docker_commit_save", args, f"committing {name}", progress)
        except StepFailed:
            if later:  # at once, before the source is put back; one that stays is named with the failure
                note = self._remove_image(args["image_name"])
                self.removals[name] = (args["image_name"], types.SimpleNamespace(result=lambda: note))
            raise
        if later:
            ref = args["image_name"]
            self.removals[name] = (ref, self._alongside(lambda: self._remove_image(ref)))
        streamed = result.get("streamed")
        if not streamed:
            return result, None
        if streamed.get("new"):
            self.streamed.setdefault(name, []).append(result.get("image_id", ""))
            self.journal(phase, streamed=self.streamed)
        return result, {
            "new": bool(streamed.get("new")),
            "bytes": int(streamed.get("bytes") or 0),
            "sha256": streamed.get("sha256", ""),
        }

    def _remove_image(self, ref):
        """Remove the image ``ref`` that a capture committed on this host: ``""``, or why it could not be."""
        removed = self.call(DOCKER_IMAGE, dict(name=ref, state="absent"))
        if removed.get("failed"):
            return f"the committed image {ref} could not be removed: {removed.get('msg', '')}; remove it by hand"
        return ""

    def finish_removals(self):
        """Wait for the removals of the committed images (see _commit): ``{member: why it failed}``."""
        notes = {}
        for name, (ref, removal) in sorted(self.removals.items()):
            try:
                note = removal.result()
            except Exception as exc:  # the removal's own bug is only a note: the image stays
                note = f"the committed image {ref} could not be removed: {exc}; remove it by hand"
            if note:
                notes[name] = note
        self.removals = {}
        return notes

    def _drop_stale(self, copier, name, image_id):
        """An image streamed while ``name`` served that the capture does not use: removed from the target."""
        if image_id in self.streamed.get(name, []) and copier is not None and not copier.drop_image(image_id):
            self.streamed[name].remove(image_id)

    def _commit_args(self, member):
        opts = self.options
        args = dict(
            container=member["container"],
            dest=member["bundle"],
            compression=opts["compression"],
            pause=opts["consistency"] == "pause",
            exclude_layers=member.get("exclude_layers", []),
            image_name=member["image_ref"],
        )
        args.update(opts.get("capture_options", {}))
        return args

    def _choice(self, name):
        """The plan's choice of a volume copied straight into the target's: ``precopy`` or ``stream``."""
        owner = next(m for m in self.members if name in _precopy.volumes_of(m, _precopy.DIRECT))
        return next(v["choice"] for v in owner["volumes"] if v["name"] == name)

    def target_trees(self, spec, copier):
        """Per pre-copied volume, the target's tree as its digest found it after the live passes (``_precopy.
        parse_tree``), or why there is none (a string): that volume's last pass then compares the whole tree."""
        where = (spec or {}).get("target_cache_dir")
        if copier is None or not where or not self.options.get("send") or self.options["consistency"] != "stop":
            return {}
        trees = {}
        for name in sorted((spec or {}).get("volumes") or {}):
            if any(name in _precopy.volumes_of(m, ("precopy",)) for m in self.members):
                try:
                    trees[name], self.tree_bases[name] = copier.fetch_tree(where, name)
                except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                    trees[name] = str(exc)[:300]
        return trees

    def final_pass(self, spec, copier, out, trees=None):
        """Stopped: the last delta of each pre-copied volume, or the whole of a streamed one, straight into the
        target's volume; then its digest (the target checks it before use). The volumes that go in the bundle
        instead are named in ``out``'s members.

        A pre-copied volume with the target's tree (``trees``, see ``target_trees``) is digested first: the
        paths where the two trees differ (``_precopy.listed_delta``) then go in one listed pass, and neither host
        lists the whole tree again. Any other volume's pass compares the whole tree while its digest runs."""
        trees = trees or {}
        ready, instead = self._precopy_ready(spec, copier)
        listed = {name: tree for name, tree in trees.items() if name in ready and isinstance(tree, dict)}
        for member in self.members:
            entry = out["members"][member["container"]]
            entry["volumes"] = {}
            for volume in member.get("volumes") or []:
                name = volume["name"]
                if name in instead:
                    entry["volumes"][name] = _fallback(name, instead[name])
                elif name in ready and self._owner(name) != member["container"]:
                    how = "pre-copied" if self._choice(name) == "precopy" else "streamed"
                    entry["volumes"][name] = {"choice": self._choice(name), "reason": f"{how} with {self._owner(name)}"}
                elif name not in ready:
                    entry["volumes"][name] = {"choice": volume["choice"], "reason": volume.get("reason", "")}
        # The source is stopped: its trees no longer change, so each digest runs in a thread while the last
        # deltas go (rsync only reads them).
        digests = {}

        def digest_all():
            for name in sorted(set(ready) - set(listed)):
                try:
                    digests[name] = copier.digest(ready[name][0], _cache_file(spec, name), save=False)
                except Exception as exc:  # an unreadable tree: reported below, the group fails
                    digests[name] = exc

        worker = threading.Thread(target=digest_all, daemon=True)
        worker.start()
        passes = {}
        try:
            # the volumes' last passes at once (each an rsync over the one shared SSH connection): the outage
            # is the longest of them, not their sum
            since = (spec or {}).get("attributes_since") or {}

            def timed(name):
                started = self.now()
                if name in listed:
                    tree = {}
                    try:
                        digests[name] = copier.digest(ready[name][0], _cache_file(spec, name), tree=tree, save=False)
                    except Exception as exc:  # an unreadable tree: reported below, the group fails
                        digests[name] = exc
                        return dict(_precopy.NO_PASS), self.now() - started
                    send, remove = _precopy.listed_delta(tree, listed[name])
                    stats = _precopy.NO_PASS
                    if send or remove:
                        stats = self._pass(copier, name, ready[name], spec, "final copy", listed=(send, remove))
                    if name in self.tree_bases:  # the target's check reads again only these paths
                        self.changed[name] = {"base": self.tree_bases[name], "send": send, "remove": remove}
                    return dict(stats, listed=len(send) + len(remove)), self.now() - started
                # a pre-copied volume's ACLs and xattrs went with the live passes: only those of what changed since
                # the last one began go again (a streamed volume's go whole)
                after = since.get(name) if self._choice(name) == "precopy" else None
                return self._pass(copier, name, ready[name], spec, "final copy", after), self.now() - started

            with concurrent.futures.ThreadPoolExecutor(max_workers=FINAL_PASSES_AT_ONCE) as pool:
                running = {name: pool.submit(timed, name) for name in ready}
                for name in sorted(ready):
                    passes[name] = running[name].result()
        finally:
            worker.join()
        for name in sorted(ready):
            stats, seconds = passes[name]
            if isinstance(digests.get(name), Exception):
                raise StepFailed("capture", self._owner(name), f"the digest of volume {name}: {digests[name]}")
            digest, count, hashed = digests[name]
            entry = out["members"][self._owner(name)]
            prepared = ((spec or {}).get("volumes") or {}).get(name) or {}
            if name.startswith("bind:"):
                entry.setdefault("bind_paths", {})[name] = {
                    "path": ready[name][1],
                    "remove": prepared.get("remove") or ready[name][1],
                }
            choice = self._choice(name)
            entry["volumes"][name] = {
                "choice": choice,
                "reason": _PRECOPY_REASON if choice == "precopy" else _STREAM_REASON,
                "final_delta_bytes": stats["changed"],
                "final_sent_bytes": stats["sent"],
                "digest": digest,
                "entries": count,
                "digest_read_bytes": hashed,
                "final_seconds": round(seconds, 3),
            }
            if "listed" in stats:  # the paths the last pass gave rsync, found by comparing the two trees
                entry["volumes"][name]["final_listed_paths"] = stats["listed"]
            elif isinstance(trees.get(name), str):  # why the last pass compared the whole tree instead
                entry["volumes"][name]["final_whole_tree"] = trees[name]
            entry["bytes_captured"] += stats["sent"]
            entry["direct_bytes"] = entry.get("direct_bytes", 0) + stats["sent"]  # not in the bundle
        return ready

    def _alongside(self, work):
        """``work()`` in a thread: ``result()`` waits for it and gives what it returned (or raises what it raised),
        ``wait()`` only waits."""
        box = {}

        def run():
            try:
                box["value"] = work()
            except BaseException as exc:  # raised in result()
                box["error"] = exc

        worker = threading.Thread(target=run, daemon=True)
        worker.start()

        def result():
            worker.join()
            if "error" in box:
                raise box["error"]
            return box["value"]

        return types.SimpleNamespace(result=result, wait=worker.join, running=worker.is_alive)

    def _capture_image(self, member, precopy, copier):
        """The image (commit mode: committed, saved or streamed into the target's engine, or the one committed
        while it served, reused) or the filesystem (export mode) of a stopped ``member``: what to add to its
        entry of the capture's result (``bytes_captured`` and ``direct_bytes`` add up, ``progress`` extends)."""
        opts = self.options
        name = member["container"]
        entry = {"bytes_captured": 0}
        early = ((precopy or {}).get("images") or {}).get(name) or {}
        if opts["mode"] == "commit" and early.get("upper_digest") and copier is not None:
            # committed while it served: the image in the bundle is current if its writable layer is unchanged
            try:
                now_digest = self._upper_digest(copier, precopy, name)[0]
            except Exception:  # the SDK's errors: commit again
                now_digest = None
            early_streamed = early.get("streamed")
            if early_streamed and early_streamed.get("new") and early.get("image_id"):
                # loaded into the target's engine while it served (journaled then): this run's to remove
                self.streamed.setdefault(name, []).append(early["image_id"])
            if now_digest == early["upper_digest"]:
                entry["image_id"] = early.get("image_id", "")
                entry["image"] = "committed while it served; its writable layer did not change since"
                if early_streamed:
                    entry["image_streamed"] = dict(early_streamed)
                    entry["image"] += " (it went straight into the target's engine then)"
                early = "reused"
            elif early_streamed:
                self._drop_stale(copier, name, early.get("image_id", ""))
        if early == "reused":
            pass
        elif opts["mode"] == "commit":
            result, streamed = self._commit("capture", member, copier, self._progress(member, "committing and saving"))
            entry["image_id"] = result.get("image_id", "")
            entry["bytes_captured"] += int(result.get("size") or 0)
            if streamed:
                entry["image_streamed"] = streamed
                entry["image"] = _IMAGE_STREAM_REASON if streamed["new"] else _IMAGE_THERE_REASON
                entry["direct_bytes"] = entry.get("direct_bytes", 0) + streamed["bytes"]  # not in the bundle
            _keep_progress(entry, result)
        else:
            args = dict(container=name, dest=member["bundle"], compression=opts["compression"])
            self._capture_step(entry, member, "ferry.docker.docker_export", args, "exporting", "size")
        return entry

    def _capture_step(self, entry, member, module, args, what, size_key):
        """A capture step of ``member`` (``what``: how its progress and failure name it) with the capture options;
        its ``size_key`` bytes add to ``entry``'s ``bytes_captured``, and its last progress report is kept."""
        args.update(self.options.get("capture_options", {}))
        name = member["container"]
        result = self._run("capture", name, module, args, f"{what} {name}", self._progress(member, what))
        entry["bytes_captured"] += int(result.get(size_key) or 0)
        _keep_progress(entry, result)

    def capture(self, precopy=None, copier=None):
        """Stop, capture and (cutover keep) restart the group; the per-member sizes and the timings.
        With ``precopy`` (the group's pre-copied volumes), their last delta goes right after the stop."""
        opts = self.options
        out = {"members": {m["container"]: {"bytes_captured": 0, "image_id": ""} for m in self.members}}
        running = [m for m in self.members if m.get("running")]
        if self._stream_to_wanted(copier):
            copier.start_unpack_probe()  # asked while the members still serve, beside the trees below
        if copier is not None:
            _precopy.preload_caches(_cache_files(precopy, self.members))  # the digests once stopped find them read
        trees = self.target_trees(precopy, copier)  # read while the members still serve
        out["started_at"] = round(self.phases.enter("stop"), 3)
        out["hooks"] = self.run_hooks(running)
        if opts["consistency"] == "stop":
            self.journal("stop")
            for member in reversed(running):
                args = dict(name=member["container"], state="stopped", stop_timeout=opts["stop_timeout"])
                began = self.now()
                result = self._run(
                    "stop", member["container"], DOCKER_CONTAINER, args, f"stopping {member['container']}"
                )
                self.stopped.append(member)
                if _killed_at_timeout(result, self.now() - began, opts["stop_timeout"]):
                    out["members"][member["container"]]["stop_timed_out"] = True
        out["down_at"] = self.down_at = round(self.now(), 3) if running else 0
        self.phases.enter("capture")
        if opts["consistency"] == "stop":
            # a paused capture never takes the source down: the guard needs no word of it
            self.journal("capture")
        planned = any(m.get("volumes") for m in self.members)
        if (precopy or {}).get("volumes"):
            # Stopped, the images and the volumes' last passes only read the sources: the commits (and their
            # streams into the target's engine) run beside the passes, so the outage is the longer of the two.
            # (Such a capture always runs in this module's process, see runs_stepwise.)
            images = self._alongside(lambda: [self._capture_image(m, precopy, copier) for m in self.members])
            announced = None
            try:
                ready = self.final_pass(precopy, copier, out, trees)
                if self.volumes_ready is not None and ready:
                    # a restore waits on the target: it digests these volumes now, beside the image's stream and
                    # the capture's last steps (the bundle's send, the journal, the handoff)
                    changed = {name: self.changed[name] for name in ready if name in self.changed}
                    announced = self._alongside(lambda: self.volumes_ready(sorted(ready), changed))
            except BaseException:
                images.wait()  # the commits end before the group is put back and what they streamed removed
                raise
            parts = images.result()
            if announced is not None:
                # before the handoff (its note must land first); a hint that did not land only costs time
                note = announced.result()
                if note:
                    out["ready_note"] = note
        else:
            if planned:
                self.final_pass(precopy, copier, out, trees)
            parts = None
        for index, member in enumerate(self.members):
            name = member["container"]
            entry = out["members"][name]
            part = parts[index] if parts is not None else self._capture_image(member, precopy, copier)
            for key, value in part.items():
                if key in ("bytes_captured", "direct_bytes"):
                    entry[key] = entry.get(key, 0) + value
                elif key == "progress":
                    entry.setdefault("progress", []).extend(value)
                else:
                    entry[key] = value
            # without a plan (members[].volumes), has_volumes says whether the bundle holds every volume
            copied = [v for v, e in entry.get("volumes", {}).items() if e["choice"] == "copy"]
            if member.get("has_volumes") and (copied or not planned):
                args = dict(
                    container=name,
                    dest=member["bundle"],
                    compression=opts["compression"],
                    consistency="pause" if opts["consistency"] == "pause" and member.get("running") else "running",
                )
                if planned:
                    args["exclude_volumes"] = sorted(set(entry["volumes"]) - set(copied))
                module = "ferry.docker.docker_volume_backup"
                self._capture_step(entry, member, module, args, "backing up the volumes of", "bytes_written")
        out["up_at"] = 0
        if running and (opts["consistency"] == "pause" or opts["cutover"] == "keep"):
            # A paused capture unpauses the members itself (the engine's commit, the volume backup's own
            # pause): only a member this run stopped needs starting again to keep serving.
            if opts["cutover"] == "keep" and self.stopped:
                self.put_back(phase="capture")
            out["up_at"] = round(self.now(), 3)
        self.phases.enter("transfer")
        self.journal("transfer")
        out["phases"] = self.phases.close()
        out["ended_at"] = round(self.now(), 3)
        return out

    def drop_streamed(self, copier):
        """Remove from the target's engine the images this capture streamed there (only new ones: an image the
        target had is left); what could not be removed, as sentences."""
        left = []
        for name, images in sorted(self.streamed.items()):
            for image_id in images:
                why = copier.drop_image(image_id) if copier is not None else "no connection to the target"
                if why:
                    left.append(f"the image of {name} streamed to the target ({image_id[:19]}) is still there: {why}")
        self.streamed = {}
        return left

    def run_hooks(self, running):
        """The pre-migrate hooks of the running members, before anything is stopped: the command in a
        member's ``ferry.docker.pre-migrate`` label (with ``sh -c``), then its configured hooks
        (``options["hooks"]["lists"]``: container -> [{command, timeout, on_error, user}]). A failing hook
        with ``on_error: fail`` fails the group. Returns each hook's summary (never its output)."""
        hooks = self.options.get("hooks") or {}
        summaries = []
        for member in running:
            name = member["container"]
            steps = []
            if hooks.get("from_labels", False) and member.get("hook_label", True):
                steps.append(
                    dict(
                        container=name,
                        from_label=PRE_MIGRATE_LABEL,
                        exec_timeout=hooks.get("timeout", 300),
                        on_error=hooks.get("on_error", "fail"),
                    )
                )
            for hook in (hooks.get("lists") or {}).get(name, []):
                args = dict(
                    container=name, command=hook["command"], exec_timeout=hook["timeout"], on_error=hook["on_error"]
                )
                if hook.get("user"):
                    args["user"] = hook["user"]
                steps.append(args)
            for args in steps:
                result = self._run(
                    "hooks", name, "ferry.docker.docker_container_exec_hook", args, f"a pre-migrate hook of {name}"
                )
                summary = result.get("summary") or {}
                if summary.get("status", "none") != "none":
                    summaries.append(dict(summary, container=name, phase="pre"))
        return summaries

    def put_back(self, phase="rollback"):
        """Start (or pause) every member again as it was before the run, in dependency order."""
        states = {}
        for member in self.members:
            before = member.get("state_before")
            if before in ("running", "paused"):
                args = dict(name=member["container"], state="started", paused=before == "paused")
                self._run(phase, member["container"], DOCKER_CONTAINER, args, f"starting {member['container']} again")
            states[member["container"]] = before
        return states

    def cut_over(self, cutover, stop_timeout):
        """The sources once their copies serve: ``stop``ped (reverse order), ``remove``d (volumes kept)
        or ``keep``; their states afterwards, and whether anything changed."""
        states, changed = {}, False
        for member in reversed(self.members):
            name = member["container"]
            if cutover == "keep":
                states[name] = member.get("state_before")
                continue
            if cutover == "stop":
                args = dict(name=name, state="stopped", stop_timeout=stop_timeout)
            else:
                args = dict(name=name, state="absent", keep_volumes=True)
            result = self._run("cutover", name, DOCKER_CONTAINER, args, f"cutover ({cutover}) of {name}")
            changed = changed or bool(result.get("changed"))
            states[name] = "removed" if cutover == "remove" else "exited"
        self.journal("done")
        return states, changed


def empty_created():
    return {
        "container": "",
        "image": "",
        "image_id": "",
        "networks": [],
        "volumes": [],
        "bind_paths": [],
        "bind_data": [],
    }


class TargetRun:
    """Restore a group on its target host and check it; remove what it created when that fails."""

    def __init__(self, call, members, options, now=time.time):
        self.call = call
        self.members = members
        self.options = options
        self.phases = Phases(now)
        self.now = now
        self.created = {m["container"]: empty_created() for m in members}
        self.early_digests = []  # volumes whose digest began before the handoff (see start_precopied)
        # volume: how its check once stopped read it (``listed_paths``: only what its last pass changed; ``walked``:
        # why the whole tree was read although the pass said what it changed)
        self.digest_checks = {}

    def _run(self, phase, member, module, args, what):
        return _checked(self.call(module, args), phase, member, what)

    def restore(self):
        """Restore, check and finish the group on its own (see ``restore_groups`` for several at once)."""
        started_at = self.restore_objects()
        self.phases.enter("health")
        for member in self.members:
            if member.get("running"):
                self.check_health(member)
        return self.finish(started_at)

    def finish(self, started_at):
        """The group passed its checks: remove the received bundles; what the run did."""
        verified_at = round(self.now(), 3)
        if not self.options.get("keep_bundle"):
            for path in self.received_dirs():
                self.call("ansible.builtin.file", dict(path=path, state="absent"))
        return {
            "started_at": started_at,
            "verified_at": verified_at,
            "phases": self.phases.close(),
            "created": self.created,
            "early_digests": sorted(self.early_digests),
            "digest_checks": self.digest_checks,
        }

    def restore_objects(self):
        """Image, volumes, networks and container of every member, in dependency order; when it started."""
        opts = self.options
        trust = opts.get("trust", {})
        started_at = round(self.phases.enter("restore"), 3)
        self.start_precopied()
        for member in self.members:
            name, created = member["container"], self.created[member["container"]]
            bundle, image_ref = member["received"], member["image_ref"]
            if opts["mode"] == "commit":
                # docker_load removes what a failed load added; a load that worked says whether the image is new
                # ferry-migrate/<name> is the migrations' own repository: a tag left there by an earlier run that
                # did not finish (or an older migration) is moved, not a reason to stop
                args = dict(bundle=bundle, tag=image_ref, force_tag=True, **trust)
                if member.get("image_streamed"):
                    # the capture loaded it into this engine: checked here by its ID, then tagged
                    args["streamed"] = True
                    if member["image_streamed"] == "new":
                        created["image_id"] = member.get("image_id", "")  # the run brought it: a failure removes it
                result = self._run("restore", name, "ferry.docker.docker_load", args, f"loading the image of {name}")
                if result.get("changed"):
                    created["image"] = image_ref
                if result.get("operation") == "load":
                    created["image_id"] = result.get("image_id") or member.get("image_id", "")
            else:
                repository, tag = image_ref.rsplit(":", 1)
                args = dict(bundle=bundle, repository=repository, tag=tag, **trust)
                result = self._run(
                    "restore", name, "ferry.docker.docker_import", args, f"importing the filesystem of {name}"
                )
                if result.get("changed"):
                    created.update(image=image_ref, image_id=result.get("image_id", ""))
            if member.get("has_volumes"):
                args = dict(bundle=bundle, allow_privileged=opts["allow_privileged"], **trust)
                result = self._run(
                    "restore", name, "ferry.docker.docker_volume_restore", args, f"restoring the volumes of {name}"
                )
                created["volumes"] += [v["name"] for v in result.get("volumes", []) if v.get("action") == "create"]
            self.check_precopied()  # every digest matched before the first container is created
            entry = member.get("entry", {})
            args = dict(
                bundle=bundle,
                name=member["name"],
                image=image_ref,
                port_map=entry.get("port_map", {}),
                bind_map=entry.get("bind_map", {}),
                network_map=entry.get("network_map", {}),
                references=entry.get("references") or {},
                create_bind_paths=opts["create_bind_paths"],
                state="started" if member.get("running") else "created",
                stop_timeout=opts["stop_timeout"],
                allow_privileged=opts["allow_privileged"],
                **trust,
            )
            result = self.call("ferry.docker.docker_container_restore", args)
            created["networks"] += result.get("networks_created", [])
            created["volumes"] += result.get("volumes_created", [])
            created["bind_paths"] += result.get("bind_paths_created", [])
            _checked(result, "restore", name, f"creating the container {member['name']}")
            if result.get("operation") in ("create", "recreate"):
                created["container"] = member["name"]
        return started_at

    def start_precopied(self):
        """Start the digests of the pre-copied volumes in the background (they only read the filesystem), so that
        they overlap the image load; ``check_precopied`` waits for them before any container is created. The
        volumes count as created by the run from here on, so a failure removes them."""
        self._digests = []
        for member in self.members:
            for name, expected in sorted((member.get("precopied") or {}).items()):
                if expected.get("path"):  # bind data, in the directory the run made
                    self.created[member["container"]].setdefault("bind_data", []).append(
                        expected.get("remove") or expected["path"]
                    )
                else:
                    self.created[member["container"]]["volumes"].append(name)
        for member in self.members:
            cache_dir = posixpath.dirname(member["received"].rstrip("/"))
            for name, expected in sorted((member.get("precopied") or {}).items()):
                args = dict(name=name, cache_dir=cache_dir, background="start")
                if expected.get("path"):
                    args["path"] = expected["path"]
                started = self._run("restore", member["container"], VOLUME_DIGEST, args, f"the digest of volume {name}")
                if started.get("early"):  # the early restore started it once the capture said its last pass was done
                    self.early_digests.append(name)
                self._digests.append((member, name, expected))

    def check_precopied(self):
        """Before anything uses them: each pre-copied volume must hold exactly what the source held once it was
        stopped (its content digest)."""
        pending, self._digests = getattr(self, "_digests", None), []
        if pending is None:  # not started in the background: start them now
            self.start_precopied()
            pending, self._digests = self._digests, []
        for member, name, expected in pending:
            args = dict(name=name, cache_dir="", background="wait")
            found = self._run("restore", member["container"], VOLUME_DIGEST, args, f"the digest of volume {name}")
            how = {key: found[key] for key in ("listed_paths", "walked") if key in found}
            if how:
                self.digest_checks[name] = how
            if found.get("digest") != expected.get("digest"):
                raise StepFailed(
                    "restore",
                    member["container"],
                    f"volume {name} on this host does not hold what the source held once stopped (content "
                    f"digest {str(found.get('digest'))[:16]}, {found.get('entries')} entries; the source's "
                    f"{str(expected.get('digest'))[:16]}, {expected.get('entries')} entries); it is removed and "
                    "the source put back as it was",
                )

    def check_health(self, member, watched=False):
        """The member must be up (not ``watched`` already with others), then answer on the TCP port and URL."""
        opts, name = self.options, member["name"]
        if not watched:
            args = dict(
                name=name,
                timeout=opts["health_timeout"],
                stable_seconds=opts["health_stable_seconds"],
                interval=HEALTH_POLL_SECONDS,
            )
            self._run("health", member["container"], "ferry.docker.docker_container_health", args, f"health of {name}")
        if opts.get("health_tcp_port"):
            args = dict(host="127.0.0.1", port=opts["health_tcp_port"], timeout=opts["health_timeout"])
            self._run("health", member["container"], "ansible.builtin.wait_for", args, "the TCP port check")
        if opts.get("health_url"):
            deadline = self.now() + opts["health_timeout"]
            while True:
                result = self.call(
                    "ansible.builtin.uri", dict(url=opts["health_url"], timeout=10, status_code=list(OK_STATUS))
                )
                if not result.get("failed") or self.now() >= deadline:
                    break
                time.sleep(2)
            _checked(result, "health", member["container"], f"the URL check of {opts['health_url']}")

    def undo(self, created=None):
        """Remove what the run created on this host, newest first; a list of what could not be removed."""
        created = self.created if created is None else created
        left = []
        for member in reversed(self.members):
            objects = created.get(member["container"]) or empty_created()
            steps = []
            if objects.get("container"):
                steps.append((DOCKER_CONTAINER, dict(name=objects["container"], state="absent", force_kill=True)))
            steps += [("community.docker.docker_network", dict(name=n, state="absent")) for n in objects["networks"]]
            steps += [("community.docker.docker_volume", dict(name=v, state="absent")) for v in objects["volumes"]]
            if objects.get("image"):
                steps.append(("community.docker.docker_image", dict(name=objects["image"], state="absent")))
            if objects.get("image_id"):
                steps.append(
                    ("community.docker.docker_image", dict(name=objects["image_id"], state="absent", force_absent=True))
                )
            # bind data the run copied into directories it made (never a refused path)
            steps += [
                ("ansible.builtin.file", dict(path=path, state="absent"))
                for path in objects.get("bind_data") or []
                if not _precopy.bind_problem(path)
            ]
            for module, args in steps:
                result = self.call(module, args)
                if result.get("failed") or result.get("unreachable"):
                    left.append(f"{args.get('name') or args.get('path')} ({result.get('msg', 'unknown error')})")
        for received in self.received_dirs():
            # with an early restore, the handoff and cancel files beside the group's directory too
            for path in (received, *_handoff.files(received)):
                result = self.call("ansible.builtin.file", dict(path=path, state="absent"))
                if result.get("failed") or result.get("unreachable"):
                    left.append(f"{path} ({result.get('msg', 'unknown error')})")
        return left

    def received_dirs(self):
        """The directories the group's bundles were received in: each member's, and the group's around them."""
        return sorted({posixpath.dirname(m["received"].rstrip("/")) for m in self.members})


FINAL_PASSES_AT_ONCE = 4  # a group's volumes whose last pass runs at once, once the members are stopped
_PRECOPY_REASON = "pre-copied while the source served, the last delta once it was stopped"
_STREAM_REASON = "streamed once the source was stopped, straight into the target's volume (no bundle)"
_IMAGE_STREAM_REASON = "committed once stopped and loaded straight into the target's engine (no bundle)"
_IMAGE_THERE_REASON = "committed once stopped; the target's engine had this image already, nothing was sent"


def _cache_file(spec, name):
    """Where the digest cache of ``name`` lives: in the run's directory (``cache_dir``), or nowhere."""
    return _precopy.cache_path(spec["cache_dir"], name) if (spec or {}).get("cache_dir") else None


def _fallback(name, reason):
    """A volume that cannot be pre-copied goes in the bundle; bind data (``bind:<path>``) is then not copied."""
    if name.startswith("bind:"):
        reason = reason.replace("stop-and-copy: ", "", 1)
        return {"choice": "skip", "reason": reason if reason.startswith("not copied: ") else f"not copied: {reason}"}
    return {"choice": "copy", "reason": reason}


OK_STATUS = (200, 201, 202, 203, 204, 301, 302, 303, 304, 307, 308)


SOURCE_MEMBER = dict(
    container=dict(type="str", required=True),
    name=dict(type="str", required=True),
    state_before=dict(type="str", required=True),
    running=dict(type="bool", default=False),
    has_volumes=dict(type="bool", default=False),
    exclude_layers=dict(type="list", elements="str", default=[]),
    image_ref=dict(type="str", required=True),
    bundle=dict(type="str", required=True),
    hook_label=dict(type="bool", default=True),
    expected_bytes=dict(type="int", default=0),
    volumes=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            choice=dict(type="str", required=True, choices=list(_precopy.CHOICES)),
            reason=dict(type="str", default=""),
            source=dict(type="str"),
            path=dict(type="str"),
        ),
    ),
)
# docker_migrate_source's options (its action plugin checks them; the module runs with them)
SOURCE_SPEC = dict(
    state=dict(type="str", required=True, choices=["planned", "precopied", "captured", "restored", "cut_over"]),
    # state=planned: the options of docker_migrate_plan, checked against its own spec where it runs
    plan=dict(type="dict"),
    # state=planned: the run's key pair, made once the plan is read (not in check mode)
    run_key=dict(
        type="dict",
        no_log=False,  # where the key pair goes and its comment: neither is secret
        options=dict(dir=dict(type="path", required=True), comment=dict(type="str", required=True)),
    ),
    members=dict(type="list", elements="dict", options=SOURCE_MEMBER),
    groups=dict(
        type="list",
        elements="dict",
        options=dict(
            id=dict(type="str", required=True),
            members=dict(type="list", elements="dict", required=True, options=SOURCE_MEMBER),
            transfer=dict(type="dict", options=dict(src=dict(type="str"), dest=dict(type="str"))),
            precopy=dict(
                type="dict",
                options=dict(
                    target=dict(type="str", default=""),
                    volumes=dict(type="dict", default={}),
                    refused=dict(type="dict", default={}),
                    delta_bytes=dict(type="int", default=16777216),
                    max_passes=dict(type="int", default=5, no_log=False),
                    cache_dir=dict(type="path"),
                    target_cache_dir=dict(type="str"),
                    images=dict(type="dict", default={}),
                    attributes_since=dict(type="dict", default={}),
                ),
            ),
        ),
    ),
    send=dict(
        type="dict",
        options=dict(
            user=dict(type="str", required=True),
            address=dict(type="str", required=True),
            port=dict(type="int", default=22),
            key_dir=dict(type="path", required=True),
            timeout=dict(type="int", default=21600),
            max_bytes=dict(type="int", default=268435456),
            handoff=dict(type="bool", default=False),
        ),
    ),
    mode=dict(type="str", default="commit", choices=["commit", "export"]),
    image=dict(type="str", default="bundle", choices=["bundle", "stream"]),
    consistency=dict(type="str", default="stop", choices=["stop", "pause"]),
    cutover=dict(type="str", default="stop", choices=["stop", "keep", "remove"]),
    compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
    stop_timeout=dict(type="int", default=10),
    journal=dict(
        type="dict",
        options=dict(run_id=dict(type="str", required=True), journal_dir=dict(type="path", required=True)),
    ),
    capture_options=dict(type="dict", default={}),
    progress=dict(
        type="dict",
        default={},
        options=dict(
            bytes=dict(type="int", default=268435456),
            interval=dict(type="int", default=10),
            timeout=dict(type="int", default=21600),
        ),
    ),
    hooks=dict(
        type="dict",
        default={},
        options=dict(
            from_labels=dict(type="bool", default=True),
            timeout=dict(type="int", default=300),
            on_error=dict(type="str", default="fail", choices=["fail", "continue"]),
            configured=dict(type="raw", default={}),
            lists=dict(type="dict", default={}),
        ),
    ),
)
SOURCE_KWARGS = dict(
    supports_check_mode=True,  # state=planned changes nothing; the other states do nothing in check mode
    mutually_exclusive=[("members", "groups")],
    required_if=[("state", "planned", ("plan",))]
    + [("state", state, ("members", "groups"), True) for state in ("captured", "restored", "cut_over")]
    + [("state", "precopied", ("groups", "send"))],
)
PLAN = "ferry.docker.docker_migrate_plan"


def source_members(args):
    return args.get("members") or [m for group in args.get("groups") or [] for m in group["members"]]


def runs_stepwise(args):
    """Whether the action plugin runs this source task's steps itself, one module each: when a capture step
    runs as an async job with progress (a member's expected bytes reach ``progress.bytes``), or when there
    is no step to run (a cutover ``keep`` without a journal). Otherwise the whole task runs as one module
    process on the source."""
    if args["state"] == "planned":
        return False
    if args["state"] == "cut_over":
        return args["cutover"] == "keep" and not args.get("journal")
    if args["state"] != "captured":
        return False
    if any((g.get("precopy") or {}).get("volumes") for g in args.get("groups") or []):
        return False  # the last delta of a pre-copy and its digest run in the module's process
    threshold = int((args.get("progress") or {}).get("bytes") or 0)
    return bool(threshold) and any(int(m.get("expected_bytes") or 0) >= threshold for m in source_members(args))


def source_task(call, args, now=time.time, send=None, check_mode=False, copier=None, handoff=None):
    """docker_migrate_source's work with ``call``: the task's result (``failed`` and ``msg`` when it failed).
    ``send(src, dest)`` (the module's rsync, see capture_groups) sends small captures right away; ``copier``
    (``_precopy.LocalCopier``) runs the pre-copy's passes and digests."""
    if args["state"] == "planned":
        planned = call(PLAN, args["plan"])
        key = args.get("run_key")
        if key and not check_mode and not planned.get("failed"):
            # the run's key pair, in this process: one step less on this host before the run starts. One that
            # cannot be made here (no ssh-keygen: the plan's check of programs names the package) is only noted,
            # and the role makes it as before.
            try:
                planned["run_key_public"] = _transfer.make_key_pair(key["dir"], key["comment"])
            except OSError as exc:
                planned["run_key_note"] = f"the run's key pair could not be made in {key['dir']}: {exc}"
        return planned
    if check_mode:
        return dict(changed=True, msg=f"check mode: the sources were not {args['state'].replace('_', ' ')}")
    if args["state"] == "precopied":
        groups = precopy_groups(call, args["groups"] or [], args, copier, now=now, send=send)
        return dict(groups=groups, changed=bool(groups))
    if args["groups"] is not None:
        if args["state"] == "captured":
            groups = capture_groups(call, args["groups"], args, now=now, send=send, copier=copier, handoff=handoff)
            return dict(groups=groups, changed=bool(groups))
        done = {}
        for group in args["groups"]:
            run = SourceRun(call, group["members"], args, now=now)
            started = now()
            try:
                if args["state"] == "restored":
                    states = run.put_back()
                    phases = {"rollback": round(now() - started, 3)}
                    done[group["id"]] = {"ok": True, "source_states": states, "phases": phases}
                else:
                    states, changed = run.cut_over(args["cutover"], args["stop_timeout"])
                    phases = {"cutover": round(now() - started, 3)}
                    done[group["id"]] = {"ok": True, "source_states": states, "changed": changed, "phases": phases}
            except StepFailed as exc:
                done[group["id"]] = {"ok": False, "msg": str(exc), "phase": exc.phase, "member": exc.member}
        # a cutover that finds every source already stopped changes nothing (an idempotent re-run)
        changed = any(g.get("changed") for g in done.values()) if args["state"] == "cut_over" else bool(done)
        return dict(groups=done, changed=changed)
    run = SourceRun(call, args["members"], args, now=now)
    try:
        if args["state"] == "captured":
            return dict(run.capture(), changed=True)
        if args["state"] == "restored":
            return dict(source_states=run.put_back(), changed=True)
        states, changed = run.cut_over(args["cutover"], args["stop_timeout"])
        return dict(source_states=states, changed=changed)
    except StepFailed as exc:
        result = dict(failed=True, msg=str(exc), phase=exc.phase, member=exc.member, changed=True)
        result["phases"] = run.phases.close()
        result["log_tail"] = exc.result.get("log_tail", [])
        if args["state"] == "captured":
            # The source's own undo: every member back as it was before the run.
            _put_back_after_capture(run, result, now)
        return result


def _put_back_after_capture(run, failure, now):
    """Put back the members of ``run`` whose capture failed (into ``failure``: ``source_states``, and when the
    capture had taken them down, ``down_at`` and ``up_at``, for the report's downtime; ``up_at`` 0 when they could
    not be started again)."""
    try:
        failure["source_states"] = run.put_back()
        up = True
    except StepFailed as again:
        failure["msg"] += f"; putting the sources back failed too: {again}"
        failure["source_states"] = {}
        up = False
    if run.down_at:
        failure["down_at"] = run.down_at
        failure["up_at"] = round(now(), 3) if up else 0


def _failure(run, exc):
    return {
        "ok": False,
        "msg": str(exc),
        "phase": exc.phase,
        "member": exc.member,
        "log_tail": exc.result.get("log_tail", []),
        "phases": run.phases.close(),
    }


def _sends_now(group, out, options, send):
    """Whether this capture goes to its target in this process: a sender, a group with its directories, and
    fewer bytes in its bundles than ``send.max_bytes`` (0: any size), above which the role sends it with
    progress. The bytes that went straight into the target (``direct_bytes``) do not count."""
    sending = options.get("send") or {}
    # a restore waiting for the handoff (send.handoff) takes every group from here: no size limit
    limit = 0 if sending.get("handoff") else int(sending.get("max_bytes") or 0)
    # what is in the bundle: not what already went straight into the target (volumes, a streamed image)
    captured = sum(int(m.get("bytes_captured") or 0) - int(m.get("direct_bytes") or 0) for m in out["members"].values())
    return bool(send and options.get("send") and group.get("transfer")) and (not limit or captured < limit)


def precopy_groups(call, groups, options, copier, now=time.time, send=None):
    """The live passes of several groups, one after the other, while their sources serve. A group whose
    pass fails (a full target disk) is reported, its sources untouched; the others go on. With ``send`` and
    the group's ``transfer``, the images committed meanwhile go to the target right away."""
    results = {}
    for group in groups:
        run = SourceRun(call, group["members"], options, now=now)
        try:
            out = run.precopy(group.get("precopy"), copier)
            if send and group.get("transfer") and any(i.get("image_id") for i in (out.get("images") or {}).values()):
                try:
                    out["sent_bytes"] = send(group["transfer"]["src"], group["transfer"]["dest"])
                except StepFailed as exc:
                    raise StepFailed("precopy", "", str(exc)) from None
            results[group["id"]] = dict(out, ok=True)
        except StepFailed as exc:
            results[group["id"]] = failure = dict(_failure(run, exc), target_touched=True, source_states={})
            for left in run.drop_streamed(copier):
                failure["msg"] += f"; {left}"
            _precopy.drop_caches(_cache_files(group.get("precopy"), group["members"]))  # no capture follows
    return results


def _cache_files(spec, members):
    """The digest caches of a group on its source (its volumes', its members' writable layers'), where its run
    keeps them; none without a run directory."""
    names = sorted((spec or {}).get("volumes") or {}) + [f"upper-{m['container']}" for m in members]
    return [path for path in (_cache_file(spec, name) for name in names) if path]


def capture_groups(call, groups, options, now=time.time, send=None, copier=None, handoff=None):
    """Stop and capture several independent groups of one host, one after the other. A group whose step
    fails is put back as it was and reported; the others go on. ``{group id: result}``.

    With ``send(src, dest)`` (which returns the bytes sent, or raises StepFailed in phase ``transfer``), a
    small capture goes to its target right away, and the journal then says ``restore`` for its members:
    its result has ``sent`` and ``sent_bytes``, and the role sends only the others.

    With ``handoff(dest, doc)`` as well (``send.handoff``: a restore already waits on the target), every group
    goes whatever its size, and then its handoff tells the restore what was captured (``_handoff.hand_off``):
    after the journal says ``restore``, so that a guard that fires from then on stops the copy before the source.
    It returns once the restore has the handoff, and raises (StepFailed) only when the restore does not have it
    and never will, so that a source is never put back while its copy starts. A group that fails is handed off
    as failed, so that the restore does not wait for it."""
    results, runs = {}, []
    handing = bool(send and handoff and (options.get("send") or {}).get("handoff"))
    for group in groups:
        run = SourceRun(call, group["members"], options, now=now)
        runs.append((group["id"], run))
        if handing and group.get("transfer") and getattr(handoff, "ready", None) is not None:
            run.volumes_ready = functools.partial(handoff.ready, group["transfer"]["dest"])
        sending = False
        try:
            out = run.capture(group.get("precopy"), copier)
            if _sends_now(group, out, options, send):
                sending = True
                out["sent_bytes"] = send(group["transfer"]["src"], group["transfer"]["dest"])
                out["sent"] = True
                # from now on a copy may run on the target: a guard that fires stops it first
                run.journal("restore")
                if handing:
                    # the restore has it once this returns (a note when only the withdrawal found that out); it
                    # raises when the restore does not have it and never will
                    note = handoff(group["transfer"]["dest"], _handoff.document(group["id"], dict(out, ok=True)))
                    out["handed_off"] = True
                    if note:
                        out["handoff_note"] = note
            results[group["id"]] = dict(out, ok=True)
        except StepFailed as exc:
            results[group["id"]] = failure = _failure(run, exc)
            # what a send left on the target (a partial bundle) is for the role to remove there
            failure["target_touched"] = sending or bool((group.get("precopy") or {}).get("volumes"))
            if handing and group.get("transfer"):
                try:  # the restore waiting on the target lets the group go (a handoff already taken is not undone)
                    handoff(group["transfer"]["dest"], _handoff.document(group["id"], {"ok": False}))
                    failure["let_go"] = True
                except StepFailed as again:
                    failure["msg"] += f"; telling the target's restore failed too: {again}"
            undo_started = now()
            _put_back_after_capture(run, failure, now)
            for left in run.drop_streamed(copier):
                failure["msg"] += f"; {left}"
            failure["phases"]["rollback"] = round(now() - undo_started, 3)
    # the committed images' removals ran beside the handoffs and sends: the task ends once they are done too
    for group_id, run in runs:
        for name, note in run.finish_removals().items():
            member = results[group_id].setdefault("members", {}).setdefault(name, {})
            member["image_note"] = note
    # the capture's digests, once stopped, were the caches' last readers (without a copier this process is not on
    # the source)
    for group in groups if copier is not None else ():
        _precopy.drop_caches(_cache_files(group.get("precopy"), group["members"]))
    return results


def restore_groups(call, groups, options, now=time.time):
    """Restore several independent groups on one target, then watch every running member at once (one
    stable window for all instead of one each). A group that fails is undone and reported; the others go
    on. ``{group id: result}`` (``created`` and ``target_cleanup`` in every one)."""
    runs = {group["id"]: TargetRun(call, group["members"], options, now=now) for group in groups}
    results, started = {}, {}

    def fail(group_id, exc):
        run = runs[group_id]
        failure = _failure(run, exc)
        failure["started_at"] = started.get(group_id) or run_started.get(group_id, 0)
        undo_started = now()
        left = run.undo()
        failure["phases"]["rollback"] = round(now() - undo_started, 3)
        results[group_id] = dict(
            failure, created=run.created, target_cleanup="done" if not left else "failed: " + "; ".join(left)
        )

    run_started = {}
    for group_id, run in runs.items():
        run_started[group_id] = round(now(), 3)
        try:
            started[group_id] = run.restore_objects()
        except StepFailed as exc:
            fail(group_id, exc)
    pending = {group_id: runs[group_id] for group_id in started}
    owner = {m["name"]: group_id for group_id, run in pending.items() for m in run.members if m.get("running")}
    for run in pending.values():
        run.phases.enter("health")
    if owner:
        args = dict(
            names=sorted(owner),
            timeout=options["health_timeout"],
            stable_seconds=options["health_stable_seconds"],
            interval=HEALTH_POLL_SECONDS,
        )
        watched = call("ferry.docker.docker_container_health", args)
        containers = watched.get("containers")
        for name, group_id in sorted(owner.items()):
            if group_id in results:
                continue
            entry = (containers or {}).get(name)
            if containers is None or watched.get("unreachable"):
                reason = watched.get("msg", "the health check failed without a message")
                fail(group_id, StepFailed("health", name, f"health of {name}: {reason}", watched))
            elif not entry.get("up"):
                tail = entry.get("log_tail") or []
                reason = failure_message(entry.get("reason"), tail, len(tail))
                fail(group_id, StepFailed("health", name, f"health of {name}: {reason}", {"log_tail": tail}))
    for group_id, run in pending.items():
        if group_id in results:
            continue
        try:
            for member in run.members:
                if member.get("running"):
                    run.check_health(member, watched=True)
            results[group_id] = dict(run.finish(started[group_id]), ok=True)
        except StepFailed as exc:
            fail(group_id, exc)
    return results
