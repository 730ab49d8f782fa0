#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_bundle_restore
short_description: Restore a group of containers from their bundles, check them, and undo it all on failure
version_added: 0.1.0
description:
  - Runs on the target host, as one task, what a migration does there for a group of containers that move
    together, in dependency order. For each member it loads the image (M(ferry.docker.docker_load)) or
    imports the filesystem (M(ferry.docker.docker_import)), restores the named volumes
    (M(ferry.docker.docker_volume_restore)) and creates the container with its networks
    (M(ferry.docker.docker_container_restore)), started if it was running (on an engine before Docker 28, its
    bridge addresses are then asked for once, as that module describes). Then each running member must
    pass M(ferry.docker.docker_container_health) and the optional TCP port and URL checks. The received
    bundles are removed unless O(keep_bundle=true).
  - Every object is recorded in RV(created) as soon as it exists. When a step fails, exactly those are
    removed (container, networks, volumes, the image tag, and the image if it was not on the host before),
    and the task fails naming the phase and the member, with the container's last log lines when the health
    check failed.
  - O(state=absent) removes what an earlier call created (O(created)), for a failure further on.
  - O(state=prepared) creates the volumes a migration pre-copies (O(precopy)), before the sources stop, and
    returns where their data goes. O(state=hashed) digests them while the sources still serve, which fills a
    cache of per-file digests, so that the check before use (O(members[].precopied)) reads only what changed
    since. It also keeps the tree it found (each path's time and digest entry, 0600 in the run's directory),
    which the source reads before it stops, so that its last pass sends only the paths where the two differ;
    the check before use then starts from that tree and reads again only those paths (see O(handoff)).
  - All of it runs in one module process on the target. The steps are the code of those modules, each
    given its arguments as that module would be and checked against its argument spec, sharing one
    connection to the engine. That saves about 0.3 s of module start per step.
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: partial
    details: O(state=checked) runs in check mode (it changes nothing); the other states only say that they would change.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  state:
    description:
      - V(present) restores and checks the group; V(absent) removes what O(created) lists.
      - V(checked) runs the checks of O(checks) on this host, one after the other in this process, and
        changes nothing.
    type: str
    default: present
    choices: [present, absent, checked, prepared, hashed]
  checks:
    description:
      - With O(state=checked), the containers to check on this host before anything is touched - each the
        options of M(ferry.docker.docker_restore_preflight), whose C(fail_on_problems) is always V(false)
        here. RV(checks) has each one's result, in order.
    type: list
    elements: dict
    default: []
  members:
    description: The group (or O(groups)), in dependency order.
    type: list
    elements: dict
    suboptions: &member
      container:
        description: Name of the source container (the key of RV(created)).
        type: str
        required: true
      name:
        description: The container's name on this host.
        type: str
        required: true
      running:
        description: Whether it is to be started and checked.
        type: bool
        default: false
      has_volumes:
        description: Whether the bundle has named volumes.
        type: bool
        default: false
      image_ref:
        description: Repository and tag to give the image.
        type: str
        required: true
      image_id:
        description: ID of the bundle's image (commit mode), to know whether the host had it before.
        type: str
        default: ""
      image_streamed:
        description:
          - The capture loaded the image straight into this host's engine (M(ferry.docker.docker_migrate_source)
            O(ferry.docker.docker_migrate_source#module:image=stream)) instead of putting it in the bundle.
          - V(new) when the engine did not have it before (a failed restore removes it), V(present) when it did.
          - The engine must have exactly O(groups[].members[].image_id) (also recorded in the signed manifest)
            before the image is tagged and used.
        type: str
        default: ""
        choices: ["", new, present]
      received:
        description: The bundle directory on this host.
        type: str
        required: true
      entry:
        description: C(port_map), C(bind_map) and C(network_map) for M(ferry.docker.docker_container_restore).
        type: dict
        default: {}
      precopied:
        description:
          - Per volume name pre-copied to this host, the source's content digest (C(digest), C(entries)). Before
            anything is restored, each volume must hold exactly that, or the group fails and the volume is
            removed with the rest.
        type: dict
        default: {}
  groups:
    description:
      - Several independent groups at once, instead of O(members) - each C(id) with its C(members) (as
        O(members)). Their running members are watched together (one stable window for all); a group that
        fails is undone on its own and the others go on. The task then does not fail; RV(groups) says per
        group what happened. With O(state=absent), O(created) is keyed by group id.
    type: list
    elements: dict
    suboptions:
      id:
        description: The group's name.
        type: str
        required: true
      members:
        description: Its members, as O(members).
        type: list
        elements: dict
        required: true
        suboptions: *member
  precopy:
    description:
      - With O(state=prepared) or O(state=hashed), per group (C(id)) the volumes to pre-copy (C(volumes)) and
        the directory of the digest cache (C(cache_dir), the group's receiving directory).
      - O(state=prepared) refuses a volume that exists already and one whose data is not a directory this
        module reads (it is then copied in the bundle); RV(groups) has per group C(volumes) (C(mountpoint),
        C(free_bytes)), C(refused) and C(created).
    type: list
    elements: dict
    default: []
    suboptions:
      id:
        description: The group's name.
        type: str
        required: true
      cache_dir:
        description: Directory of the per-file digest cache.
        type: path
        required: true
      volumes:
        description: The volumes.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: The volume's name.
            type: str
            required: true
          container:
            description: The source container it belongs to (the key of RV(created)).
            type: str
            required: true
          labels:
            description: Its labels.
            type: dict
            default: {}
          path:
            description:
              - For bind data (C(bind:<source path>)), the directory on this host to copy into. It must not exist
                (it is made, and removed with its contents on failure) and must not be C(/), a system directory,
                the engine's data or a socket.
            type: str
  created:
    description: With O(state=absent), the RV(created) of an earlier call.
    type: dict
    default: {}
  mode:
    description: V(commit) bundles hold an image, V(export) bundles a filesystem.
    type: str
    default: commit
    choices: [commit, export]
  create_bind_paths:
    description: Create missing bind source directories.
    type: bool
    default: true
  allow_privileged:
    description: Apply the privilege-bearing settings of the bundles (see M(ferry.docker.docker_container_restore)).
    type: bool
    default: false
  stop_timeout:
    description: Stop timeout of the containers.
    type: int
    default: 10
  health_timeout:
    description: Seconds each member may take to become healthy, or stable.
    type: int
    default: 120
  health_stable_seconds:
    description: Seconds a member without a healthcheck must stay running with no restart.
    type: int
    default: 10
  health_tcp_port:
    description: A TCP port on this host that must answer (0 for none).
    type: int
    default: 0
  health_url:
    description: A URL that must answer with a success or redirect status (empty for none).
    type: str
    default: ""
  keep_bundle:
    description: Keep the received bundles after success.
    type: bool
    default: false
  trust:
    description: C(decrypt_identities), C(trusted_signers) and C(trusted_signer_keys), passed to every restore step.
    type: dict
    default: {}
  handoff:
    description:
      - The early restore of a migration, started on the target before its sources stop (as an async job). It
        waits for each group's handoff file, C(<directory of its members' received>.handoff), which the capture
        (M(ferry.docker.docker_migrate_source) with O(ferry.docker.docker_migrate_source#module:send.handoff))
        writes over the run key once the group's bundle is here; then it restores the groups handed off, as
        with O(groups). The controller starts no task between the capture and the restore.
      - A handoff is read once (renamed to C(.handoff.taken)), only as a regular file of this user that no one else
        may write, and only for the fields a capture gives (image ID, image streamed, each pre-copied volume's
        digest and entries), for the group's members and its prepared volumes; anything else fails the task before
        anything is restored. An accepted handoff is then renamed to C(.handoff.claimed), which the capture waits
        for (and removes), so that it never puts a source back while its copy starts here.
      - A group whose handoff says its capture failed, or whose C(<directory>.cancel) file appears (the role's
        rescue), is let go (RV(let_go)). The wait fails when the run key (O(handoff.key)) is gone from this
        user's C(~/.ssh/authorized_keys) (the run's guard fired), or after O(handoff.timeout) seconds.
      - A note C(<directory>.ready) that the capture writes before the handoff, once the last passes of the group's
        volumes are done (its image may still stream), starts the digests of the volumes it names at once. It is
        read under the same rules (this user's regular file; only volumes prepared for the group) and removed;
        one that does not follow them starts nothing. The digests are still checked against the handoff's.
      - For a volume whose last pass was listed, the note also says which paths it sent and removed, and the sha256
        of this host's kept tree it compared with. The digest then starts from that tree (only if its file still
        has that sha256) and reads again only those paths, each opened a directory at a time without following a
        symlink; a path not plainly inside the tree, more than 100,000 paths or anything else in that entry that
        is not what a capture writes leaves the volume to a digest of the whole tree (RV(digest_checks)).
    type: dict
    suboptions:
      timeout:
        description: Seconds to wait for the handoffs.
        type: int
        required: true
      volumes:
        description:
          - Per group id, the volumes the target prepared for it (the result of O(state=prepared)), C(mountpoint)
            and C(remove) of each; the only volumes a handoff may name, and where bind data is.
        type: dict
        default: {}
      key:
        description: The run's public key; the wait ends when it is no longer authorized here.
        type: str
        default: ""
extends_documentation_fragment:
  - ferry.docker.docker
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
  - C(zstandard) Python library for zstd-compressed bundles
seealso:
  - module: ferry.docker.docker_migrate_source
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Restore web on the target and check it
  ferry.docker.docker_bundle_restore:
    members:
      - {container: web, name: web, running: true, has_volumes: true, image_ref: "ferry-migrate/web:latest",
         received: /var/lib/ferry/incoming/run1-host1-web}
    allow_privileged: true
  delegate_to: host2
"""

RETURN = r"""
checks:
  description:
    - With O(state=checked), the result of each check of O(checks), in order, as
      M(ferry.docker.docker_restore_preflight) returns it (C(failed) and C(msg) when a check could not run).
  returned: O(state=checked)
  type: list
  elements: dict
groups:
  description: With O(groups), per group id its result - C(ok), and the fields below (or C(msg), C(phase), C(member)).
  returned: with O(groups)
  type: dict
volumes:
  description: With O(state=hashed), per volume C(entries) and C(read_bytes), or C(failed) and C(msg).
  returned: O(state=hashed)
  type: dict
let_go:
  description: With O(handoff), per group id why it was not restored (its capture failed, or the rescue let it go).
  returned: with O(handoff)
  type: dict
created:
  description:
    - Per member, what was created (C(container), C(image), C(image_id), C(networks), C(volumes), C(bind_paths)).
  returned: always
  type: dict
verified_at:
  description: When every member passed its checks (epoch seconds).
  returned: success
  type: float
early_digests:
  description:
    - The pre-copied or streamed volumes whose digests began before the handoff, on the capture's note that
      their last passes were done (see O(handoff)).
  returned: success
  type: list
  elements: str
digest_checks:
  description:
    - Per volume whose last pass said what it changed, how its check read it, C(listed_paths) (only those paths
      were read again, from the tree this host's digest kept after the live passes) or C(walked) (why the whole
      tree was read instead).
  returned: success
  type: dict
phases:
  description: Seconds spent restoring and checking.
  returned: O(state=present)
  type: dict
phase:
  description: The phase that failed.
  returned: failure
  type: str
member:
  description: The member whose step failed.
  returned: failure
  type: str
log_tail:
  description: The last log lines of a container that failed its health check.
  returned: failure
  type: list
  elements: str
target_cleanup:
  description: C(done), or what could not be removed.
  returned: failure, or O(state=absent)
  type: str
"""

import os
import pwd

from ansible_collections.ferry.docker.plugins.module_utils import _handoff, _precopy
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException, FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._migration import (
    VOLUME_DIGEST,
    StepFailed,
    TargetRun,
    restore_groups,
)
from ansible_collections.ferry.docker.plugins.module_utils._restore import RequestException
from ansible_collections.ferry.docker.plugins.module_utils._steps import _missing, caller

PREFLIGHT = "ferry.docker.docker_restore_preflight"

MEMBER = dict(
    container=dict(type="str", required=True),
    name=dict(type="str", required=True),
    running=dict(type="bool", default=False),
    has_volumes=dict(type="bool", default=False),
    image_ref=dict(type="str", required=True),
    image_id=dict(type="str", default=""),
    image_streamed=dict(type="str", default="", choices=["", "new", "present"]),
    received=dict(type="str", required=True),
    entry=dict(type="dict", default={}),
    precopied=dict(type="dict", default={}),
)
PRECOPY = dict(
    id=dict(type="str", required=True),
    cache_dir=dict(type="path", required=True),
    volumes=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            name=dict(type="str", required=True),
            container=dict(type="str", required=True),
            labels=dict(type="dict", default={}),
            path=dict(type="str"),
        ),
    ),
)
SPEC = dict(
    state=dict(type="str", default="present", choices=["present", "absent", "checked", "prepared", "hashed"]),
    checks=dict(type="list", elements="dict", default=[]),
    precopy=dict(type="list", elements="dict", default=[], options=PRECOPY),
    members=dict(type="list", elements="dict", options=MEMBER),
    groups=dict(
        type="list",
        elements="dict",
        options=dict(
            id=dict(type="str", required=True),
            members=dict(type="list", elements="dict", required=True, options=MEMBER),
        ),
    ),
    created=dict(type="dict", default={}),
    mode=dict(type="str", default="commit", choices=["commit", "export"]),
    create_bind_paths=dict(type="bool", default=True),
    allow_privileged=dict(type="bool", default=False),
    stop_timeout=dict(type="int", default=10),
    health_timeout=dict(type="int", default=120),
    health_stable_seconds=dict(type="int", default=10),
    health_tcp_port=dict(type="int", default=0),
    health_url=dict(type="str", default=""),
    keep_bundle=dict(type="bool", default=False),
    trust=dict(type="dict", default={}),
    handoff=dict(
        type="dict",
        options=dict(
            timeout=dict(type="int", required=True),
            volumes=dict(type="dict", default={}),
            key=dict(type="str", default="", no_log=False),
        ),
    ),
)


def restore_handed_off(module, call, args):
    """The early restore: wait for each group's handoff from its capture, then restore those handed off."""
    options = args["handoff"]
    by_id = {group["id"]: group for group in args["groups"]}

    def digest_early(group_id, names, changed):
        # the capture says these volumes' last passes are done: their digests start now, beside the image's
        # stream; the restore waits for them (and checks them against the handoff's) before it creates anything.
        # A listed last pass says what it changed: only that is read again.
        cache_dir = _handoff.group_dir(by_id[group_id]["members"])
        prepared = options["volumes"].get(group_id) or {}
        for name in names:
            digest = dict(name=name, cache_dir=cache_dir, background="start")
            if name in changed:
                digest["changed"] = changed[name]
            if name.startswith("bind:"):
                if not (prepared.get(name) or {}).get("mountpoint"):
                    continue
                digest["path"] = prepared[name]["mountpoint"]
            call(VOLUME_DIGEST, digest)  # one that does not start is started again after the handoff

    # the digests started once the capture's last passes are done find their caches and trees read already
    waiting = [
        (_handoff.group_dir(group["members"]), name)
        for group in args["groups"]
        for name in sorted(options["volumes"].get(group["id"]) or {})
    ]
    _precopy.preload_caches([_precopy.cache_path(where, name.replace("/", "_")) for where, name in waiting])
    _precopy.preload_trees([_precopy.tree_path(where, name) for where, name in waiting])
    waiter = _handoff.Waiter(
        args["groups"],
        options["volumes"],
        options["timeout"],
        key=options["key"],
        # the run key's file: the transfer role authorises it for this (root) login
        authorized_keys=os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, ".ssh", "authorized_keys"),
        on_ready=digest_early,
    )
    try:
        handed, let_go = waiter.wait()
    except (_handoff.HandoffRefused, TimeoutError) as exc:
        module.fail(
            f"the restore waiting for the capture's handoff stopped: {exc}. Nothing was restored", phase="handoff"
        )
    groups = [_handoff.merge(group, handed[group["id"]]) for group in args["groups"] if group["id"] in handed]
    done = restore_groups(call, groups, args) if groups else {}
    return dict(groups=done, let_go=let_go, changed=bool(groups))


def main():
    module = FerryModule(
        SPEC,
        supports_check_mode=True,  # state=checked only; the other states change nothing in check mode
        mutually_exclusive=[("members", "groups")],
        required_if=[("state", state, ("members", "groups"), True) for state in ("present", "absent")],
    )
    args = module.params
    call = caller(module)  # every step in this process: one module start for the whole restore
    if args["state"] == "checked":
        # each check as docker_restore_preflight gives it, its findings in the result instead of a failure
        checks = [call(PREFLIGHT, dict(check, fail_on_problems=False)) for check in args["checks"]]
        module.exit(changed=False, checks=checks)
    if module.check_mode:
        module.exit(changed=True, msg="check mode: nothing was restored or removed")
    if args["state"] == "prepared":
        try:
            groups = _precopy.prepare(module.client, args["precopy"], _missing)
        except (DockerException, RequestException, OSError) as exc:
            module.fail(f"preparing the volumes of the pre-copy failed: {exc}")
        module.exit(changed=True, groups=groups)
    if args["state"] == "hashed":
        # the target's digests of the pre-copied trees, while the sources still serve: once they are stopped
        # only what the last delta changed is read again
        hashed = {}
        for group in args["precopy"]:
            for volume in group["volumes"]:
                args = dict(name=volume["name"], cache_dir=group["cache_dir"], settle=True)
                if volume.get("path"):
                    args["path"] = volume["path"]
                found = call(VOLUME_DIGEST, args)
                hashed[volume["name"]] = {k: found[k] for k in ("failed", "msg", "entries", "read_bytes") if k in found}
        module.exit(changed=False, volumes=hashed)
    if args["groups"] is not None:
        if args["state"] == "present" and args["handoff"]:
            # started before the capture: everything this process needs is imported while the sources still serve
            module.exit(**restore_handed_off(module, call, args))
        if args["state"] == "present":
            module.exit(groups=restore_groups(call, args["groups"], args), changed=True)
        done = {}
        for group in args["groups"]:
            left = TargetRun(call, group["members"], args).undo((args["created"] or {}).get(group["id"]) or {})
            done[group["id"]] = {"left": left, "target_cleanup": "done" if not left else "failed: " + "; ".join(left)}
        module.exit(groups=done, changed=True)
    run = TargetRun(call, args["members"], args)
    if args["state"] == "absent":
        left = run.undo(args["created"])
        module.exit(changed=True, left=left, target_cleanup="done" if not left else "failed: " + "; ".join(left))
    try:
        result = run.restore()
    except StepFailed as exc:
        left = run.undo()
        module.fail(
            str(exc),
            changed=True,
            phase=exc.phase,
            member=exc.member,
            log_tail=exc.result.get("log_tail", []),
            phases=run.phases.close(),
            created=run.created,
            target_cleanup="done" if not left else "failed: " + "; ".join(left),
        )
    module.exit(changed=True, **result)


if __name__ == "__main__":
    main()
