# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_volume_backup): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_migrate_source`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

import posixpath

from ansible_collections.ferry.docker.plugins.module_utils._bundle import artifact_entry
from ansible_collections.ferry.docker.plugins.module_utils._capture import (
    HELPER_LABEL,
    HELPER_MOUNT_ROOT,
    Capture,
    argument_spec,
    attempt,
    bind_file_name,
    volume_file_name,
)
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import volume_definition
from ansible_collections.ferry.docker.plugins.module_utils._stream import CHUNK_SIZE, suffix
from ansible_collections.ferry.docker.plugins.module_utils._volmeta import (
    METADATA_API,
    METADATA_VERSION,
    Notes,
    TreeTar,
    local_reason,
    volume_local_reason,
)


def plan(cap, inspect, volume_names, include_binds, exclude=()):
    """The sources to read: dicts with name, file, type, volume/source, anonymous, destination, rw; the
    container's volumes named in ``exclude`` are left out."""
    sfx = suffix(cap.compression)
    sources = []
    seen = set(exclude)
    for mount in (inspect or {}).get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Name"):
            name = mount["Name"]
            source = dict(name=name, file=volume_file_name(name, sfx), type="volume", volume=name)
        elif mount.get("Type") == "bind" and include_binds:
            path = mount.get("Source")
            name = "bind:" + path
            source = dict(name=name, file=bind_file_name(path, sfx), type="bind", source=path)
        else:
            continue
        if name in seen:
            continue
        seen.add(name)
        source.update(destination=mount.get("Destination"), rw=bool(mount.get("RW")))
        sources.append(source)
    for name in volume_names:
        if name not in seen:
            seen.add(name)
            sources.append(
                dict(name=name, file=volume_file_name(name, sfx), type="volume", volume=name, destination=None, rw=None)
            )
    # Inspect lists mounts in no stable order; a fixed order keeps the manifest identical between runs.
    return sorted(sources, key=lambda s: (s["type"] != "volume", s["name"]))


def helper_image(cap, inspect):
    if inspect:
        return inspect["Image"]
    with cap.errors("listing local images for the helper container"):
        images = [i for i in cap.client.images() if i.get("Id")]
    if not images:
        cap.fail(
            "no image on this Docker host to create the helper container from; load any small image "
            "(for example busybox) on it, ferry.docker never pulls"
        )
    return min(images, key=lambda i: i.get("Size") or 0)["Id"]


def quiesce(cap, inspect, consistency):
    """Pause or stop the container as asked; return the undo function (or None)."""
    state = inspect["State"]
    client = cap.client
    cid = inspect["Id"]
    if consistency == "running" or not state.get("Running") or state.get("Paused"):
        return None  # nothing to do: stopped or already paused containers are quiet
    if consistency == "pause":
        with cap.errors("pausing container %s" % inspect["Name"].lstrip("/")):
            client.pause(cid)
        return lambda: client.unpause(cid)
    with cap.errors("stopping container %s" % inspect["Name"].lstrip("/")):
        client.stop(cid)
    return lambda: client.start(cid)


def locate(cap, sources, inspects):
    """Set ``local`` (the directory to read on this host, or None) and ``reason`` (why not) of each source."""
    with cap.errors("reading the engine's info"):
        info = cap.client.info()
    base_url = getattr(cap.client, "base_url", None)
    for source in sources:
        if source["type"] == "volume":
            volume = inspects[source["name"]]
            path = volume.get("Mountpoint")
            reason = volume_local_reason(base_url, info, volume)
        else:
            path = source["source"]
            reason = local_reason(base_url, info.get("Name"), info.get("SecurityOptions"), "bind", path=path)
        source["local"], source["reason"] = (None, reason) if reason else (path, None)


def read_directory(cap, source):
    """Stream one source from its directory on this host; return (written, notes)."""
    tree = TreeTar(source["local"])
    with cap.errors(f"reading {source['name']} from {source['local']} into {cap.dest}"):
        written = cap.write(tree.chunks(), source["file"])
        written["apparent_size"] = tree.apparent_bytes  # the bound a restore checks (sparse files)
        return written, tree.notes
    return None, None


def api_notes(source):
    notes = Notes()
    reason = f"read through Docker's archive API because {source['reason']}"
    notes.add("xattr user.* and POSIX ACLs", ".", reason)
    notes.add("sparse", ".", reason + "; holes are stored as zeros")
    return notes


def backup(cap, image, sources):
    """Stream each source into the bundle; return ``[(written, notes)]`` in the order of ``sources``.

    Sources without a directory on this host are read through a helper container, removed afterwards.
    """
    client = cap.client
    written = {}
    for source in sources:
        if source["local"]:
            written[source["name"]] = read_directory(cap, source)
    remote = [s for s in sources if not s["local"]]
    binds = []
    for index, source in enumerate(remote):
        source["mount"] = posixpath.join(HELPER_MOUNT_ROOT, str(index))
        origin = source["volume"] if source["type"] == "volume" else source["source"]
        binds.append(f"{origin}:{source['mount']}:ro")
    helper = None
    try:
        if remote:
            with cap.errors("creating the helper container to read the volumes"):
                helper = client.create_container(
                    image=image,
                    command=["true"],
                    entrypoint=[],
                    network_disabled=True,
                    labels={HELPER_LABEL: "1"},
                    host_config=client.create_host_config(binds=binds, network_mode="none"),
                )["Id"]
        for source in remote:
            with cap.errors(f"reading {source['name']} into {cap.dest}"):
                stream, _stat = client.get_archive(helper, source["mount"] + "/.", chunk_size=CHUNK_SIZE)
                written[source["name"]] = (cap.write(stream, source["file"]), api_notes(source))
    except BaseException:
        if helper is not None:
            attempt(client.remove_container, helper, v=True, force=True)  # the first failure is the one to report
        raise
    if helper is not None:
        with cap.errors(f"removing the helper container {helper[:12]} (remove it by hand)"):
            client.remove_container(helper, v=True, force=True)
    return [written[source["name"]] for source in sources]


SPEC = dict(
    argument_spec(),
    container=dict(type="str"),
    volumes=dict(type="list", elements="str", default=[]),
    include_binds=dict(type="bool", default=False),
    consistency=dict(type="str", default="running", choices=["running", "pause", "stop"]),
    exclude_volumes=dict(type="list", elements="str", default=[]),
)
KWARGS = dict(supports_check_mode=True, required_one_of=[("container", "volumes")])


def run(fm):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
    cap = Capture(fm)
    params = fm.params
    if params["consistency"] != "running" and not params["container"]:
        cap.fail(f"consistency={params['consistency']} needs the container option (the container to quiesce)")
    inspect = cap.inspect_container(params["container"]) if params["container"] else None
    inspects = {name: cap.inspect_volume(name) for name in params["volumes"]}
    sources = plan(cap, inspect, params["volumes"], params["include_binds"], params["exclude_volumes"])
    if not sources:
        cap.fail(
            "container %s has no volumes%s; nothing to back up"
            % (params["container"], "" if params["include_binds"] else " (set include_binds to back up bind mounts)")
        )
    paths = [f"{cap.dest}/{s['file']}" for s in sources]
    if fm.check_mode:
        fm.exit(**cap.planned([s["file"] for s in sources]))

    for source in sources:
        if source["type"] == "volume" and source["name"] not in inspects:
            inspects[source["name"]] = cap.inspect_volume(source["name"])
    run_config = cap.run_config(inspect) if inspect else None
    locate(cap, sources, inspects)
    image = helper_image(cap, inspect) if any(not s["local"] for s in sources) else None
    cap.ensure_dest(inspect)
    undo = quiesce(cap, inspect, params["consistency"]) if inspect else None
    try:
        written = backup(cap, image, sources)
    except BaseException:
        if undo is not None:
            attempt(undo)  # the first failure is the one to report
        raise
    if undo is not None:
        with cap.errors(f"restoring the state of container {params['container']} (check it by hand)"):
            undo()

    anonymous = {name for name, d in ((run_config or {}).get("volume_definitions") or {}).items() if d.get("Anonymous")}
    entries, volumes, results, not_kept = [], {}, [], []
    for source, (w, notes) in zip(sources, written):
        for message in notes.messages(f"{source['type']} {source['name']}"):
            fm.module.warn(message)
        not_kept.extend(dict(item, name=source["name"]) for item in notes.as_list())
        extra = dict(
            type=source["type"],
            destination=source["destination"],
            rw=source["rw"],
            root=".",
            apparent_size=w.get("apparent_size", w["raw_size"]),
            metadata=METADATA_VERSION if source["local"] else METADATA_API,
        )
        if source["type"] == "volume":
            extra.update(volume=source["volume"], anonymous=source["name"] in anonymous)
            definition = volume_definition(inspects[source["name"]])
            definition["Anonymous"] = extra["anonymous"]
            volumes[source["name"]] = definition
        else:
            extra.update(source=source["source"], anonymous=False)
        entries.append(artifact_entry("volume", source["name"], w, **extra))
        results.append(
            dict(
                name=source["name"],
                path=w["path"],
                size=w["size"],
                sha256=w["sha256"],
                bytes_read=w["raw_size"],
                changed=not w["unchanged"],
                read_from="directory" if source["local"] else "engine",
            )
        )
    manifest_changed = cap.record(entries, inspect, run_config=run_config, volumes=volumes)
    fm.exit(
        changed=manifest_changed or any(r["changed"] for r in results),
        artifacts=entries,
        results=results,
        metadata_not_kept=not_kept,
        paths=paths,
        bytes_read=sum(w["raw_size"] for w, _notes in written),
        bytes_written=sum(w["size"] for w, _notes in written),
        duration=cap.duration(),
        manifest=cap.manifest_path,
    )
