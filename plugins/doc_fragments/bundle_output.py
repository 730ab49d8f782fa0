# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """Options of the capture modules that write artifacts into a bundle directory."""

    DOCUMENTATION = r"""
options:
  dest:
    description:
      - Bundle directory to write into. It is created (with parents) if missing.
    type: path
    required: true
  compression:
    description:
      - Compression of the archive files. V(zstd) needs the C(zstandard) Python library on the managed host.
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  compression_level:
    description:
      - Compression level; the compressor's default when not set (3 for zstd, 6 for gzip).
    type: int
  mode:
    description:
      - File mode of the archive files, as an octal string. C(manifest.json) is always written 0600.
    type: raw
    default: '0600'
  dir_mode:
    description:
      - Mode of the bundle directory when this task creates it. An existing directory keeps its mode.
    type: raw
    default: '0700'
  encrypt_recipients:
    description:
      - Encrypt the archive files and the env values of the manifest to these age recipients - age
        X25519 public keys (C(age1...)) or OpenSSH C(ssh-ed25519) / C(ssh-rsa) public key lines.
        Any one of them can decrypt. Empty, the bundle is written in the clear.
      - Archives are encrypted while they stream (raw -> compressor -> age -> sha256 -> file); no
        plaintext copy is written. The recorded C(size) and C(sha256) are those of the ciphertext,
        so a bundle and its copies are verified without a key. Artifact entries get
        C(encryption=age); the manifest keeps env names, and the values go to C(sealed_env).
      - Encryption is randomised, so an encrypted capture writes new files and reports a change
        on every run.
      - Use the same recipients for every capture into one bundle.
      - Encryption runs the C(age) binary (Debian package C(age), v1.0 or later) when it is on the
        managed host's PATH, else the pyrage Python library; both write the same age v1 files, so
        either one decrypts them. Recipients (public keys) are passed on the binary's command line.
    type: list
    elements: str
    default: []
  sign_key:
    description:
      - Path on the managed host of an OpenSSH private key (without passphrase) to sign the bundle
        with - C(ssh-keygen -Y sign -n ferry.docker) over C(manifest.json), written to
        C(manifest.json.sig). The manifest lists the sha256 of every artifact, so the signature
        covers the whole bundle.
      - A capture without O(sign_key) into a signed bundle removes its signature when it changes
        the manifest, since the signature would no longer match.
    type: path
requirements:
  - zstandard (Python library) for O(compression=zstd)
  - age binary (Debian package age) or pyrage (Python library) for O(encrypt_recipients)
  - ssh-keygen (OpenSSH 8.2 or later) for O(sign_key)
"""
