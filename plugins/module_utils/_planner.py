# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The one planner of a container restore, shared by docker_restore_preflight and docker_container_restore.

Both modules decide from the same inputs (a bundle or a run config, and the name, image and map
overrides) what the restore would create: the container's name, its create body, the networks it
joins, its config digest, whether its names are ones Docker accepts, and which privilege-bearing
settings it asks for. Deciding it here, once, means the preflight checks exactly what the restore
then does. The modules only present the plan differently: the preflight lists problems, the
restore refuses.
"""

from __future__ import annotations

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._compat import engine_gaps
from ansible_collections.ferry.docker.plugins.module_utils._names import create_body_problems
from ansible_collections.ferry.docker.plugins.module_utils._policy import privileged_settings
from ansible_collections.ferry.docker.plugins.module_utils._restore import open_bundle
from ansible_collections.ferry.docker.plugins.module_utils._runconfig import (
    RunConfigError,
    named_volumes,
    needed_networks,
    stamp_digest,
    to_create_body,
)

# Module options that override what the run config records (see to_create_body).
OVERRIDES = ("name", "image", "port_map", "bind_map", "network_map", "references")


class ContainerPlan:
    """What restoring one container creates, decided from the bundle or run config and the overrides.

    ``manifest`` is ``None`` without a bundle. ``trusted`` is true only when a trusted signer signed the
    bundle and its own run config is used (a signature vouches for the bundle, not for an option).
    ``name_problems`` are the names Docker would refuse; ``privileged`` the privilege-bearing settings,
    which ``privileged_allowed`` says may be applied.
    """

    def __init__(self, manifest, run_config, name, body, extra_networks, trusted, signer, allow_privileged):
        self.manifest = manifest
        self.run_config = run_config
        self.name = name
        self.body = body
        self.extra_networks = extra_networks
        self.trusted = trusted
        self.signer = signer
        self.digest = stamp_digest(body, extra_networks)
        self.name_problems = create_body_problems(
            name, body, extra_networks, named_volumes(body), needed_networks(body, extra_networks)
        )
        self.privileged = privileged_settings(body)
        self.privileged_allowed = bool(allow_privileged or trusted)

    def engine_gaps(self, client, info, host):
        """What the engine of ``client`` (``info``: its ``docker info``) cannot carry of the body (``_compat``)."""
        api = client.api_version
        engine = f"Docker {info.get('ServerVersion') or '?'} (API {api}) on {host}"
        return engine_gaps(self.body, api, info.get("CgroupVersion"), engine)


def plan_container(params, run_config=None, keys=None):
    """Plan the restore of one container from a module's ``params``.

    ``params`` holds ``bundle``, ``allow_privileged``, the OVERRIDES and the trust options
    (``_trust.argument_spec``). ``run_config`` is a run config given as an option, already unsealed
    (default ``params["run_config"]``); it takes precedence over the bundle's. ``keys`` defaults to
    ``_trust.BundleKeys.from_params``.
    A bundle is opened with ``open_bundle``: its manifest, names and signature are checked before
    anything is decided. Raises RunConfigError when there is no run config or it names no container,
    and what ``open_bundle`` raises for a bundle that cannot be trusted.
    """
    bundle = params.get("bundle")
    if run_config is None:
        run_config = params.get("run_config")
    manifest, trusted, signer = None, False, None
    if bundle:
        keys = keys if keys is not None else _trust.BundleKeys.from_params(params)
        manifest = open_bundle(bundle, keys=keys)[0]
        trusted = bool(keys.trusted) and not run_config
        signer = keys.signer
        run_config = run_config or manifest.get("run_config")
    if not run_config:
        raise RunConfigError(
            f"bundle {bundle} holds no run_config; capture it with docker_run_config_info or give run_config"
        )
    overrides = {key: params[key] for key in OVERRIDES if params.get(key)}
    name, body, extra_networks = to_create_body(run_config, overrides)
    if not name:
        raise RunConfigError("the run config records no container name; set name")
    return ContainerPlan(
        manifest, run_config, name, body, extra_networks, trusted, signer, params.get("allow_privileged")
    )
