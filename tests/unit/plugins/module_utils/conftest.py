# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fixtures shared by the module_utils unit tests."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory):
    """An ed25519 and an RSA OpenSSH key pair made by ssh-keygen, without passphrase: ``{kind: (private key
    path, public key line)}``."""
    directory = tmp_path_factory.mktemp("sshkeys")
    keys = {}
    for kind, extra in (("ed25519", []), ("rsa", ["-b", "3072"])):
        path = directory / kind
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", f"{kind}@test", "-f", str(path)],
            check=True,
            timeout=60,
        )
        keys[kind] = (str(path), (directory / f"{kind}.pub").read_text().strip())
    return keys
