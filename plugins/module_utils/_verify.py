# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Restore drills: the scratch plan of one bundle and the drill report. Pure functions, no Docker.

``scratch_plan`` turns the manifest of a bundle into what a drill restores, so that the restored
container cannot touch the host's real containers, data or network:

* every object gets a scratch name made of a prefix, the run ID and the container's name
  (container ``ferry-verify-<run>-<name>``, image ``ferry-verify/<name>:<run>``, network
  ``...-net``, volumes ``...-v<N>``), each checked against Docker's grammar;
* no published ports (``PortBindings`` and ``PublishAllPorts`` dropped), no restart policy, no
  ``AutoRemove``, logs in ``json-file`` (a remote log driver would ship the drill's logs to the
  real log service);
* one network, the scratch network, created ``internal`` (Docker lets no traffic out of it); links, static addresses,
  ``container:`` network modes, ``VolumesFrom`` and ``container:`` PID/IPC namespaces dropped;
* every named volume and every bind mount becomes a scratch volume of the ``local`` driver with no
  driver options (recorded options may bind a host directory), filled from the bundle's archive
  when the bundle has one; a bind without an archive gets an empty scratch volume. No host path of
  the bundle is ever mounted;
* the label ``ferry.docker.verify=<run>`` on the container.

What the plan changed is listed, in sentences, under ``changes``. The restore modules still apply
their own checks (``_names``, ``_policy``) to the rewritten run config.

``drill_report`` shapes what the role recorded for each container (step marks, error, clean-up
results) into the JSON report: pass or fail, the reason in a sentence, timings per step.
"""

from __future__ import annotations

import copy
import hashlib
import re

from ansible_collections.ferry.docker.plugins.module_utils._names import image_problem, name_problem

VERIFY_LABEL = "ferry.docker.verify"
DEFAULT_PREFIX = "ferry-verify"
SLUG_MAX = 40
_RUN_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}\Z")
_PREFIX_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z")
_HOST_KEYS_DROPPED = ("PortBindings", "PublishAllPorts", "RestartPolicy", "AutoRemove", "VolumeDriver")
_BIND_KEPT_MODES = ("ro", "rw", "nocopy")
STEPS = ("check", "transfer", "restore", "health", "command", "cleanup")
STEP_FAILURES = {
    "check": "the bundle failed its check",
    "transfer": "the bundle could not be brought to the target",
    "restore": "the bundle did not restore",
    "health": "the restored container did not come up healthy",
    "command": "verify_command failed in the restored container",
    "cleanup": "the drill could not remove what it created",
}


class VerifyError(ValueError):
    """The plan cannot be made; the message says why and what to do."""


def slug(name):
    """``name`` as a lowercase image path component: ``[a-z0-9]+`` runs joined by single ``-``, at most 40."""
    text = re.sub(r"[^a-z0-9]+", "-", str(name or "").lower()).strip("-")
    if len(text) > SLUG_MAX:
        digest = hashlib.sha256(str(name).encode()).hexdigest()[:8]
        text = text[: SLUG_MAX - 9].rstrip("-") + "-" + digest
    return text or "container"


def scratch_names(container, run, prefix=DEFAULT_PREFIX):
    """The scratch names of one container's drill: ``{"base", "container", "image", "network"}``."""
    if not isinstance(run, str) or not _RUN_RE.match(run):
        raise VerifyError(f"the drill's run ID {run!r} must be 1-40 lowercase letters, digits and '-'")
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise VerifyError(f"the scratch prefix {prefix!r} must be lowercase letters and digits joined by '-'")
    part = slug(container)
    base = f"{prefix}-{run}-{part}"
    names = {
        "base": base,
        "container": base,
        "image": f"{prefix}/{part}:{run}",
        "network": f"{base}-net",
    }
    problems = [name_problem("container", base), name_problem("network", names["network"])]
    problems.append(image_problem(names["image"]))
    problems = [p for p in problems if p]
    if problems:
        raise VerifyError(f"cannot name the drill's objects for {container}: {'; '.join(problems)}")
    return names


def _split_bind(bind):
    """``(source, destination, modes)`` of a ``Binds`` entry ``src:dst[:modes]``."""
    parts = str(bind).split(":")
    if len(parts) < 2:
        raise VerifyError(f"the bind {bind!r} of the run config is not source:destination[:options]")
    modes = parts[2].split(",") if len(parts) > 2 and parts[2] else []
    return parts[0], parts[1], modes


class _Volumes:
    """Scratch volumes in the order the run config mounts them; one per recorded volume or bind source."""

    def __init__(self, base):
        self.base = base
        self.by_source = {}
        self.entries = []

    def scratch(self, kind, source, destination):
        key = (kind, source)
        if key not in self.by_source:
            name = f"{self.base}-v{len(self.entries) + 1}"
            problem = name_problem("volume", name)
            if problem:
                raise VerifyError(f"cannot name the scratch volume for {kind} {source}: {problem}")
            self.by_source[key] = name
            self.entries.append(
                {"scratch": name, "kind": kind, "source": source, "destination": destination, "artifact": ""}
            )
        return self.by_source[key]


def _rewrite_binds(host_config, volumes, changes):
    binds = []
    for bind in host_config.get("Binds") or []:
        source, destination, modes = _split_bind(bind)
        kind = "bind" if source.startswith("/") else "volume"
        scratch = volumes.scratch(kind, source, destination)
        kept = [m for m in modes if m in _BIND_KEPT_MODES]
        binds.append(":".join([scratch, destination] + ([",".join(kept)] if kept else [])))
        if kind == "bind":
            changes.append(f"the bind of host path {source} at {destination} is a scratch volume {scratch}")
    if binds:
        host_config["Binds"] = binds


def _rewrite_mounts(host_config, volumes, changes):
    mounts = []
    for mount in host_config.get("Mounts") or []:
        mount = copy.deepcopy(mount)
        kind, source, target = mount.get("Type"), mount.get("Source"), mount.get("Target")
        if kind == "bind":
            scratch = volumes.scratch("bind", source, target)
            mount.pop("BindOptions", None)
            mount.update(Type="volume", Source=scratch)
            changes.append(f"the bind of host path {source} at {target} is a scratch volume {scratch}")
        elif kind == "volume" and source:
            mount["Source"] = volumes.scratch("volume", source, target)
            options = mount.get("VolumeOptions") or {}
            options.pop("DriverConfig", None)
            if options:
                mount["VolumeOptions"] = options
            else:
                mount.pop("VolumeOptions", None)
        mounts.append(mount)
    if mounts:
        host_config["Mounts"] = mounts


def _rewrite_summary(mounts, volumes):
    """The run config's mount summary with the scratch names (anonymous volumes stay as recorded)."""
    summary = []
    for mount in mounts or []:
        mount = copy.deepcopy(mount)
        kind = mount.get("Type")
        if kind == "volume" and not mount.get("Anonymous"):
            scratch = volumes.by_source.get(("volume", mount.get("Name")))
            if scratch:
                mount["Name"] = scratch
                mount["Driver"] = "local"
        elif kind == "bind":
            scratch = volumes.by_source.get(("bind", mount.get("Source")))
            if scratch:
                for key in ("Source", "Propagation"):
                    mount.pop(key, None)
                mount.update(Type="volume", Name=scratch, Driver="local", Anonymous=False)
        summary.append(mount)
    return summary


def _rewrite_network(run_config, host_config, network, label, changes):
    links = host_config.pop("Links", None)
    endpoints = run_config.get("networks") or {}
    static = any((endpoint or {}).get("IPAMConfig") for endpoint in endpoints.values())
    dropped = [what for what, found in (("links", links), ("static addresses", static)) if found]
    mode = host_config.get("NetworkMode") or "default"
    if mode == "none":
        run_config["networks"] = {}
        run_config["network_definitions"] = {}
        if dropped:
            changes.append(f"{' and '.join(dropped)} dropped")
        return
    aliases = []
    for endpoint in endpoints.values():
        for alias in (endpoint or {}).get("Aliases") or []:
            if alias not in aliases:
                aliases.append(alias)
    recorded = sorted(endpoints) or [mode]
    host_config["NetworkMode"] = network
    run_config["networks"] = {network: {"Aliases": aliases} if aliases else {}}
    run_config["network_definitions"] = {
        network: {
            "Name": network,
            "Driver": "bridge",
            "Options": {},
            "IPAM": {"Driver": "default", "Config": [], "Options": {}},
            "Labels": dict(label),
            "Internal": True,
            "Attachable": False,
            "EnableIPv6": False,
            "Scope": "local",
            "Ingress": False,
        }
    }
    changes.append(
        f"attached only to the internal scratch network {network} instead of {', '.join(recorded)}"
        + (f" ({' and '.join(dropped)} dropped)" if dropped else "")
    )


def _host_settings(host_config, changes):
    if host_config.get("PortBindings") or host_config.get("PublishAllPorts"):
        ports = sorted(host_config.get("PortBindings") or {})
        changes.append(
            "no published ports" + (f" (recorded: {', '.join(ports)})" if ports else " (recorded: publish all)")
        )
    restart = (host_config.get("RestartPolicy") or {}).get("Name") or "no"
    if restart not in ("no", ""):
        changes.append(f"no restart policy (recorded: {restart})")
    if host_config.get("VolumesFrom"):
        changes.append(f"no volumes from other containers (recorded: {', '.join(host_config['VolumesFrom'])})")
    host_config.pop("VolumesFrom", None)
    for key in ("PidMode", "IpcMode"):
        if str(host_config.get(key) or "").startswith("container:"):
            changes.append(f"{key} {host_config[key]} dropped (that container is not part of the drill)")
            host_config.pop(key)
    for key in _HOST_KEYS_DROPPED:
        host_config.pop(key, None)
    log = host_config.get("LogConfig") or {}
    if (log.get("Type") or "json-file") != "json-file":
        changes.append(f"logs kept by json-file (recorded log driver: {log.get('Type')})")
    host_config["LogConfig"] = {"Type": "json-file", "Config": {}}


def _artifacts(manifest, volumes):
    """Point each scratch volume at its archive in the bundle; return the volume_map for docker_volume_restore."""
    volume_map = {}
    for artifact in manifest.get("artifacts") or []:
        if artifact.get("kind") != "volume":
            continue
        name = artifact.get("name")
        if artifact.get("type") == "bind" or str(name).startswith("bind:"):
            key = ("bind", artifact.get("source") or str(name)[len("bind:") :])
        else:
            key = ("volume", artifact.get("volume") or name)
        scratch = volumes.by_source.get(key)
        if scratch:
            volume_map[name] = scratch
            for entry in volumes.entries:
                if entry["scratch"] == scratch:
                    entry["artifact"] = name
    return volume_map


def scratch_plan(manifest, run, prefix=DEFAULT_PREFIX):
    """What a drill restores for the bundle of ``manifest``, under scratch names and isolated.

    :returns: ``{"container", "name", "image", "network", "label", "volumes", "volume_names",
        "volume_map", "empty_volumes", "changes", "run_config"}``. ``run_config`` is the rewritten run
        config for ``docker_container_restore`` (it holds the container's environment: never print it);
        ``volume_map`` maps the bundle's volume artifacts to scratch volumes for
        ``docker_volume_restore``; ``volumes`` lists every scratch volume with what it stands for.
    """
    if not isinstance(manifest, dict) or not isinstance(manifest.get("run_config"), dict):
        raise VerifyError(
            "the bundle's manifest holds no run_config, so the container cannot be restored; "
            "back it up again with the backup role (it records the run config)"
        )
    if manifest.get("sealed_env") or any(
        isinstance(a, dict) and a.get("encryption") for a in manifest.get("artifacts") or []
    ):
        raise VerifyError(
            "the bundle is encrypted (its artifacts and environment values are sealed); restore drills of "
            "encrypted bundles are not supported yet: drill an unencrypted bundle, or restore this one with "
            "the restore role and its decryption identities"
        )
    run_config = copy.deepcopy(manifest["run_config"])
    container = run_config.get("name") or (manifest.get("container") or {}).get("name") or ""
    if not container:
        raise VerifyError("the bundle's run config records no container name")
    names = scratch_names(container, run, prefix)
    label = {VERIFY_LABEL: run}
    changes = []

    host_config = dict(run_config.get("host_config") or {})
    volumes = _Volumes(names["base"])
    _host_settings(host_config, changes)
    _rewrite_binds(host_config, volumes, changes)
    _rewrite_mounts(host_config, volumes, changes)
    _rewrite_network(run_config, host_config, names["network"], label, changes)
    run_config["host_config"] = host_config
    run_config["mounts"] = _rewrite_summary(run_config.get("mounts"), volumes)

    definitions = {
        name: copy.deepcopy(definition)
        for name, definition in (run_config.get("volume_definitions") or {}).items()
        if isinstance(definition, dict) and definition.get("Anonymous")
    }
    for entry in volumes.entries:
        definitions[entry["scratch"]] = {
            "Name": entry["scratch"],
            "Driver": "local",
            "DriverOpts": {},
            "Labels": dict(label),
            "Scope": "local",
            "Anonymous": False,
        }
    run_config["volume_definitions"] = definitions

    config = dict(run_config.get("config") or {})
    config["Labels"] = {**(config.get("Labels") or {}), **label}
    run_config["config"] = config
    run_config["name"] = names["container"]
    run_config["image"] = names["image"]

    volume_map = _artifacts(manifest, volumes)
    for entry in volumes.entries:
        if entry["kind"] == "bind" and not entry["artifact"]:
            changes.append(
                f"the bundle has no archive of bind {entry['source']} (backed up without backup_include_binds), "
                f"so {entry['destination']} starts empty"
            )
    return {
        "container": container,
        "name": names["container"],
        "image": names["image"],
        "network": names["network"] if host_config.get("NetworkMode") == names["network"] else "",
        "label": label,
        "volumes": volumes.entries,
        "volume_names": [e["scratch"] for e in volumes.entries],
        "volume_map": volume_map,
        "empty_volumes": [e["scratch"] for e in volumes.entries if not e["artifact"]],
        "changes": changes,
        "run_config": run_config,
    }


# ------------------------------------------------------------------------------------------------
# the report


def _number(value, default=0.0):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def step_timings(marks, finished):
    """Seconds per step from ``marks`` (``[[step, epoch], ...]`` in order) up to ``finished``, and the total."""
    timings = {}
    points = [(str(step), _number(epoch)) for step, epoch in (marks or [])]
    for index, (step, start) in enumerate(points):
        end = points[index + 1][1] if index + 1 < len(points) else _number(finished, start)
        timings[step] = round(timings.get(step, 0.0) + max(end - start, 0.0), 3)
    if points:
        timings["total"] = round(max(_number(finished, points[0][1]) - points[0][1], 0.0), 3)
    return timings


def _failed_step(marks, error):
    if not error:
        return ""
    started = [str(step) for step, _epoch in (marks or []) if str(step) != "cleanup"]
    return error.get("step") or (started[-1] if started else "check")


def _one_line(text, limit=2000):
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cleanup_failures(cleanup):
    """``(kind, name, msg)`` of every removal that failed.

    Each item is ``{"kind", "name", "result"}`` with a registered task result, or a registered loop
    item itself with ``kind`` added (its name in the loop variable ``__verify_volume``); skipped and
    successful removals are left out.
    """
    failures = []
    for item in cleanup or []:
        if not isinstance(item, dict):
            continue
        result = item.get("result", item)
        if not isinstance(result, dict) or not result.get("failed"):
            continue
        name = item.get("name") or item.get("__verify_volume") or ""
        failures.append((item.get("kind", "object"), name, result.get("msg") or "the removal failed"))
    return failures


def drill_entry(raw):
    """One container's drill for the report: status ``pass`` or ``fail``, the reason, timings, scratch names."""
    error = raw.get("error") or {}
    marks = raw.get("marks") or []
    failed_step = _failed_step(marks, error)
    leftovers = [f"{kind} {name}: {_one_line(msg, 300)}" for kind, name, msg in cleanup_failures(raw.get("cleanup"))]
    if error:
        what = STEP_FAILURES.get(failed_step, f"the step {failed_step} failed")
        task = f" (task: {error['task']})" if error.get("task") else ""
        reason = f"{what}{task}: {_one_line(error.get('msg') or 'unknown error')}"
    elif leftovers:
        failed_step = "cleanup"
        reason = f"{STEP_FAILURES['cleanup']}: {'; '.join(leftovers)}"
    else:
        reason = ""
    plan = raw.get("plan") or {}
    status = "fail" if reason else "checked" if raw.get("check_mode") else "pass"
    return {
        "container": raw.get("container", ""),
        "target": raw.get("target", ""),
        "bundle_host": raw.get("bundle_host", ""),
        "bundle": raw.get("bundle", ""),
        "status": status,
        "failed_step": failed_step,
        "reason": reason,
        "log_tail": list(raw.get("log_tail") or []),
        "deep": bool(raw.get("deep")),
        "check": raw.get("check") or {},
        "health": raw.get("health") or "",
        "command": raw.get("command") or {},
        "timings": step_timings(marks, raw.get("finished")),
        "scratch": {
            "container": plan.get("name", ""),
            "image": plan.get("image", ""),
            "network": plan.get("network", ""),
            "volumes": plan.get("volumes", []),
        },
        "changes": plan.get("changes", []),
        "leftovers": leftovers,
    }


def drill_report(raws, started=None, finished=None):
    """The whole run's report: ``status`` (``pass`` only if no drill failed), counts and one entry per drill.

    A drill in check mode only checked its bundle: ``checked``, counted as passed.
    """
    entries = [drill_entry(raw) for raw in raws or []]
    failed = [e for e in entries if e["status"] == "fail"]
    report = {
        "status": "fail" if failed or not entries else "pass",
        "passed": len(entries) - len(failed),
        "failed": len(failed),
        "drills": entries,
    }
    if started is not None:
        report["started"] = _number(started)
        if finished is not None:
            report["duration"] = round(max(_number(finished) - _number(started), 0.0), 3)
    return report
