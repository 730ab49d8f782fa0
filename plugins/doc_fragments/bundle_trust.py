# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options of the restore modules that read an encrypted or signed bundle."""

    DOCUMENTATION = r"""
options:
  decrypt_identities:
    description:
      - Paths on the managed host of identity files to decrypt a bundle captured with
        O(ferry.docker.docker_volume_backup#module:encrypt_recipients) - age identity files
        (C(AGE-SECRET-KEY-1...) lines, as C(age-keygen) writes them) or unencrypted OpenSSH ed25519 or
        RSA private keys.
      - Needed for any bundle with an encrypted artifact or encrypted env values; without it such a
        bundle fails before anything is changed. The key material is read on the managed host only
        and never returned or logged.
      - The sha256 of every encrypted artifact (of its ciphertext, as recorded in the manifest) is
        checked before one byte is decrypted; age authenticates the plaintext chunk by chunk.
      - Decryption runs the C(age) binary when it is on the managed host's PATH (given the identity
        files' paths, never their content), else the pyrage Python library. Lines of an age identity
        file are read as they are - a comment starts its line with C(#).
    type: list
    elements: path
    default: []
  trusted_signers:
    description:
      - Path on the managed host of an OpenSSH allowed_signers file (see C(ssh-keygen(1)), section
        ALLOWED SIGNERS). When set, the bundle must carry C(manifest.json.sig), a signature of its
        C(manifest.json) by one of these keys in namespace C(ferry.docker) (as
        O(ferry.docker.docker_volume_backup#module:sign_key) writes it); an unsigned, wrongly signed
        or changed bundle is refused before anything is changed.
      - The manifest records the sha256 of every artifact, so the signature covers every byte.
      - A bundle signed by a trusted signer may apply privilege-bearing settings as with
        C(allow_privileged=true) (on the modules that have that option).
      - Needs C(ssh-keygen) (openssh-client) on the managed host.
      - Mutually exclusive with O(trusted_signer_keys).
    type: path
  trusted_signer_keys:
    description:
      - OpenSSH public keys, each as a line of a C(.pub) file (type, base64 and an optional comment),
        trusted as signers for this task only, as O(trusted_signers) trusts the keys of a file. Nothing
        is written on the managed host beyond a private temporary file for the check.
      - For a key made for one run (what C(ferry.docker.migrate) does), so that no file has to be put on
        the host and removed again.
      - Mutually exclusive with O(trusted_signers).
    type: list
    elements: str
    default: []
requirements:
  - age binary (Debian package age) or pyrage (Python library) to decrypt an encrypted bundle
  - ssh-keygen (OpenSSH 8.2 or later) for O(trusted_signers) and O(trusted_signer_keys)
"""
