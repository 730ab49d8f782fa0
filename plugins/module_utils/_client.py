# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The Docker engine connection shared by every ferry.docker module.

``DOCKER_COMMON_ARGS`` is merged into each module's argument_spec (documented by the
``ferry.docker.docker`` doc fragment). ``FerryModule`` wraps AnsibleModule with a lazily
connected low-level Docker API client and the one failure helper every module uses.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.ferry.docker.plugins.module_utils import _engine

_SDK = {}  # "docker": the SDK module (None when missing), "error": the traceback of its import


class _MissingDockerException(Exception):
    """Stand-in so that ``except DockerException`` works when the SDK is missing."""


def docker_sdk():
    """The Docker SDK for Python, imported on first use; None when it is not installed.

    Importing it takes about 0.1 s, once per module run: a module that never talks to the engine (the
    journal steps of docker_migrate_guard) does without it.
    """
    if "docker" not in _SDK:
        try:
            import docker
            import docker.errors
            import docker.tls
        except ImportError:
            _SDK.update(docker=None, error=traceback.format_exc())
        else:
            _SDK.update(docker=docker, error=None)
    return _SDK["docker"]


def docker_exception():
    """The SDK's DockerException (the stand-in when the SDK is missing), for ``except`` clauses."""
    sdk = docker_sdk()
    return sdk.errors.DockerException if sdk is not None else _MissingDockerException


def engine_errors():
    """The exceptions a failed call to the engine raises, for ``except engine_errors():``.

    ``_engine``'s, and the SDK's and requests' once they are imported: a class never imported cannot have
    been raised, so a module that never needed the SDK does not import it to handle an error.
    """
    classes = [_engine.EngineError]
    for module, name in (("docker.errors", "DockerException"), ("requests.exceptions", "RequestException")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            classes.append(getattr(loaded, name))
    return tuple(classes)


def not_found_errors():
    """The exceptions of an engine call that names something missing (404), as ``engine_errors``."""
    errors = sys.modules.get("docker.errors")
    return (_engine.EngineNotFound,) + ((errors.NotFound,) if errors is not None else ())


def __getattr__(name):
    """``from ..._client import DockerException`` imports the SDK then (PEP 562), and only then."""
    if name == "DockerException":
        return docker_exception()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT = 60
MIN_DOCKER_SDK = (5, 0, 0)

DOCKER_COMMON_ARGS = dict(
    docker_host=dict(type="str", aliases=["docker_url"], fallback=(env_fallback, ["DOCKER_HOST"])),
    tls_hostname=dict(type="str", fallback=(env_fallback, ["DOCKER_TLS_HOSTNAME"])),
    api_version=dict(type="str", aliases=["docker_api_version"], fallback=(env_fallback, ["DOCKER_API_VERSION"])),
    timeout=dict(type="int", fallback=(env_fallback, ["DOCKER_TIMEOUT"])),
    ca_path=dict(type="path", aliases=["ca_cert", "tls_ca_cert", "cacert_path"]),
    client_cert=dict(type="path", aliases=["tls_client_cert", "cert_path"]),
    client_key=dict(type="path", aliases=["tls_client_key", "key_path"], no_log=True),
    tls=dict(type="bool", fallback=(env_fallback, ["DOCKER_TLS"])),
    validate_certs=dict(type="bool", aliases=["tls_verify"], fallback=(env_fallback, ["DOCKER_TLS_VERIFY"])),
)


def _version_tuple(text):
    """'6.1.3rc1' -> (6, 1, 3): the leading number of each of the first three parts."""
    parts = [int(re.match(r"\d*", piece).group() or 0) for piece in str(text).split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def connection_kwargs(params, environ=None):
    """Turn the common connection options into ``docker.APIClient`` keyword arguments.

    Pure function (no network): explicit options win, then the environment, then defaults.
    """
    environ = os.environ if environ is None else environ
    base_url = params.get("docker_host") or DEFAULT_DOCKER_HOST
    kwargs = dict(
        base_url=base_url,
        version=params.get("api_version") or "auto",
        timeout=params.get("timeout") or DEFAULT_TIMEOUT,
    )
    cert_dir = environ.get("DOCKER_CERT_PATH")

    def from_cert_dir(option, filename):
        if params.get(option):
            return params[option]
        if cert_dir:
            return os.path.join(cert_dir, filename)
        return None

    verify = bool(params.get("validate_certs"))
    if verify or params.get("tls"):
        ca_cert = from_cert_dir("ca_path", "ca.pem")
        client_cert = from_cert_dir("client_cert", "cert.pem")
        client_key = from_cert_dir("client_key", "key.pem")
        kwargs["tls"] = dict(
            client_cert=(client_cert, client_key) if client_cert and client_key else None,
            ca_cert=ca_cert if verify else None,
            verify=verify,
            assert_hostname=params.get("tls_hostname") if verify else None,
        )
    return kwargs


class FerryModule:
    """AnsibleModule plus a Docker API client, with the collection's failure helper."""

    def __init__(self, argument_spec, needs_docker=True, sdk_on_demand=False, **kwargs):
        """``needs_docker=False``: a module that only reads the connection options (``base_url``) and never
        calls ``client`` or ``connect``; it runs without importing the SDK.

        ``sdk_on_demand=True``: a module whose code catches ``engine_errors()`` and ``not_found_errors()``
        (never the SDK's classes by name). On an engine reached over a unix socket without TLS its client is
        an ``_engine.LocalEngine``, which imports the SDK only for a call it does not make itself; the SDK's
        presence is still checked here, its version when it is imported.
        """
        spec = dict(DOCKER_COMMON_ARGS)
        spec.update(argument_spec)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        self.check_mode = self.module.check_mode
        self._client = None
        self._sdk_on_demand = sdk_on_demand
        if needs_docker:
            if sdk_on_demand and "docker" not in _SDK and importlib.util.find_spec("docker") is not None:
                return
            self.require_sdk()

    def require_sdk(self):
        """The SDK, or a failed task that names the package to install (also when it is too old)."""
        docker = docker_sdk()
        if docker is None:
            self.module.fail_json(msg=missing_required_lib("docker (Docker SDK for Python)"), exception=_SDK["error"])
        if _version_tuple(docker.__version__) < MIN_DOCKER_SDK:
            self.fail(
                "Docker SDK for Python %s is too old on this host; install version %s or newer."
                % (docker.__version__, ".".join(str(p) for p in MIN_DOCKER_SDK))
            )
        return docker

    @property
    def base_url(self):
        """The engine address the options (or DOCKER_HOST, or the default socket) point at."""
        return connection_kwargs(self.params)["base_url"]

    def connect(self):
        """Connect once and return the client (``docker.APIClient``, or ``_engine.LocalEngine`` with
        ``sdk_on_demand``); raises one of ``engine_errors()`` when no engine answers.

        For a module that reports an unreachable engine as a result instead of failing; others use ``client``.
        """
        if self._client is None:
            kwargs = connection_kwargs(self.params)
            path = _engine.socket_path(kwargs["base_url"])
            if self._sdk_on_demand and path and "tls" not in kwargs:
                client = _engine.LocalEngine(path, kwargs["version"], kwargs["timeout"], self._sdk_client)
            else:
                client = self._sdk_client(kwargs["version"])
            client.ping()
            self._client = client
        return self._client

    def _sdk_client(self, version):
        """A new ``docker.APIClient`` for the options' engine, speaking API ``version`` ("auto": the engine's)."""
        docker = self.require_sdk()
        kwargs = connection_kwargs(self.params)
        kwargs["version"] = version
        tls = kwargs.pop("tls", None)
        if tls:
            kwargs["tls"] = docker.tls.TLSConfig(**tls)
        return docker.APIClient(**kwargs)

    @property
    def client(self):
        """The connected client (as ``connect`` returns it); connection problems fail the module with advice."""
        if self._client is None:
            try:
                self.connect()
            except engine_errors() as exc:
                self.fail(
                    "Cannot reach the Docker engine at %s: %s. Check that dockerd is running and that "
                    "docker_host and the TLS options are right." % (self.base_url, exc)
                )
        return self._client

    def fail(self, msg, **kwargs):
        """Fail the task with a sentence a user can act on."""
        self.module.fail_json(msg=msg, **kwargs)

    def exit(self, **kwargs):
        self.module.exit_json(**kwargs)
