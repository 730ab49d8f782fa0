# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_container_restore): ``SPEC``, ``KWARGS`` and ``run(module)``.

The module file runs it in its own process; ``docker_bundle_restore`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

import os

from ansible_collections.ferry.docker.plugins.module_utils import _neighbour, _trust
from ansible_collections.ferry.docker.plugins.module_utils._bundle import MANIFEST_NAME, verify_artifacts
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException
from ansible_collections.ferry.docker.plugins.module_utils._names import (
    network_definition_problems,
    volume_definition_problems,
    volume_option_problems,
)
from ansible_collections.ferry.docker.plugins.module_utils._planner import plan_container
from ansible_collections.ferry.docker.plugins.module_utils._restore import (
    RequestException,
    RestoreError,
    Timer,
    VolumeHelper,
    base_result,
    fill_volume,
    inspect_or_none,
    refuse_privileged,
    scan_artifact,
)
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import (
    DIGEST_LABEL,
    bind_sources,
    connect_kwargs,
    named_volumes,
    needed_networks,
    network_create_kwargs,
    volume_create_kwargs,
)
from ansible_collections.ferry.docker.plugins.module_utils._stream import FerryError, sha256_file


def _volume_artifact(manifest, volume_name):
    for artifact in manifest.get("artifacts", []):
        if artifact.get("kind") == "volume" and volume_name in (artifact.get("volume"), artifact.get("name")):
            return artifact
    return None


class Restore:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.client = None
        self.manifest = None
        self.trusted = False
        self.result = dict(
            changed=False,
            name=None,
            operation="none",
            digest=None,
            networks_created=[],
            volumes_created=[],
            bind_paths_created=[],
            volumes=[],
            path="",
            size=0,
            sha256="",
            bytes_read=0,
            bytes_written=0,
            signer=None,
            not_carried_over=[],
        )

    # -------------------------------------------------------------------------------- decide
    def load(self):
        p = self.p
        bundle = p["bundle"]
        plan = self.plan = plan_container(p)
        self.manifest, self.trusted, self.run_config = plan.manifest, plan.trusted, plan.run_config
        if bundle:
            self.result["signer"] = plan.signer
            path = os.path.join(bundle, MANIFEST_NAME)
            self.result["sha256"], self.result["size"] = sha256_file(path)
            self.result["path"] = path
        self.name, self.body, self.extra_networks = plan.name, plan.body, plan.extra_networks
        if plan.name_problems:
            raise RestoreError(
                f"the run config of container {self.name} names objects Docker would not accept: "
                f"{'; '.join(plan.name_problems[:5])}. Nothing was changed; fix the run config or the name, image "
                "and map options"
            )
        self.privileged = plan.privileged
        refuse_privileged(f"the run config of container {self.name}", self.privileged, plan.privileged_allowed)
        self.digest = plan.digest
        self.result.update(name=self.name, digest=self.digest)

    def check_engine(self):
        """Refuse what this engine would not carry safely; list what it ignores (see _compat)."""
        info = self.client.info()
        host = f"host {info['Name']}" if info.get("Name") else "this host"
        gaps = self.plan.engine_gaps(self.client, info, host)
        if gaps.refused:
            raise RestoreError(
                f"container {self.name} cannot be created as captured: {'; '.join(gaps.refused)}. Nothing was changed"
            )
        self.result["not_carried_over"] = gaps.ignored
        for text in gaps.ignored:
            self.module.module.warn(f"container {self.name}: {text}")

    def anonymous_fills(self):
        """(destination, artifact) of every anonymous volume to fill, checked and scanned."""
        if not (self.p["restore_volumes"] and self.manifest):
            return []
        fills = []
        for mount in self.run_config.get("mounts") or []:
            if mount.get("Type") != "volume" or not mount.get("Anonymous"):
                continue
            artifact = _volume_artifact(self.manifest, mount.get("Name"))
            if artifact is not None:
                fills.append((mount["Destination"], artifact))
        if fills:
            verify_artifacts(self.p["bundle"], self.manifest, kinds=["volume"], names=[a["name"] for _d, a in fills])
            for _destination, artifact in fills:
                scan_artifact(self.p["bundle"], artifact, allow_devices=self.p["allow_devices"])
        return fills

    def plan_prerequisites(self):
        client = self.client
        image = self.body["Image"]
        found = inspect_or_none(client.inspect_image, image)
        if found is None:
            raise RestoreError(
                f"image {image} of container {self.name} is not on the engine and is never pulled; restore it "
                "first with docker_load or docker_import (and set image), then run this again"
            )
        self.image_id = found["Id"]
        definitions = dict((self.manifest or {}).get("networks") or {})
        definitions.update(self.run_config.get("network_definitions") or {})
        reverse_map = {new: old for old, new in (self.p["network_map"] or {}).items()}
        self.networks_to_create = []
        for net in needed_networks(self.body, self.extra_networks):
            if inspect_or_none(client.inspect_network, net) is not None:
                continue
            definition = definitions.get(reverse_map.get(net, net)) or definitions.get(net)
            if definition is None:
                raise RestoreError(
                    f"network {net} of container {self.name} does not exist and the run config has no definition "
                    "for it; create it first or map it to an existing network with network_map"
                )
            problems = network_definition_problems(net, definition)
            if problems:
                raise RestoreError(
                    f"network {net} of container {self.name}: {'; '.join(problems)}; nothing was changed"
                )
            self.networks_to_create.append((net, definition))
        volume_definitions = dict((self.manifest or {}).get("volumes") or {})
        for vol, definition in (self.run_config.get("volume_definitions") or {}).items():
            volume_definitions.setdefault(vol, definition)
        self.volumes_to_create = []
        for vol in named_volumes(self.body):
            if inspect_or_none(client.inspect_volume, vol) is None:
                definition = dict(volume_definitions.get(vol) or {"Name": vol})
                problems = volume_definition_problems(vol, definition)
                if problems:
                    raise RestoreError(
                        f"volume {vol} of container {self.name}: {'; '.join(problems)}; nothing was changed"
                    )
                refuse_privileged(
                    f"volume {vol} of container {self.name}",
                    volume_option_problems(definition),
                    self.p["allow_privileged"] or self.trusted,
                )
                self.volumes_to_create.append((vol, definition))

        self.bind_paths_to_create = []
        for path in bind_sources(self.body):
            if os.path.exists(path):
                continue
            if not self.p["create_bind_paths"]:
                raise RestoreError(
                    f"bind mount source {path} of container {self.name} does not exist on this host; create it, "
                    "move it with bind_map, or set create_bind_paths=true"
                )
            self.bind_paths_to_create.append(path)

    # -------------------------------------------------------------------------------- act
    def replace(self, existing, fills, start):
        """Create (and start) the container. An existing one is stopped and renamed aside first; it is
        removed only once the new one runs, and renamed back (and restarted) if anything fails."""
        client = self.client
        old_id = old_running = None
        if existing is not None:
            old_id, old_running = existing["Id"], bool((existing.get("State") or {}).get("Running"))
            client.stop(old_id, timeout=self.p["stop_timeout"])
            client.rename(old_id, f"{self.name}-ferry-replaced-{old_id[:12]}")
        try:
            try:
                container_id = self.create(fills)
            except BaseException:
                self.undo_created()
                raise
            if start:
                try:
                    _neighbour.start(client, container_id)
                except BaseException:
                    client.remove_container(container_id, force=True, v=True)
                    self.result.pop("container", None)
                    self.undo_created()
                    raise
        except BaseException:
            if old_id is not None:
                client.rename(old_id, self.name)
                if old_running:
                    client.start(old_id)
            raise
        if old_id is not None:
            client.remove_container(old_id, v=False)
        return container_id

    def undo_created(self):
        """Remove the networks and volumes this run created (after a failure); keep going on errors."""
        for vol in reversed(self.result["volumes_created"]):
            try:
                self.client.remove_volume(vol)
            except (DockerException, RequestException):
                continue
        for net in reversed(self.result["networks_created"]):
            try:
                self.client.remove_network(net)
            except (DockerException, RequestException):
                continue
        for path in reversed(self.result["bind_paths_created"]):
            try:
                os.rmdir(path)
            except OSError:
                continue

    def create(self, fills):
        client = self.client
        for net, definition in self.networks_to_create:
            client.create_network(**network_create_kwargs(definition, net))
            self.result["networks_created"].append(net)
        for vol, definition in self.volumes_to_create:
            client.create_volume(**volume_create_kwargs(definition, vol))
            self.result["volumes_created"].append(vol)
        for path in self.bind_paths_to_create:
            os.makedirs(path, mode=0o755)
            self.result["bind_paths_created"].append(path)
        created = client.create_container_from_config(self.body, name=self.name)
        container_id = created["Id"]
        self.result["container"] = container_id
        try:
            for net, endpoint in self.extra_networks:
                client.connect_container_to_network(container_id, net, **connect_kwargs(endpoint))
            mounts = {m.get("Destination"): m for m in client.inspect_container(container_id).get("Mounts") or []}
            for entry, artifact in fills:
                mount = mounts.get(entry["destination"])
                if mount is None or mount.get("Type") != "volume":
                    raise RestoreError(
                        f"the new container {self.name} has no volume at {entry['destination']} to fill from "
                        f"{entry['path']}; check the image and the run config"
                    )
                entry["name"] = mount["Name"]
                with VolumeHelper(client, self.image_id, mount["Name"]) as helper:
                    entry["bytes_read"], entry["bytes_written"] = fill_volume(
                        helper, self.p["bundle"], artifact, self.p["allow_devices"]
                    )
        except BaseException:
            try:
                client.remove_container(container_id, force=True, v=True)
            except (DockerException, RequestException):
                pass
            self.result.pop("container", None)
            raise
        return container_id

    def run(self):
        timer = Timer()
        self.load()
        fills = self.anonymous_fills()
        self.client = self.module.client
        existing = inspect_or_none(self.client.inspect_container, self.name)
        before = None
        if existing is not None:
            labels = (existing.get("Config") or {}).get("Labels") or {}
            running = bool((existing.get("State") or {}).get("Running"))
            before = {"digest": labels.get(DIGEST_LABEL), "running": running}
        want_running = self.p["state"] == "started"
        if before is not None and before["digest"] is None and not self.p["replace"]:
            raise RestoreError(
                f"a container named {self.name} already exists ({existing['Id'][:12]}) and was not created by a "
                "restore (it has no ferry.docker.config-digest label). Nothing was changed; set replace=true to "
                "replace it, restore under another name with name, or remove it first"
            )
        if before is not None and before["digest"] == self.digest:
            action = "start" if want_running and not before["running"] else "none"
            container_id = existing["Id"]
        else:
            action = "recreate" if existing is not None else "create"
            self.check_engine()
            self.plan_prerequisites()
            container_id = None
        for destination, artifact in fills if action in ("create", "recreate") else []:
            entry = base_result(self.p["bundle"], artifact)
            entry.update(destination=destination, name="", artifact=artifact["name"])
            self.result["volumes"].append(entry)
        self.result.update(operation=action, changed=action != "none")
        if not self.module.check_mode:
            if action in ("create", "recreate"):
                fill_plan = list(zip(self.result["volumes"], (a for _d, a in fills)))
                container_id = self.replace(existing, fill_plan, start=want_running)
            elif action == "start":
                _neighbour.start(self.client, container_id)
            if container_id:
                self.result["container"] = container_id
        elif container_id:
            self.result["container"] = container_id
        for entry in self.result["volumes"]:
            self.result["bytes_read"] += entry["bytes_read"]
            self.result["bytes_written"] += entry["bytes_written"]
        if self.module.module._diff:
            after_running = want_running or bool(before and before["running"] and action == "none")
            self.result["diff"] = dict(
                before=before or {"digest": None, "running": False},
                after={"digest": self.digest, "running": after_running},
            )
        self.result["duration"] = timer.elapsed
        return self.result


SPEC = dict(
    bundle=dict(type="path"),
    run_config=dict(type="dict"),
    name=dict(type="str"),
    image=dict(type="str"),
    port_map=dict(type="dict"),
    bind_map=dict(type="dict"),
    network_map=dict(type="dict"),
    references=dict(type="dict"),
    state=dict(type="str", default="started", choices=["started", "created"]),
    restore_volumes=dict(type="bool", default=True),
    create_bind_paths=dict(type="bool", default=False),
    allow_devices=dict(type="bool", default=False),
    stop_timeout=dict(type="int", default=10),
    replace=dict(type="bool", default=False),
    allow_privileged=dict(type="bool", default=False),
    **_trust.argument_spec(),
)
KWARGS = dict(
    supports_check_mode=True,
    required_one_of=[["bundle", "run_config"]],
)


def run(module):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
    restore = Restore(module)
    try:
        result = restore.run()
    except (FerryError, ValueError) as exc:
        module.fail(str(exc), **restore.result)
    except (DockerException, RequestException) as exc:
        module.fail(
            f"restoring container {restore.result['name']} failed at the Docker engine: {exc}", **restore.result
        )
    except OSError as exc:
        module.fail(f"restoring container {restore.result['name']} failed on this host: {exc}", **restore.result)
    module.exit(**result)
