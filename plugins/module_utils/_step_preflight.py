# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_restore_preflight): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_bundle_restore`` (``state=checked``) runs it in its
process for several containers, one after another (``_steps``).
"""

from __future__ import annotations

import copy
import os
import shutil

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException
from ansible_collections.ferry.docker.plugins.module_utils._planner import plan_container
from ansible_collections.ferry.docker.plugins.module_utils._preflight import (
    bind_path_problem,
    cli_engine_problem,
    disk_problems,
    duplicate_ports,
    engine_is_local,
    failure_message,
    free_space,
    layers_present,
    network_subnets,
    normalize_architecture,
    port_bind_problem,
    port_holders,
    port_label,
    program_problems,
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
        for text in program_problems(self.p["programs"], self.host):
            self.problem(text)
        if "docker" in self.p["programs"] and info is not None and shutil.which("docker"):  # (missing: named above)
            text = cli_engine_problem(info, self.host)
            if text:
                self.problem(text)
        self.result["ok"] = not self.result["problems"]
        return self.result


SPEC = dict(
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
)
KWARGS = dict(supports_check_mode=True, required_one_of=[["bundle", "run_config"]])


def run(module):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
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
