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
requirements:
  - zstandard (Python library) for O(compression=zstd)
"""
