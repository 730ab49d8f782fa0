#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_migrate_source
short_description: The source side of migrating a group of containers - stop, capture, put back, cut over
version_added: 0.1.0
description:
  - Runs on the source host of a migration, for a group of containers that move together (in dependency
    order), the steps that the C(ferry.docker.migrate) role needs there, as one task.
  - O(state=planned) plans the dependency groups of the containers to move and reads what the checks need,
    as M(ferry.docker.docker_migrate_plan) does, in the same module process as the later steps.
  - O(state=captured) journals the phases (with O(journal)), stops the running members in reverse order
    (O(consistency=stop)), captures each member's image (M(ferry.docker.docker_commit_save), without
    O(members[].exclude_layers)) or filesystem (M(ferry.docker.docker_export)) and its volumes
    (M(ferry.docker.docker_volume_backup)) into its bundle, and starts the members again for O(cutover=keep).
    When a step fails, every member is put back as it was before the run, and the task fails naming the
    phase and the member.
  - The whole task runs in one module process on the source, unless a member's capture is large enough to
    report progress (O(progress)); then each step runs as its own module.
  - O(state=precopied) copies, while the members still serve, the data of their volumes planned for
    pre-copy (O(members[].volumes)) into the target's volumes (O(groups[].precopy)) with rsync over SSH and the
    run's key (O(send)), in passes until a pass moves no more than O(groups[].precopy.delta_bytes) or
    O(groups[].precopy.max_passes) passes ran, or the delta stops shrinking. Then it digests each source tree,
    which fills a cache of per-file digests. In commit mode it also commits and saves each member's image
    (the engine pauses it briefly) with the digest of its writable layer before and after, and sends the
    bundle with O(send). A failed pass (a full target disk) fails the group, which was never stopped.
    O(state=captured) with O(groups[].precopy) then moves the last delta right after the stop (and the whole
    of each volume planned V(stream), which had no live pass - the streamed stop-and-copy) and returns each
    volume's content digest, which the target checks before use.
  - O(state=restored) puts every member back as it was before the run (after a failure further on).
  - O(state=cut_over) stops (in reverse order) or removes (volumes kept) the members once their copies
    serve, or leaves them for O(cutover=keep).
  - Results hold sizes, image IDs and timings, never a run config or an environment value.
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the task run on the controller.
    support: full
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: partial
    details: O(state=planned) runs in check mode (it changes nothing); the other states only say that they would.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  state:
    description: What to do; see the description.
    type: str
    required: true
    choices: [planned, precopied, captured, restored, cut_over]
  plan:
    description:
      - With O(state=planned), the options of M(ferry.docker.docker_migrate_plan) (checked against its own
        argument spec); the task then returns that module's result. Changes nothing.
    type: dict
  run_key:
    description:
      - With O(state=planned), once the plan is read, the migration's key pair is made on this host in O(run_key.dir)
        (C(id_ed25519), ed25519 without a passphrase; directories made 0700, a pair already there is kept) and its
        public key returned (RV(run_key_public)). Not in check mode.
      - A pair that cannot be made (no C(ssh-keygen)) does not fail the task; RV(run_key_note) says why.
    type: dict
    suboptions:
      dir:
        description: The directory of the key pair.
        type: path
        required: true
      comment:
        description: The key's comment, which names the run in C(authorized_keys).
        type: str
        required: true
  members:
    description: The group (or O(groups)), in dependency order (a member comes after the ones it needs).
    type: list
    elements: dict
    suboptions: &member
      container:
        description: Name of the source container.
        type: str
        required: true
      name:
        description: Its name on the target.
        type: str
        required: true
      state_before:
        description: Its state before the run (V(running), V(paused), or another state left as it is).
        type: str
        required: true
      running:
        description: Whether it was running (or paused) before the run.
        type: bool
        default: false
      has_volumes:
        description: Whether it has named volumes to capture.
        type: bool
        default: false
      exclude_layers:
        description: Image layers (diff IDs) the target already has.
        type: list
        elements: str
        default: []
      image_ref:
        description: Repository and tag of the committed image.
        type: str
        required: true
      bundle:
        description: Bundle directory of the member on the source.
        type: str
        required: true
      hook_label:
        description: Whether it may have a C(ferry.docker.pre-migrate) label to run (V(false) saves a look).
        type: bool
        default: true
      expected_bytes:
        description: About how many bytes its capture writes; from O(progress.bytes) on, it reports progress.
        type: int
        default: 0
      volumes:
        description:
          - How each of its named volumes moves (the migrate role's plan); without it every volume goes in the
            bundle (O(members[].has_volumes)).
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: The volume.
            type: str
            required: true
          choice:
            description:
              - V(precopy) (copied while the member serves, the last delta once stopped), V(stream) (copied
                whole once it is stopped, straight into the target's volume), V(copy) (in the bundle) or V(skip)
                (not copied; the target recreates its definition).
            type: str
            required: true
            choices: [precopy, stream, copy, skip]
          reason:
            description: Why, for the report.
            type: str
            default: ""
          source:
            description: For bind data (C(bind:<path>)), the bind source directory on this host.
            type: str
          path:
            description: For bind data, the directory it goes to on the target.
            type: str
  groups:
    description:
      - Several independent groups at once, instead of O(members) - each C(id) with its C(members) (as
        O(members)). A group whose step fails is put back (or reported) on its own and the others go on; the
        task then does not fail, and RV(groups) says per group what happened.
    type: list
    elements: dict
    suboptions:
      id:
        description: The group's name.
        type: str
        required: true
      transfer:
        description:
          - The group's bundle directory here (C(src)) and its receiving directory on the target (C(dest)),
            for O(send).
        type: dict
        suboptions:
          src:
            description: Bundle directory of the group on this host.
            type: str
          dest:
            description: Receiving directory on the target.
            type: str
      precopy:
        description:
          - The group's pre-copy, for O(state=precopied) and O(state=captured). Volumes planned for pre-copy
            that are not in O(groups[].precopy.volumes) go in the bundle.
        type: dict
        suboptions:
          target:
            description: The target's name, for messages.
            type: str
            default: ""
          volumes:
            description:
              - Per volume name, its directory on the target (C(mountpoint)) and the free bytes there
                (C(free_bytes)), as M(ferry.docker.docker_bundle_restore) returns them with
                O(ferry.docker.docker_bundle_restore#module:state=prepared).
            type: dict
            default: {}
          refused:
            description: Per volume name, why the target could not take its pre-copy (it is copied instead).
            type: dict
            default: {}
          delta_bytes:
            description: The live passes of a volume stop once a pass transferred files of no more than this.
            type: int
            default: 16777216
          max_passes:
            description: At most this many live passes per volume.
            type: int
            default: 5
          cache_dir:
            description: Directory of the per-file digest cache on this host (the run's work directory).
            type: path
          target_cache_dir:
            description:
              - With O(state=captured), the directory on the target where its digest after the live passes
                (M(ferry.docker.docker_bundle_restore) with O(ferry.docker.docker_bundle_restore#module:state=hashed))
                kept each volume's tree. The last delta of a volume whose tree is there sends only the paths where the
                two trees differ; without it the last delta compares the whole tree on both hosts.
            type: str
          images:
            description:
              - With O(state=captured), per member the C(images) entry O(state=precopied) returned (C(image_id)
                and C(upper_digest)). A member whose writable layer still has that digest after the stop keeps
                the image committed while it served; any other is committed after the stop.
            type: dict
            default: {}
          attributes_since:
            description:
              - With O(state=captured), per pre-copied volume the C(attributes_since) O(state=precopied) returned
                (when its last live pass began, epoch seconds). The last delta then leaves ACLs and xattrs alone
                and carries them again only for the entries whose change time is that late or later (a change of
                content, owner, mode, links, ACLs or xattrs sets it); without it the last delta carries them all.
            type: dict
            default: {}
      members:
        description: Its members, as O(members).
        type: list
        elements: dict
        required: true
        suboptions: *member
  send:
    description:
      - With O(groups) and O(state=captured), send each group's bundles to its target right after its
        capture, in this module's process, when they are smaller than O(send.max_bytes) and the group has
        C(transfer). rsync runs with the run's key and the arguments the C(ferry.docker.transfer) role
        gives it (see the filter C(ferry.docker.transfer_rsync_argv)); then the journal says C(restore) for
        the group's members. The group's result then has C(sent) and C(sent_bytes); a group that is not
        sent here is left for the role to send. Ignored when a capture runs as an async job (O(progress)).
      - A failed send puts the group's sources back and fails the group in phase C(transfer) (its result
        has C(target_touched)), so that the role removes what it left on the target.
    type: dict
    suboptions:
      user:
        description: Login user on the target (the transfer role's C(transfer_login_users)).
        type: str
        required: true
      address:
        description: Address of the target, as this host reaches it.
        type: str
        required: true
      port:
        description: SSH port of the target.
        type: int
        default: 22
      key_dir:
        description: The run's key directory on this host (C(id_ed25519) and C(known_hosts)).
        type: path
        required: true
      timeout:
        description: Seconds one send may take.
        type: int
        default: 21600
      max_bytes:
        description: Captured bytes from which a group is left for the role to send (with progress); V(0) never.
        type: int
        default: 268435456
      handoff:
        description:
          - A restore already waits on the target (M(ferry.docker.docker_bundle_restore) with its C(handoff)), so
            every group is sent here whatever its size, and once the journal says C(restore) its handoff file
            tells that restore what was captured (image ID, each pre-copied volume's digest). A group that fails
            is handed off as failed.
          - The write waits until the restore has taken and accepted the handoff (at most 10 seconds). When that
            answer does not come (the ssh failed, or no restore took it), the handoff is withdrawn, and the group
            fails and its sources are put back, unless the withdrawal finds that the restore had already taken
            it, so a source is not put back while its copy starts (unless the target cannot be reached to
            withdraw it; the error then says that the restore may have it).
          - Once the last passes of the group's volumes end, a note beside the handoff (C(<directory>.ready)) names
            those volumes first, so that the restore digests them while the capture ends (the image's stream, the
            bundle's send, the handoff). A note that could not be written only costs that time
            (RV(groups) C(ready_note) says why).
        type: bool
        default: false
  mode:
    description: V(commit) (image layers) or V(export) (flat filesystem).
    type: str
    default: commit
    choices: [commit, export]
  image:
    description:
      - How a member's committed image (O(mode=commit)) goes to the target, when it is committed while the member
        serves (O(state=precopied)) or once it is stopped (O(state=captured)).
      - V(bundle) saves it into the member's bundle, which is sent with the rest.
      - V(stream) loads it straight into the target's engine with O(send)'s connection
        (M(ferry.docker.docker_commit_save) with O(ferry.docker.docker_commit_save#module:stream_to)), untagged,
        with no archive on either disk; the target checks its image ID before it tags and uses it. The journal
        names it, so a guard that fires removes it there, and a group that fails removes it too, as does a
        capture that commits again because the writable layer changed after the pre-copy's commit. Needs
        O(send); without it the image goes in the bundle.
    type: str
    default: bundle
    choices: [bundle, stream]
  consistency:
    description: V(stop) the running members before the capture, or only V(pause) each while it is read.
    type: str
    default: stop
    choices: [stop, pause]
  cutover:
    description: What happens to the sources once their copies serve.
    type: str
    default: stop
    choices: [stop, keep, remove]
  compression:
    description: Compression of the archives.
    type: str
    default: zstd
    choices: [zstd, gzip, none]
  stop_timeout:
    description: Seconds a stopping container gets before it is killed.
    type: int
    default: 10
  journal:
    description:
      - The run's journal on this host (see M(ferry.docker.docker_migrate_guard)); the phases are recorded there.
    type: dict
    suboptions:
      run_id:
        description: The run id.
        type: str
        required: true
      journal_dir:
        description: The journal directory.
        type: path
        required: true
  capture_options:
    description: More options for every capture module, for example C(encrypt_recipients) or C(sign_key).
    type: dict
    default: {}
  progress:
    description:
      - How a large capture reports progress. A capture step of a member whose C(expected_bytes) reach
        O(progress.bytes) runs as an async job (as a task with C(async) and C(poll=0) does); every
        O(progress.interval) seconds the bytes written so far are displayed, and AWX shows them in the
        job output while the task runs. Smaller captures run as plain steps, with no async overhead.
    type: dict
    default: {}
    suboptions:
      bytes:
        description: Expected bytes from which a capture reports progress; V(0) never.
        type: int
        default: 268435456
      interval:
        description: Seconds between two progress lines.
        type: int
        default: 10
      timeout:
        description: Seconds one capture step may take before its async job is stopped.
        type: int
        default: 21600
  hooks:
    description:
      - The pre-migrate hooks run in each running member before anything is stopped.
    type: dict
    default: {}
    suboptions:
      from_labels:
        description: Run the command in a member's C(ferry.docker.pre-migrate) label (with C(sh -c)).
        type: bool
        default: true
      timeout:
        description: Seconds a hook may run.
        type: int
        default: 300
      on_error:
        description: Whether a failing hook fails the group or only warns.
        type: str
        default: fail
        choices: [fail, continue]
      configured:
        description: The C(migrate_hooks) of the role (container name or V(*) to a list of hooks).
        type: raw
        default: {}
      lists:
        description:
          - The configured hooks resolved per container (container to a list of C(command), C(timeout),
            C(on_error) and C(user)). The action plugin fills it from O(hooks.configured); leave it unset.
        type: dict
        default: {}
extends_documentation_fragment:
  - ferry.docker.docker
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
seealso:
  - module: ferry.docker.docker_bundle_restore
  - module: ferry.docker.docker_migrate_guard
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Stop and capture web and its sidecar
  ferry.docker.docker_migrate_source:
    state: captured
    members:
      - {container: web, name: web, state_before: running, running: true, image_ref: "ferry-migrate/web:latest",
         bundle: /var/lib/ferry/migrate/run1/web}
      - {container: web-log, name: web-log, state_before: running, running: true,
         image_ref: "ferry-migrate/web-log:latest", bundle: /var/lib/ferry/migrate/run1/web-log}
"""

RETURN = r"""
missing:
  description:
    - With O(state=planned), what M(ferry.docker.docker_migrate_plan) returns (also C(groups), C(problems),
      C(resolved), C(probes) and C(architecture)).
  returned: O(state=planned)
  type: list
members:
  description:
    - Per source container, C(bytes_captured) and C(image_id) (commit mode); with O(image=stream),
      C(image_streamed) (C(new), C(bytes), C(sha256) of the stream; C(new) is false when the target had the image).
    - C(stop_timed_out) is true for a container that did not end within O(stop_timeout) of its stop signal, so
      that the engine killed it (exit 137).
  returned: O(state=captured), success
  type: dict
down_at:
  description:
    - When the service went down (epoch seconds; 0 when nothing ran).
    - A capture that failed after it stopped its sources has it too (and so has each such group of O(groups)).
  returned: O(state=captured), success, or a failure after the stop
  type: float
up_at:
  description:
    - When it was up again on the source (pause or cutover keep; 0 otherwise).
    - After a failure, when the sources were started again (0 when they could not be).
  returned: O(state=captured), success, or a failure after the stop
  type: float
phases:
  description: Seconds spent in each phase.
  returned: O(state=captured)
  type: dict
phase:
  description: The phase that failed.
  returned: failure
  type: str
member:
  description: The member whose step failed.
  returned: failure
  type: str
groups:
  description:
    - With O(groups), per group id its result - C(ok), and the fields above (or C(msg), C(phase), C(member)).
    - With O(state=precopied), C(volumes) per volume name - C(choice), C(reason), C(passes), C(outcome)
      (C(converged), C(capped) or C(not_shrinking)), C(last_delta_bytes), C(sent_bytes) and C(note).
    - With O(state=captured), each member in C(members) has C(volumes) - per volume name C(choice) and
      C(reason), and for a pre-copied one C(final_delta_bytes), C(final_sent_bytes), C(digest), C(entries).
    - With O(send), C(sent) and C(sent_bytes) for a group sent here, and C(target_touched) for a group
      whose send failed; with O(send.handoff), C(handed_off) for a group the restore took, and
      C(handoff_note) when only withdrawing the handoff after a failed write found that the restore had it,
      and C(ready_note) when the note that the volumes were ready could not be written.
  returned: with O(groups)
  type: dict
run_key_public:
  description: With O(run_key), the public key line of the run's key pair.
  returned: O(state=planned) with O(run_key), when the pair was made
  type: str
run_key_note:
  description: With O(run_key), why the run's key pair could not be made.
  returned: O(state=planned) with O(run_key), when it could not
  type: str
source_states:
  description: The state of each member afterwards.
  returned: when a step failed, or O(state=restored) or O(state=cut_over)
  type: dict
"""

from ansible_collections.ferry.docker.plugins.module_utils import _handoff, _precopy, _transfer
from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._migration import (
    SOURCE_KWARGS,
    SOURCE_SPEC,
    StepFailed,
    source_task,
)
from ansible_collections.ferry.docker.plugins.module_utils._steps import caller


def sender(options):
    """``send(src, dest)`` for source_task: rsync with the run's key, as the transfer role runs it."""

    def send(src, dest):
        try:
            return _transfer.send(
                options["key_dir"], options["port"], src, options["user"], options["address"], dest, options["timeout"]
            )
        except _transfer.SendFailed as exc:
            raise StepFailed("transfer", "", str(exc)) from None

    return send


def handoff_writer(options):
    """``handoff(dest, doc)`` for source_task: the handoff of a group to the restore waiting on the target; its
    ``ready(dest, names, changed)`` tells that restore that these volumes' last passes are done, and what
    they changed (a hint: ``""`` or why it could not)."""

    def handoff(dest, doc):
        try:
            return _handoff.hand_off(options, dest, doc)
        except OSError as exc:
            raise StepFailed("transfer", "", str(exc)) from None

    handoff.ready = lambda dest, names, changed=None: _handoff.announce_ready(options, dest, names, changed)
    return handoff


def main():
    module = FerryModule(SOURCE_SPEC, **SOURCE_KWARGS)
    send = sender(module.params["send"]) if module.params["send"] else None
    copier = _precopy.LocalCopier(module.client, module.params["send"]) if module.params["send"] else None
    # every step in this process
    call = caller(module, source=True)
    handoff = handoff_writer(module.params["send"]) if module.params["send"] else None
    result = source_task(call, module.params, send=send, check_mode=module.check_mode, copier=copier, handoff=handoff)
    if result.get("failed"):
        module.fail(result.pop("msg"), **{k: v for k, v in result.items() if k != "failed"})
    module.exit(**result)


if __name__ == "__main__":
    main()
