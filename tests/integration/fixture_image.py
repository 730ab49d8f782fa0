"""The local Docker engine and the small test image every integration test file uses.

The image is imported from Debian's static busybox (no registry, never pulled).
"""

from __future__ import annotations

import io
import os
import tarfile

import docker
import pytest

IMAGE = "ferry-test/busybox:fixture"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "sleep", "true", "cat", "ls")


def busybox_rootfs(extra=None):
    """A tar of a root filesystem holding a static busybox, a few applet links and ``extra`` files."""
    if not os.path.exists(BUSYBOX):
        pytest.fail(f"{BUSYBOX} is missing, so no test image can be built: install busybox-static.", pytrace=False)
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo("bin/" + applet)
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
        for name, content in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def connect():
    """A low-level client for the local engine, with IMAGE present; fails (never skips) without an engine."""
    try:
        api = docker.APIClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", version="auto")
        api.ping()
    except Exception as exc:  # any failure to connect means "no engine"
        pytest.fail(
            f"These integration tests need a Docker engine, but none is reachable ({exc}). Start dockerd "
            "(bash lab/ensure-docker.sh) or set DOCKER_HOST.",
            pytrace=False,
        )
    try:
        api.inspect_image(IMAGE)
    except docker.errors.ImageNotFound:
        repository, tag = IMAGE.rsplit(":", 1)
        api.import_image_from_data(busybox_rootfs(), repository=repository, tag=tag, changes=['CMD ["sh"]'])
    return api
