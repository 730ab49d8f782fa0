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
        transfer. Each missing one is a problem that names the Debian package to install, and so is an
        V(rsync) older than 3.2.3, which lacks the C(--mkpath) the transfer passes.
      - V(docker) (a direct migration's target, where the image stream and the run's guard use the command)
        must also reach the engine this module reached (O(docker_host)); another engine is a problem.
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

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_preflight import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
