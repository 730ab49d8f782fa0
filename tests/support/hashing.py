# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Test support: a reader that hashes and counts what its consumer reads (to show a scan read a stream once)."""

from __future__ import annotations

import hashlib
import io

from ansible_collections.ferry.docker.plugins.module_utils._stream import IterReader


class HashingReader(io.RawIOBase):
    """A readable binary file object that hashes (sha256) and counts the bytes read through it.

    ``source`` is a file object or an iterable of byte chunks. ``hexdigest()`` and ``bytes_read``
    describe exactly what the consumer has read so far.
    """

    def __init__(self, source):
        super().__init__()
        self._source = source if hasattr(source, "read") else IterReader(source)
        self._sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self):
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        data = self._source.read(size)
        self._sha256.update(data)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def hexdigest(self):
        return self._sha256.hexdigest()
