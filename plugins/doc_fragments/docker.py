# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Docker engine connection options shared by every ferry.docker module."""

    DOCUMENTATION = r"""
options:
  docker_host:
    description:
      - URL or Unix socket path of the Docker engine API, for example V(unix:///var/run/docker.sock)
        or V(tcp://docker.example.com:2376).
      - If not set, the value of the E(DOCKER_HOST) environment variable is used, and then the
        local default socket V(unix:///var/run/docker.sock).
    type: str
    aliases: [docker_url]
  tls_hostname:
    description:
      - Host name to expect in the engine's TLS certificate when O(validate_certs=true).
      - If not set, the value of E(DOCKER_TLS_HOSTNAME) is used, and then the host part of O(docker_host).
    type: str
  api_version:
    description:
      - Docker API version to speak, for example V(1.41).
      - V(auto) negotiates the newest version both sides support.
      - If not set, the value of E(DOCKER_API_VERSION) is used, and then V(auto).
    type: str
    aliases: [docker_api_version]
  timeout:
    description:
      - Seconds to wait for a response from the Docker API before giving up.
      - If not set, the value of E(DOCKER_TIMEOUT) is used, and then 60.
    type: int
  ca_path:
    description:
      - CA certificate used to check the engine's certificate.
      - If not set, C(ca.pem) in the directory named by E(DOCKER_CERT_PATH) is used when that variable is set.
    type: path
    aliases: [ca_cert, tls_ca_cert, cacert_path]
  client_cert:
    description:
      - Client TLS certificate.
      - If not set, C(cert.pem) in the directory named by E(DOCKER_CERT_PATH) is used when that variable is set.
    type: path
    aliases: [tls_client_cert, cert_path]
  client_key:
    description:
      - Client TLS key.
      - If not set, C(key.pem) in the directory named by E(DOCKER_CERT_PATH) is used when that variable is set.
    type: path
    aliases: [tls_client_key, key_path]
  tls:
    description:
      - Talk to the engine over TLS without checking its certificate.
      - If not set, E(DOCKER_TLS) is used, and then V(false). O(validate_certs=true) takes precedence.
    type: bool
  validate_certs:
    description:
      - Talk to the engine over TLS and check its certificate.
      - If not set, E(DOCKER_TLS_VERIFY) is used, and then V(false).
    type: bool
    aliases: [tls_verify]
notes:
  - Connection options may also be given through the module defaults group C(group/ferry.docker.docker).
requirements:
  - Docker SDK for Python >= 5.0.0 (C(docker) on PyPI, C(python3-docker) on Debian) on the managed host
"""
