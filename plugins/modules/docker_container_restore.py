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
  - After it starts a container on a Docker engine before 28 (API 1.48) on this host, reached over the local
    socket and as root, it asks for each of the container's bridge addresses once (one ARP request from the
    bridge's own address). Those engines forward a published port before the container's interface is up, so a
    client that connected during the start would otherwise wait for the kernel's next ARP attempt, about a
    second later. Nothing on the host is configured; a request that cannot be sent is skipped.
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

from ansible_collections.ferry.docker.plugins.module_utils._client import FerryModule
from ansible_collections.ferry.docker.plugins.module_utils._step_container_restore import KWARGS, SPEC, run


def main():
    run(FerryModule(SPEC, **KWARGS))


if __name__ == "__main__":
    main()
