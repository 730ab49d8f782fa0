#!/usr/bin/python
# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_restore_preflight
short_description: Check whether a captured container can be restored on this Docker host, changing nothing
version_added: 0.1.0
description:
  - Answers, on the target Docker host, whether the container described by a run config (from
    M(ferry.docker.docker_run_config_info) or a bundle) can be created here by
    M(ferry.docker.docker_container_restore), and what that would need. Nothing is changed.
  - The create request is computed exactly as M(ferry.docker.docker_container_restore) does, with
    the same overrides O(name), O(image), O(port_map), O(bind_map) and O(network_map), so the
    returned RV(digest) is the one the restored container will carry.
  - "Checks, each reported as a sentence naming the object and what to do: the engine answers;
    its architecture matches O(architecture); its API version can carry every setting (see
    RV(not_carried_over)); no other container has the name (one with the same
    config digest is fine: it is already restored, see RV(container_state)); no other running
    container and no other process holds a published host port; the networks to create do not
    clash with the subnets of existing networks and have a recorded definition; bind mount sources
    exist or can be created; there is enough free space for the bundle under O(dest) and for the
    image and volume data in Docker's root directory."
  - Also reports what a restore would create (networks, named volumes, bind directories), what
    already exists, and which layers of the source image (O(layers)) the engine already has.
  - With O(fail_on_problems=true) (the default) any problem fails the task with one message listing
    them all; with V(false) the task returns RV(ok) and RV(problems), so that a role can report per container.
attributes:
  check_mode:
    support: full
    description: The module only reads; it behaves the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  idempotent:
    support: full
    description: It never changes anything; every run reports no change.
options:
  run_config:
    description:
      - A run config as returned by M(ferry.docker.docker_run_config_info) (keys C(name), C(image),
        C(config), C(host_config), C(networks), C(network_definitions), C(volume_definitions), C(mounts)).
      - The same remark as for M(ferry.docker.docker_container_restore) applies; Ansible echoes the
        option (with any real environment values it holds) in the task's C(invocation), so set
        C(no_log) on the task when they are secret. Env values are part of the config digest, so with a
        redacted run config an already restored container shows as V(differs) in RV(container_state).
      - One of O(run_config) and O(bundle) is required; without O(run_config), the run config of
        O(bundle) is checked.
    type: dict
  sealed_env:
    description:
      - The C(sealed_env) of the bundle's manifest, when O(run_config) is the manifest's run config of an
        encrypted bundle (env values masked as C(NAME=********)); the values are decrypted with
        O(decrypt_identities), so that the config digest, and RV(container_state), are those of the real
        configuration.
    type: dict
  bundle:
    description:
      - A bundle directory on the managed host to read the run config from (with its env values
        decrypted with O(decrypt_identities)), and whose signature O(trusted_signers) checks.
      - With O(trusted_signers), a bundle signed by a trusted signer may apply privilege-bearing
        settings, as with O(allow_privileged=true) - but only when the run config is the bundle's
        (O(run_config) not given). An unsigned or wrongly signed bundle fails the task.
    type: path
  name:
    description: Name of the container to restore; by default the recorded name.
    type: str
  image:
    description:
      - Image to create the container from instead of the recorded one. Only changes the digest; the
        image does not need to be on the engine yet.
    type: str
  port_map:
    description:
      - Publish ports on other host ports, as for M(ferry.docker.docker_container_restore). Keys are
        container port specs such as V(80/tcp), values the new host side such as V(18080) or
        V(127.0.0.1:18080); C(null) stops publishing that port.
    type: dict
  bind_map:
    description: Replace host path prefixes of bind mount sources; keys are old prefixes, values new prefixes.
    type: dict
  network_map:
    description: Attach to other networks; keys are recorded network names, values new names.
    type: dict
  references:
    description:
      - The container references of a dependency group, as M(ferry.docker.docker_container_restore) takes them.
    type: dict
  create_bind_paths:
    description:
      - Whether the restore will create missing bind mount source directories, as
        M(ferry.docker.docker_container_restore) does with its option of the same name.
      - With V(true) a missing source whose nearest existing ancestor is a directory this user may write
        to is fine and listed in RV(bind_paths_to_create); with V(false) every missing source is a problem.
    type: bool
    default: true
  architecture:
    description:
      - Architecture of the source host or image, as C(docker info) or C(uname -m) report it
        (V(x86_64), V(aarch64), V(armv7l) ...). Aliases are normalised (V(x86_64) is V(amd64),
        V(aarch64) is V(arm64), V(armv7l) and V(armhf) are V(arm), V(i686) is V(386)).
      - A different engine architecture is a problem. Not checked when not set.
    type: str
  dest:
    description:
      - Directory the bundle will be received in (it need not exist yet); its nearest existing
        ancestor tells the filesystem whose free space is checked against O(required_bytes).
    type: path
  required_bytes:
    description:
      - Free bytes needed under O(dest) for the bundle. V(0) checks nothing.
    type: int
    default: 0
  docker_required_bytes:
    description:
      - Free bytes needed in Docker's root directory (C(DockerRootDir) of C(docker info)) for the
        image and volume data. V(0) checks nothing.
      - Only checked when the engine is local and its root directory is visible here; when O(dest)
        is on the same filesystem, O(required_bytes) and this add up.
    type: int
    default: 0
  layers:
    description:
      - Layer diff IDs (C(sha256:...)) of the source image, bottom first (C(RootFS.Layers) of its
        inspect). RV(layers_present) tells how many of them the engine already has.
    type: list
    elements: str
  allow_privileged:
    description:
      - Whether the restore will be allowed to apply privilege-bearing settings (RV(privileged)), as
        O(ferry.docker.docker_container_restore#module:allow_privileged).
      - Without it, each such setting is a problem, so that a restore stops here, before anything is
        loaded or created, instead of at the container.
    type: bool
    default: false
  programs:
    description:
      - Programs that must be on PATH on this host for the transfer, such as V(rsync) for a direct
        transfer. Each missing one is a problem that names the Debian package to install.
    type: list
    elements: str
    default: []
  fail_on_problems:
    description:
      - Fail the task when there is any problem, with a message listing them all.
      - With V(false) the task succeeds with RV(ok=false) and the RV(problems), also when the engine
        does not answer.
    type: bool
    default: true
extends_documentation_fragment:
  - ferry.docker.docker
  - ferry.docker.bundle_trust
notes:
  - The module must run on the Docker host (as the ferry.docker roles run it). Bind mount sources,
    host ports held by processes other than containers, and the free space of Docker's root
    directory are checked on the host the module runs on, and only when the engine is reached over
    its local Unix socket; otherwise those checks are skipped with a warning.
  - Existing named volumes are no problem; M(ferry.docker.docker_volume_restore) fills empty ones
    and refuses to overwrite ones holding data unless told to.
requirements:
  - Docker SDK for Python >= 5.0.0 on the managed host (tested with 5.0.3 and 7.1.0)
  - Python >= 3.11 on the managed host (tested with 3.11 and 3.13)
  - Docker Engine >= 20.10, API 1.41 (tested with 20.10.24 and 26.1.5, API 1.45)
seealso:
  - module: ferry.docker.docker_container_restore
  - module: ferry.docker.docker_run_config_info
  - module: ferry.docker.docker_volume_restore
  - module: ferry.docker.docker_load
author:
  - ferry.docker developers (@ferry-docker)
"""

EXAMPLES = r"""
- name: Capture the run config of web on the source host
  ferry.docker.docker_run_config_info:
    container: web
  register: web_config
  delegate_to: old-host

- name: Fail early if web cannot be restored on this host
  ferry.docker.docker_restore_preflight:
    run_config: "{{ web_config.run_config }}"
    architecture: "{{ hostvars['old-host'].ansible_facts.architecture }}"
    dest: /srv/ferry/incoming/web
    required_bytes: 2147483648
    docker_required_bytes: 4294967296

- name: Check a copy on other ports and paths, and report instead of failing
  ferry.docker.docker_restore_preflight:
    run_config: "{{ web_config.run_config }}"
    name: web-copy
    port_map:
      "80/tcp": 18080
    bind_map:
      /srv/www: /data/www
    layers: "{{ web_image.images[0].RootFS.Layers }}"
    fail_on_problems: false
  register: web_preflight

- name: Show what stands in the way
  ansible.builtin.debug:
    msg: "{{ web_preflight.problems }}"
  when: not web_preflight.ok
"""

RETURN = r"""
not_carried_over:
  description:
    - The settings of the container that this engine would accept but not apply, because its API version is
      older than the one that brought them (for example C(Healthcheck.StartInterval) below API 1.44) or because
      it no longer applies them (C(HostConfig.KernelMemory) from API 1.42, swappiness on cgroup v2). One
      sentence each, naming the setting. They are not problems; the restore lists them again. Settings whose
      loss would change what the container may see or do (a volume subpath below API 1.45, a forced recursive
      read-only bind below API 1.44, a real-time CPU budget on cgroup v2) are RV(problems).
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
ok:
  description: Whether there is no problem, so the restore can go ahead.
  returned: always
  type: bool
  sample: false
problems:
  description: One sentence per problem, naming the object and what to do.
  returned: always
  type: list
  elements: str
  sample:
    - host port 8080/tcp is already published by container web2; free it or remap it with port_map (key 80/tcp)
name:
  description: Name the restored container will have.
  returned: always
  type: str
  sample: web
digest:
  description: Config digest of the create request (label C(ferry.docker.config-digest)), as the restore will stamp it.
  returned: always
  type: str
architecture:
  description: Architecture of the engine as C(docker info) reports it; C(null) when the engine does not answer.
  returned: always
  type: str
  sample: x86_64
docker_version:
  description: Version of the engine; C(null) when it does not answer.
  returned: always
  type: str
  sample: 24.0.7
container_state:
  description:
    - C(absent) (no container has the name), C(same) (a container of that name carries the same
      config digest, i.e. it is already restored; not a problem) or C(differs) (a problem).
    - C(null) when the engine does not answer.
  returned: always
  type: str
  sample: absent
container_running:
  description: Whether the existing container of that name runs (C(false) when there is none).
  returned: always
  type: bool
ports:
  description:
    - The fixed host ports the container publishes (ports the engine picks are not listed).
  returned: always
  type: list
  elements: dict
  contains:
    host_ip:
      description: Host address; empty for every address.
      type: str
    host_port:
      description: Host port.
      type: int
    proto:
      description: C(tcp), C(udp) or C(sctp).
      type: str
  sample: [{host_ip: "", host_port: 8080, proto: tcp}]
privileged:
  description:
    - The privilege-bearing settings of the run config (privileged mode, host namespaces, capabilities
      beyond Docker's default set, devices, binds of C(/), system directories or a Docker socket,
      unconfining security options, volume options that bind-mount a host path).
    - A problem unless O(allow_privileged=true); M(ferry.docker.docker_container_restore) applies them
      only with C(allow_privileged=true).
  returned: always
  type: list
  elements: str
  sample: ["privileged mode", "a bind of the Docker socket /var/run/docker.sock"]
networks_to_create:
  description: User-defined networks the container needs that do not exist yet; the restore creates them.
  returned: always
  type: list
  elements: str
networks_existing:
  description: User-defined networks the container needs that already exist; the restore reuses them.
  returned: always
  type: list
  elements: str
volumes_to_create:
  description: Named volumes the container mounts that do not exist yet.
  returned: always
  type: list
  elements: str
volumes_existing:
  description: Named volumes the container mounts that already exist (not a problem).
  returned: always
  type: list
  elements: str
bind_paths_to_create:
  description: Missing bind mount sources the restore would create (with O(create_bind_paths=true)).
  returned: always
  type: list
  elements: str
free_bytes:
  description: Free bytes found; C(null) where nothing was looked at or it could not be known.
  returned: always
  type: dict
  contains:
    dest:
      description: Free bytes on the filesystem that holds O(dest).
      type: int
    docker_root:
      description: Free bytes on the filesystem that holds Docker's root directory (local engines only).
      type: int
  sample: {dest: 53687091200, docker_root: 53687091200}
layers_present:
  description:
    - The longest prefix of O(layers) that a local image starts with; those layers need not be
      transferred (for example as C(exclude_layers) of M(ferry.docker.docker_commit_save)).
  returned: always
  type: list
  elements: str
"""

import copy
import os

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException, FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._planner import plan_container
from ansible_collections.ferry.docker.plugins.module_utils._preflight import (
    bind_path_problem,
    disk_problems,
    duplicate_ports,
    engine_is_local,
    failure_message,
    free_space,
    layers_present,
    missing_programs,
    network_subnets,
    normalize_architecture,
    port_bind_problem,
    port_holders,
    port_label,
    published_ports,
    subnet_clashes,
)
from ansible_collections.ferry.docker.plugins.module_utils._restore import (
    RequestException,
    inspect_or_none,
)
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import (
    DIGEST_LABEL,
    RunConfigError,
    bind_sources,
    named_volumes,
    needed_networks,
)
from ansible_collections.ferry.docker.plugins.module_utils._stream import FerryError


class Preflight:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.client = None
        self.local = engine_is_local(module.base_url)
        self.host = "this host"
        self.result = dict(
            changed=False,
            ok=True,
            problems=[],
            name=None,
            digest=None,
            architecture=None,
            docker_version=None,
            container_state=None,
            container_running=False,
            ports=[],
            networks_to_create=[],
            networks_existing=[],
            volumes_to_create=[],
            volumes_existing=[],
            bind_paths_to_create=[],
            free_bytes={"dest": None, "docker_root": None},
            layers_present=[],
            privileged=[],
            signer=None,
            not_carried_over=[],
        )

    def problem(self, text):
        self.result["problems"].append(text)

    # -------------------------------------------------------------------------------- inputs
    def load(self):
        p = self.p
        for option in ("required_bytes", "docker_required_bytes"):
            if p[option] < 0:
                raise RunConfigError(f"{option} is {p[option]}; give a number of bytes, 0 or more")
        if p["required_bytes"] and not p["dest"]:
            raise RunConfigError("required_bytes needs dest, the directory the bundle will be received in")
        run_config = p["run_config"]
        if run_config and p["sealed_env"]:
            sealed = {"run_config": copy.deepcopy(run_config), _trust.SEALED_KEY: p["sealed_env"]}
            problems = _trust.sealed_problems(sealed)
            if problems:
                raise RunConfigError(f"sealed_env does not fit run_config: {'; '.join(problems)}")
            identities = _trust.BundleKeys.from_params(p).identities
            run_config = _trust.unseal_env(sealed, identities, "the run_config option")["run_config"]
        plan = self.plan = plan_container(p, run_config=run_config)
        self.result["signer"] = plan.signer
        self.run_config = plan.run_config
        self.name, self.body, self.extra_networks = plan.name, plan.body, plan.extra_networks
        self.digest = plan.digest
        self.ports = published_ports(self.body)
        for text in plan.name_problems:
            self.problem(f"{text}; fix the run config or the name, image and map options")
        privileged = plan.privileged
        if privileged and not plan.privileged_allowed:
            self.problem(
                f"container {self.name} asks for privilege-bearing settings: {'; '.join(privileged)}. A bundle is "
                "input, not truth: if it comes from a source you trust, allow them with allow_privileged=true "
                "(restore_allow_privileged in the restore role)"
            )
        self.result.update(
            privileged=privileged,
            name=self.name,
            digest=self.digest,
            ports=[{k: port[k] for k in ("host_ip", "host_port", "proto")} for port in self.ports],
        )

    # -------------------------------------------------------------------------------- checks
    def connect(self):
        try:
            self.client = self.module.connect()
        except (DockerException, RequestException) as exc:
            self.problem(
                f"the Docker engine at {self.module.base_url} does not answer ({exc}); start dockerd on this host "
                "or fix docker_host and the TLS options"
            )
            return None
        info = self.client.info()
        self.host = "host " + info["Name"] if info.get("Name") else "this host"
        self.result.update(architecture=info.get("Architecture"), docker_version=info.get("ServerVersion"))
        return info

    def check_engine(self, info):
        """Settings this engine's API would refuse to carry safely are problems; those it ignores are listed."""
        gaps = self.plan.engine_gaps(self.client, info, self.host)
        for text in gaps.refused:
            self.problem(f"container {self.name}: {text}")
        self.result["not_carried_over"] = gaps.ignored

    def check_architecture(self, info):
        wanted = self.p["architecture"]
        engine = info.get("Architecture")
        if not wanted or not engine:
            return
        if normalize_architecture(wanted) != normalize_architecture(engine):
            self.problem(
                f"container {self.name} was captured on architecture {wanted} ({normalize_architecture(wanted)}) but "
                f"this engine runs on {engine} ({normalize_architecture(engine)}); its image will not run here, so "
                f"choose a target host of the {normalize_architecture(wanted)} architecture"
            )

    def check_name(self):
        """The existing container of that name; its id when it is already restored (same digest)."""
        existing = inspect_or_none(self.client.inspect_container, self.name)
        if existing is not None and (existing.get("Name") or "").lstrip("/") != self.name:
            existing = None  # matched an id prefix, not the name
        if existing is None:
            self.result.update(container_state="absent", container_running=False)
            return None
        labels = (existing.get("Config") or {}).get("Labels") or {}
        running = bool((existing.get("State") or {}).get("Running"))
        same = labels.get(DIGEST_LABEL) == self.digest
        self.result.update(container_state="same" if same else "differs", container_running=running)
        if not same:
            self.problem(
                f"container {self.name} already exists on this host with another configuration; remove or rename it, "
                "or choose another name with name"
            )
            return None
        return existing["Id"]

    def check_ports(self, restored_id):
        for first, second in duplicate_ports(self.ports):
            self.problem(
                f"container {self.name} would publish host port {port_label(first)} twice (for "
                f"{first['container_port']} and {second['container_port']}); give one of them another host port "
                "with port_map"
            )
        if not self.ports:
            return
        running = self.client.containers()
        others = [c for c in running if c.get("Id") != restored_id]
        itself = [c for c in running if c.get("Id") == restored_id]
        for port in self.ports:
            holders = port_holders(port, others)
            if holders:
                self.problem(
                    f"host port {port_label(port)} is already published by container {', '.join(holders)}; free it or "
                    f"remap it with port_map (key {port['container_port']})"
                )
                continue
            if port_holders(port, itself) or not self.local:
                continue
            problem = port_bind_problem(port)
            if problem:
                self.problem(problem)

    def check_networks(self):
        definitions = self.run_config.get("network_definitions") or {}
        reverse_map = {new: old for old, new in (self.p["network_map"] or {}).items()}
        present = None
        for net in needed_networks(self.body, self.extra_networks):
            if inspect_or_none(self.client.inspect_network, net) is not None:
                self.result["networks_existing"].append(net)
                continue
            self.result["networks_to_create"].append(net)
            definition = definitions.get(reverse_map.get(net, net)) or definitions.get(net)
            if definition is None:
                self.problem(
                    f"network {net} of container {self.name} does not exist and the run config has no definition for "
                    "it; create it first or map it to an existing network with network_map"
                )
                continue
            subnets = network_subnets(definition)
            if not subnets:
                continue
            if present is None:
                present = self.client.networks()
            for subnet, other, other_subnet in subnet_clashes(subnets, present):
                self.problem(
                    f"network {net} of container {self.name} would be created with subnet {subnet}, which overlaps "
                    f"subnet {other_subnet} of the existing network {other}; map {net} to another network with "
                    f"network_map, or remove or re-address network {other}"
                )

    def check_volumes(self):
        for vol in named_volumes(self.body):
            found = inspect_or_none(self.client.inspect_volume, vol) is not None
            self.result["volumes_existing" if found else "volumes_to_create"].append(vol)

    def check_bind_paths(self):
        for path in bind_sources(self.body):
            if os.path.exists(path):
                continue
            problem = bind_path_problem(path, self.name, self.p["create_bind_paths"])
            if problem:
                self.problem(problem)
            else:
                self.result["bind_paths_to_create"].append(path)

    def check_disk(self, info):
        p = self.p
        dest_space = root_space = None
        if p["dest"]:
            dest_space = free_space(p["dest"])
            self.result["free_bytes"]["dest"] = dest_space[1]
        root = (info or {}).get("DockerRootDir")
        if root and self.local and os.path.isdir(root):
            root_space = free_space(root)
            self.result["free_bytes"]["docker_root"] = root_space[1]
        elif p["docker_required_bytes"] and info is not None:
            self.module.module.warn(
                f"docker_required_bytes was not checked: Docker's root directory {root} is not visible on the host "
                "this module runs on; run it on the Docker host"
            )
        for text in disk_problems(
            p["dest"], p["required_bytes"], dest_space, root, p["docker_required_bytes"], root_space
        ):
            self.problem(text)

    def check_layers(self):
        wanted = self.p["layers"] or []
        if not wanted:
            return
        stacks = []
        for image in self.client.images(all=True):
            found = inspect_or_none(self.client.inspect_image, image["Id"])
            layers = ((found or {}).get("RootFS") or {}).get("Layers") or []
            if layers[:1] == wanted[:1]:
                stacks.append(layers)
        self.result["layers_present"] = layers_present(wanted, stacks)

    def run(self):
        self.load()
        info = self.connect()
        if info is not None:
            self.check_architecture(info)
            self.check_engine(info)
            restored_id = self.check_name()
            self.check_ports(restored_id)
            self.check_networks()
            self.check_volumes()
        if self.local:
            self.check_bind_paths()
        else:
            self.module.module.warn(
                f"the engine at {self.module.base_url} is not reached over a local socket, so bind mount sources and "
                "host ports held by processes were not checked; run this module on the Docker host"
            )
        self.check_disk(info)
        if info is not None:
            self.check_layers()
        for text in missing_programs(self.p["programs"], self.host):
            self.problem(text)
        self.result["ok"] = not self.result["problems"]
        return self.result


def main():
    module = FerryModule(
        dict(
            run_config=dict(type="dict"),
            bundle=dict(type="path"),
            sealed_env=dict(type="dict"),
            name=dict(type="str"),
            image=dict(type="str"),
            port_map=dict(type="dict"),
            bind_map=dict(type="dict"),
            network_map=dict(type="dict"),
            references=dict(type="dict"),
            create_bind_paths=dict(type="bool", default=True),
            architecture=dict(type="str"),
            dest=dict(type="path"),
            required_bytes=dict(type="int", default=0),
            docker_required_bytes=dict(type="int", default=0),
            layers=dict(type="list", elements="str"),
            allow_privileged=dict(type="bool", default=False),
            programs=dict(type="list", elements="str", default=[]),
            fail_on_problems=dict(type="bool", default=True),
            **_trust.argument_spec(),
        ),
        supports_check_mode=True,
        required_one_of=[["bundle", "run_config"]],
    )
    preflight = Preflight(module)
    result = preflight.result
    error = None
    try:
        preflight.run()
    except (FerryError, ValueError) as exc:
        error = str(exc)
    except (DockerException, RequestException) as exc:
        error = f"the preflight check of container {result['name']} failed at the Docker engine: {exc}"
    except OSError as exc:
        error = f"the preflight check of container {result['name']} failed on this host: {exc}"
    if error is not None:
        result["ok"] = False
        module.fail(error, **result)
    if result["problems"] and module.params["fail_on_problems"]:
        module.fail(failure_message(result["name"], preflight.host, result["problems"]), **result)
    module.exit(**result)


if __name__ == "__main__":
    main()
