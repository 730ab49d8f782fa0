# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Check a bundle without restoring it: the ``restic check`` of ferry.docker bundles.

``check_bundle`` always validates the manifest (schema, bounds, every name against Docker's grammar)
and looks at every artifact file: a regular file of the bundle (never a link), with the recorded
size. With ``deep=True`` it also re-reads every artifact (like ``restic check --read-data``): the
sha256 of the file against the manifest, then the data itself, decompressed and bounded by the
recorded ``raw_size``; volume and filesystem archives go through the same tar safety scan as a
restore, and an image archive must decompress to exactly its recorded ``raw_size``. An encrypted
artifact is checked byte for byte (its sha256 is the ciphertext's), but its data can only be read
by a restore holding its identity.

Every artifact is checked, also after a damaged one, so one run names every problem.
"""

from __future__ import annotations

import os

from ansible_collections.ferry.docker.plugins.module_utils._bundle import open_bundle_file, verify_bundle_file
from ansible_collections.ferry.docker.plugins.module_utils._restore import (
    bounded_decompressed,
    open_bundle,
    scan_artifact,
)
from ansible_collections.ferry.docker.plugins.module_utils._stream import FerryError

TAR_KINDS = ("volume", "filesystem")


def _quick(bundle_dir, artifact):
    """The artifact's file is a regular file of the bundle with the recorded size; returns bytes read (0)."""
    path = os.path.join(bundle_dir, artifact["file"])
    try:
        with open_bundle_file(bundle_dir, artifact["file"]) as f:
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError as exc:
        raise FerryError(f"artifact file {path} is missing") from exc
    if size != artifact["size"]:
        raise FerryError(
            f"artifact file {path} has {size} bytes, the manifest records {artifact['size']}: it is truncated or "
            "was changed; copy the bundle again from its source or take a new backup"
        )
    return 0


def _deep(bundle_dir, artifact, allow_devices):
    """Size, sha256, then the data; returns bytes read from disk."""
    try:
        verify_bundle_file(bundle_dir, artifact)
    except FileNotFoundError as exc:
        raise FerryError(f"artifact file {os.path.join(bundle_dir, artifact['file'])} is missing") from exc
    read = artifact["size"]
    if artifact.get("encryption"):
        return read
    if artifact["kind"] in TAR_KINDS:
        scan_artifact(bundle_dir, artifact, allow_devices=allow_devices)
    else:
        total = sum(len(chunk) for chunk in bounded_decompressed(bundle_dir, artifact))
        if total != artifact["raw_size"]:
            raise FerryError(
                f"{artifact['kind']} artifact {artifact['name']} decompresses to {total} bytes, the manifest records "
                f"{artifact['raw_size']}: the archive is damaged; take a new backup"
            )
    return read + artifact["size"]


def check_bundle(bundle_dir, deep=False, allow_devices=False):
    """Check ``bundle_dir``; never raises for a damaged bundle, returns what was found.

    :returns: ``{"path", "ok", "problems", "artifacts", "bytes_read", "container", "created"}``;
        ``path`` is the real directory (``latest`` resolved), ``artifacts`` one entry per artifact
        with ``name``, ``kind``, ``file``, ``size``, ``checked`` (``size`` or ``data``) and ``problem``.
    """
    result = {
        "path": os.path.realpath(bundle_dir),
        "ok": False,
        "problems": [],
        "artifacts": [],
        "bytes_read": 0,
        "container": "",
        "created": "",
    }
    try:
        manifest = open_bundle(bundle_dir)[0]
    except (FerryError, ValueError, OSError) as exc:
        result["problems"].append(f"the manifest cannot be used: {exc}")
        return result
    result["container"] = (manifest.get("container") or {}).get("name") or ""
    result["created"] = manifest.get("created") or ""
    for artifact in manifest["artifacts"]:
        entry = {
            "name": artifact["name"],
            "kind": artifact["kind"],
            "file": artifact["file"],
            "size": artifact["size"],
            "checked": "data" if deep and not artifact.get("encryption") else "sha256" if deep else "size",
            "problem": "",
        }
        try:
            result["bytes_read"] += _deep(bundle_dir, artifact, allow_devices) if deep else _quick(bundle_dir, artifact)
        except (FerryError, ValueError, OSError) as exc:
            entry["problem"] = str(exc)
            result["problems"].append(f"{artifact['kind']} artifact {artifact['name']}: {exc}")
        result["artifacts"].append(entry)
    if not manifest["artifacts"]:
        result["problems"].append("the manifest lists no artifact; the bundle holds nothing to restore")
    result["ok"] = not result["problems"]
    return result
