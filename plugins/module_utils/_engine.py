# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""A few JSON calls to a Docker engine on a unix socket, without importing the Docker SDK.

Importing the SDK (and requests, which it imports) takes about 0.15 s of CPU, a fifth of a small
volume restore's time. ``LocalEngine`` answers the calls a restore into a new volume makes (the
version, ping, info, volumes, image lookups) itself, one HTTP/1.1 connection per call, with the
SDK's method names, arguments and return values. Any other attribute goes to a ``docker.APIClient``
made on first use with the same address and the API version already agreed (``__getattr__``), so
a caller cannot tell the two apart except by the exceptions: a failed call here raises
``EngineError`` (``EngineNotFound`` for a 404, ``EngineAPIError`` for another error status,
``EngineConnectionError`` when the engine does not answer); ``_client.engine_errors()`` and
``_client.not_found_errors()`` name ours and the SDK's together.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from urllib.parse import quote, urlencode

UNIX_PREFIX = "unix://"
BASE_URL = "http+docker://localhost"  # what docker.APIClient calls a unix-socket engine (base_url)


class EngineError(Exception):
    """A call to the engine failed (the counterpart of the SDK's DockerException)."""


class EngineConnectionError(EngineError):
    """The engine did not answer: no socket, refused, timed out, or the connection broke."""


class _Response:
    """What callers read of a failed call's response: ``status_code``, ``reason`` and ``url``, as on requests'."""

    def __init__(self, status_code, reason, url):
        self.status_code = status_code
        self.reason = reason
        self.url = url


class EngineAPIError(EngineError):
    """The engine answered with an error status; ``str()`` reads like the SDK's APIError."""

    def __init__(self, status_code, reason, url, explanation):
        self.response = _Response(status_code, reason, url)
        self.status_code = status_code
        self.explanation = explanation
        kind = "Client" if 400 <= status_code < 500 else "Server"
        message = f"{status_code} {kind} Error for {url}: {reason}"
        super().__init__(f'{message} ("{explanation}")' if explanation else message)


class EngineNotFound(EngineAPIError):
    """404: the object named does not exist (the SDK's NotFound)."""


def socket_path(base_url):
    """The socket's path when ``base_url`` is ``unix://<absolute path>``, else None."""
    if isinstance(base_url, str) and base_url.startswith(UNIX_PREFIX):
        path = base_url[len(UNIX_PREFIX) :]
        if path.startswith("/"):
            return path
    return None


def api_error(status, reason, url, body):
    """The EngineAPIError (EngineNotFound for a 404) of an error answer; the engine explains in ``message``."""
    text = body.decode("utf-8", "replace")
    try:
        explanation = json.loads(text)["message"]
    except (ValueError, TypeError, KeyError):
        explanation = text.strip()
    cls = EngineNotFound if status == 404 else EngineAPIError
    return cls(status, reason, url, explanation)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class LocalEngine:
    """The engine on the unix socket at ``path``: a few calls itself, every other one by ``make_sdk_client``.

    ``make_sdk_client(api_version)`` returns a ``docker.APIClient`` for the same engine; it is called at most
    once, by the first thread that needs it. ``version`` is the API version to speak ("auto": the engine's).
    """

    def __init__(self, path, version, timeout, make_sdk_client):
        self.base_url = BASE_URL
        self.timeout = timeout
        self._path = path
        self._make_sdk_client = make_sdk_client
        self._sdk_client = None
        self._lock = threading.Lock()
        self._version = None if version in (None, "auto") else str(version)

    # -- the SDK for everything else

    def __getattr__(self, name):
        if name.startswith("__"):  # copy, pickle and friends probe for these: they are not delegated
            raise AttributeError(name)
        return getattr(self.sdk_client, name)

    @property
    def sdk_client(self):
        """The ``docker.APIClient`` for every call not answered here, made on first use."""
        with self._lock:
            if self._sdk_client is None:
                self._sdk_client = self._make_sdk_client(self.api_version)
            return self._sdk_client

    def close(self):
        if self._sdk_client is not None:
            self._sdk_client.close()

    # -- HTTP

    @property
    def api_version(self):
        """The API version spoken, agreed with the engine on first use as the SDK does (``version="auto"``)."""
        if self._version is None:
            self._version = str(self.version(api_version=False)["ApiVersion"])
        return self._version

    def _call(self, method, path, params=None, body=None, versioned=True, answer="json"):
        target = (f"/v{self.api_version}" if versioned else "") + path
        if params:
            target += "?" + urlencode(params)
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection = _UnixConnection(self._path, self.timeout)
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EngineConnectionError(
                f"the Docker engine at {UNIX_PREFIX}{self._path} did not answer {method} {target}: {exc}"
            ) from exc
        finally:
            connection.close()
        if response.status >= 400:
            raise api_error(response.status, response.reason, BASE_URL + target, raw)
        if answer == "text":
            return raw.decode("utf-8", "replace")
        if answer == "none":
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise EngineConnectionError(
                f"the Docker engine at {UNIX_PREFIX}{self._path} answered {method} {target} with something "
                f"other than JSON: {exc}"
            ) from exc

    # -- the calls answered here; names, arguments and results as docker.APIClient's

    def version(self, api_version=True):
        return self._call("GET", "/version", versioned=api_version)

    def ping(self):
        return self._call("GET", "/_ping", answer="text") == "OK"

    def info(self):
        return self._call("GET", "/info")

    def inspect_volume(self, name):
        return self._call("GET", "/volumes/" + _part(name))

    def create_volume(self, name=None, driver=None, driver_opts=None, labels=None):
        if driver_opts is not None and not isinstance(driver_opts, dict):
            raise TypeError("driver_opts must be a dictionary")
        body = {"Name": name, "Driver": driver, "DriverOpts": driver_opts}
        if labels is not None:
            body["Labels"] = labels
        return self._call("POST", "/volumes/create", body=body)

    def remove_volume(self, name, force=False):
        self._call("DELETE", "/volumes/" + _part(name), params={"force": force} if force else None, answer="none")

    def inspect_image(self, image):
        return self._call("GET", f"/images/{_part(image)}/json")

    def images(self, name=None, quiet=False, all=False, filters=None):
        if name is not None or quiet or filters:
            return self.sdk_client.images(name=name, quiet=quiet, all=all, filters=filters)
        return self._call("GET", "/images/json", params={"only_ids": 0, "all": 1 if all else 0})


def _part(value):
    """A path parameter, quoted as the SDK quotes it."""
    if not isinstance(value, str):
        raise ValueError(f"Expected a string but found {value} ({type(value)}) instead")
    return quote(value, safe="/:")
