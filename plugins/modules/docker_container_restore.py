#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_container_restore
short_description: Recreate a container from the run config recorded in a ferry.docker bundle
version_added: 0.1.0
description:
  - Creates the container from the run config of a bundle (or from O(run_config)), with the same
    settings as the captured one; O(name), O(image), O(port_map), O(bind_map) and O(network_map)
    change what has to differ on the new host.
  - Missing user-defined networks are created from their recorded definitions, missing named
    volumes from their recorded driver, options and labels, empty. Restore named volumes with
    M(ferry.docker.docker_volume_restore) B(before) this module; afterwards the engine may already have
    copied image content into an empty volume, or the started container may have written to it, and
    the volume restore then refuses the non-empty volume unless C(force=true).
  - Anonymous volumes are declared again by the create request, so the engine makes new ones. With
    O(restore_volumes=true) each is filled from the bundle's archive of the original anonymous volume
    before the container first starts (the archive is extracted over whatever the image put there).
  - Extra networks are connected after create and before start.
  - The create request is stamped with the label C(ferry.docker.config-digest). A container of that
    name with the same digest is left alone (only started if O(state=started) and it is stopped); a
    container with another digest, created by an earlier restore (it carries the label), is replaced.
    A container of that name that no restore created (no label) is never replaced unless
    O(replace=true). A replaced container is stopped and renamed aside, the new container is created
    (and started); only then is the old one removed, its volumes kept. If anything fails, the new
    container is removed, so are the networks and volumes this run created, and the old one gets its
    name back and is started again if it was running.
  - Every name the create request uses (container, image, networks, volumes, drivers) is checked
    against Docker's grammar first.
  - Privilege-bearing settings are applied only with O(allow_privileged=true) or when the run config
    comes from a bundle signed by a key of O(trusted_signers), otherwise the task
    fails naming them before anything is changed (also in check mode) - privileged mode; the host's
    network, pid, ipc, uts or user namespace; C(cap_add) beyond Docker's default set; devices, device
    requests and device cgroup rules; binds of C(/), of system directories (C(/etc), C(/proc),
    C(/sys), C(/dev), C(/usr), C(/var/lib/docker), C(/run)...) or of a Docker socket; security
    options that unconfine (C(seccomp=unconfined), C(apparmor=unconfined), C(label=disable),
    C(systempaths=unconfined)); and volumes whose C(local) driver options mount a host path or
    device. M(ferry.docker.docker_restore_preflight) lists them.
  - Everything is checked before the engine is touched; the manifest, the checksums and the tar
    safety of the archives to fill, the image (never pulled), and the bind mount sources.
attributes:
  check_mode:
    support: full
    description: Reports what would be created, recreated or started.
  diff_mode:
    support: full
    description: Shows the config digest and running state before and after.
  idempotent:
    support: full
    description: A second run with the same inputs reports no change.
options:
  bundle:
    description:
      - Bundle directory written by the capture modules. Its C(run_config) is used unless
        O(run_config) is given; its volume archives fill anonymous volumes.
      - One of O(bundle) and O(run_config) is required.
    type: path
  run_config:
    description:
      - A run config as returned by M(ferry.docker.docker_run_config_info) (keys C(name), C(image),
        C(config), C(host_config), C(networks), C(network_definitions), C(volume_definitions), C(mounts)).
      - It holds the container's environment values, which Ansible echoes back in the task's
        C(invocation) like any module argument. If they are secret, set C(no_log) on the task
        or use O(bundle), whose run config is read from disk and never returned. (The option is not
        marked C(no_log) because Ansible would then mask every string of it, container and network
        names included, in all messages.)
    type: dict
  name:
    description: Name of the new container; by default the recorded name.
    type: str
  image:
    description:
      - Image to create the container from instead of the recorded one, for example the image
        restored by M(ferry.docker.docker_load) or M(ferry.docker.docker_import).
      - The image must already be on the engine; it is never pulled.
    type: str
  port_map:
    description:
      - Publish ports on other host ports. Keys are container port specs such as V(80/tcp), values
        the new host side such as V(18080) or V(127.0.0.1:18080); C(null) stops publishing that port.
    type: dict
  bind_map:
    description:
      - Replace host path prefixes of bind mount sources; keys are old prefixes, values new prefixes.
    type: dict
  network_map:
    description:
      - Attach to other networks; keys are recorded network names, values new names. A missing new
        network is created from the recorded network's definition.
    type: dict
  references:
    description:
      - The container references of a dependency group moved together; keys are references on the source
        (a container id or name, as the run config records it in C(container:) modes, C(VolumesFrom) or
        C(Links)), values the names of those containers here.
      - Next to a C(container:) network mode the settings the engine refuses there (hostname, domain name,
        MAC address, published ports, DNS, links) are always left out.
    type: dict
  state:
    description:
      - V(started) creates and starts the container; V(created) only creates it.
      - V(created) does not stop a container that is already running.
    type: str
    choices: [started, created]
    default: started
  restore_volumes:
    description:
      - Fill the new anonymous volumes from the bundle before the first start.
      - Named volumes are not filled here; use M(ferry.docker.docker_volume_restore).
    type: bool
    default: true
  create_bind_paths:
    description:
      - Create missing bind mount source directories (mode 0755) on the engine host.
      - Without it a missing bind source fails the task, naming the path. The check runs on the
        host the module runs on, which must be the Docker host.
    type: bool
    default: false
  allow_devices:
    description: Accept device and FIFO nodes in the anonymous volume archives.
    type: bool
    default: false
  replace:
    description:
      - Replace an existing container of the same name that no restore created (it has no
        C(ferry.docker.config-digest) label), for example the original container on the host it was
        backed up from.
      - Without it such a container fails the task before anything is changed.
    type: bool
    default: false
  allow_privileged:
    description:
      - Apply the privilege-bearing settings of the run config (see the description), including named
        volumes whose recorded C(local) driver options mount a host path or device (C(type=none),
        C(o=bind), C(device=/...)).
      - A bundle is input, not truth; set this only for a bundle from a source you trust. The migrate
        role sets it, a migration copies a container the operator chose.
      - A bundle signed by a key of O(trusted_signers) allows them too (its run config, not one given
        as an option).
    type: bool
    default: false
  stop_timeout:
    description: Seconds to wait for a container that has to be recreated to stop before it is killed.
    type: int
    default: 10
extends_documentation_fragment:
  - ferry.docker.docker
  - ferry.docker.bundle_trust
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
  - C(zstandard) Python library for zstd-compressed bundles
seealso:
  - module: ferry.docker.docker_run_config_info
  - module: ferry.docker.docker_volume_restore
  - module: ferry.docker.docker_load
  - module: ferry.docker.docker_import
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Recreate the container of a bundle and start it
  ferry.docker.docker_container_restore:
    bundle: /srv/backups/web

- name: Recreate it from its exported filesystem, on other ports and paths
  ferry.docker.docker_container_restore:
    bundle: /srv/backups/web
    name: web-copy
    image: restored/web:latest
    port_map:
      "80/tcp": 18080
    bind_map:
      /srv/www: /data/www
    create_bind_paths: true
    state: created
"""

RETURN = r"""
not_carried_over:
  description:
    - The settings of the container that this engine accepts but does not apply, because its API version is
      older than the one that brought them (for example C(Healthcheck.StartInterval) below API 1.44) or because
      it no longer applies them (C(HostConfig.KernelMemory) from API 1.42, swappiness on cgroup v2). One
      sentence each, naming the setting; each is also a warning. Settings whose loss would change what the
      container may see or do (a volume subpath below API 1.45) fail the task before anything is changed.
  returned: always
  type: list
  elements: str
  sample: ["Healthcheck.StartInterval (2s): Docker 20.10.24 (API 1.41) on host host1 ignores it (...)"]
signer:
  description:
    - The principal of O(trusted_signers) whose signature of the bundle was verified; null without
      O(trusted_signers) or O(bundle).
  returned: always
  type: str
  sample: backup@example.org
container:
  description: Id of the container.
  returned: success, not in check mode
  type: str
name:
  description: Name of the container.
  returned: always
  type: str
operation:
  description: C(create), C(recreate), C(start) or C(none).
  returned: always
  type: str
digest:
  description: Config digest of the create request (label C(ferry.docker.config-digest)).
  returned: always
  type: str
networks_created:
  description: Networks created for the container.
  returned: always
  type: list
  elements: str
volumes_created:
  description: Named volumes created (empty) for the container.
  returned: always
  type: list
  elements: str
bind_paths_created:
  description: Bind source directories created.
  returned: always
  type: list
  elements: str
volumes:
  description: Anonymous volumes filled from the bundle.
  returned: always
  type: list
  elements: dict
  contains:
    destination:
      description: Mount point in the container.
      type: str
    name:
      description: Name of the new anonymous volume (empty in check mode).
      type: str
    artifact:
      description: Volume artifact used.
      type: str
    path:
      description: Archive file.
      type: str
    size:
      description: Size of the archive file.
      type: int
    sha256:
      description: sha256 of the archive file.
      type: str
    bytes_read:
      description: Bytes of the archive read.
      type: int
    bytes_written:
      description: Decompressed bytes fed to Docker.
      type: int
path:
  description: The manifest file of the bundle, if one was used.
  returned: always
  type: str
size:
  description: Size of the manifest file.
  returned: always
  type: int
sha256:
  description: sha256 of the manifest file, if a bundle was used.
  returned: always
  type: str
bytes_read:
  description: Bytes of archive files read.
  returned: always
  type: int
bytes_written:
  description: Decompressed bytes fed to Docker.
  returned: always
  type: int
duration:
  description: Seconds the task took.
  returned: always
  type: float
"""

import os

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._bundle import MANIFEST_NAME, verify_artifacts
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException, FerryModule
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
                    client.start(container_id)
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
                self.client.start(container_id)
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


def main():
    module = FerryModule(
        dict(
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
        ),
        supports_check_mode=True,
        required_one_of=[["bundle", "run_config"]],
    )
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


if __name__ == "__main__":
    main()
