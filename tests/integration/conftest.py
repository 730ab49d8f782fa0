"""Fixtures for the integration tests: the lab hosts (lab/lab.py), the local engine and what a test creates on it."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import fixture_image
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO_ROOT / "lab" / "lab.py"
LAB_INVENTORY = REPO_ROOT / "lab" / ".state" / "inventory.ini"
MIN_HOSTS = 2  # the lab always has at least two hosts
HELPER_LABEL = "ferry.docker.helper"  # the short-lived containers the modules start (volume backup, restore)
LOOP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
ANONYMOUS_VOLUME = re.compile(r"^[0-9a-f]{64}$")


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: the test uses the lab hosts (set on each test that needs the lab fixture)")


def pytest_collection_modifyitems(items):
    """Mark every test that needs the lab hosts: `make test` runs the others beside them (`-m "not lab"`)."""
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)


def _tool(name: str) -> str:
    """An Ansible CLI from the same environment as this Python, else from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make venv` (or pip install -r requirements-dev.txt)")
    return found


def _parse_inventory(path: Path, group: str = "lab") -> dict[str, str]:
    """Host name -> ansible_host for ``group`` of an inventory lab.py wrote."""
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",))
    parser.optionxform = str  # keep host names as written
    parser.read(path)
    hosts = {}
    for name, values in parser.items(group):
        fields = dict(field.split("=", 1) for field in (values or "").split())
        hosts[name] = fields["ansible_host"]
    return hosts


@pytest.fixture(scope="session")
def lab() -> dict[str, str]:
    """Make sure the lab is up (`lab.py up` is idempotent) and return {host name: IP}."""
    docker_info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if docker_info.returncode != 0:
        pytest.fail(
            "these tests need a Docker engine and none answers (`docker info` failed: "
            f"{docker_info.stderr.strip()[:300]}). Run `bash lab/ensure-docker.sh` as root, then retry."
        )
    up = subprocess.run([sys.executable, str(LAB_SCRIPT), "up"], capture_output=True, text=True, check=False)
    if up.returncode != 0:
        pytest.fail(f"`lab.py up` failed:\n{up.stderr[-3000:]}")
    hosts = _parse_inventory(LAB_INVENTORY)
    if len(hosts) < MIN_HOSTS:
        pytest.fail(f"{LAB_INVENTORY} lists {len(hosts)} lab hosts; expected at least {MIN_HOSTS}")
    return hosts


@pytest.fixture(scope="session")
def ansible_adhoc(lab):
    """Run one ad-hoc Ansible module against lab hosts over SSH; return {host: result dict}."""
    ansible = _tool("ansible")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
    )

    def run(pattern: str, module: str, args: dict | str | None = None) -> dict[str, dict]:
        command = [ansible, pattern, "-m", module]
        if args is not None:
            command += ["-a", args if isinstance(args, str) else json.dumps(args)]
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
        try:
            output = json.loads(result.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"`{' '.join(command)}` printed no JSON (rc {result.returncode}):\n{result.stderr[-3000:]}")
        return output["plays"][0]["tasks"][0]["hosts"] if output["plays"] else {}

    return run


@pytest.fixture(scope="session")
def client():
    """Low-level Docker client for the local engine, with the busybox test image imported."""
    api = fixture_image.connect()
    yield api
    api.close()


class Resources:
    """What one test creates on the local engine, named with a prefix unique to the test.

    ``prefix`` is ``<RESOURCE_PREFIX of the test module>-<random>``: ``name(suffix)`` names a
    container, volume, network or image repository of the test; ``image(suffix)`` is a repository
    ``<RESOURCE_PREFIX>/<random>-<suffix>``. A test adds what it creates under other names to
    ``containers``, ``networks``, ``volumes`` or ``images`` (names, ids or image references).

    ``cleanup()`` removes, whatever the test left: the containers it tracked or named with the
    prefix, the modules' helper containers that mount a volume of the test, the anonymous volumes of
    those containers, the networks and volumes it tracked or named with the prefix, and the images
    it tracked or tagged with one of its names. Containers go first (a volume or network in use
    cannot be removed). "Not found" is no error; any other error is reported once all is tried.
    """

    def __init__(self, api, base):
        self.api = api
        self.base = base
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"{base}-{self.run_id}"
        self.containers, self.networks, self.volumes, self.images = [], [], [], []

    def name(self, suffix):
        return f"{self.prefix}-{suffix}"

    def image(self, suffix):
        """A repository name (no tag) for an image of this test."""
        return f"{self.base}/{self.run_id}-{suffix}"

    def container(self, suffix, start=False, **kwargs):
        """Create (and start) a container of the test image that runs until stopped; (name, id)."""
        kwargs.setdefault("image", fixture_image.IMAGE)
        kwargs.setdefault("command", LOOP)
        name = self.name(suffix)
        cid = self.api.create_container(name=name, **kwargs)["Id"]
        self.containers.append(cid)
        if start:
            self.api.start(cid)
        return name, cid

    def volume(self, suffix):
        name = self.name(suffix)
        self.api.create_volume(name)
        self.volumes.append(name)
        return name

    def volume_path(self, name):
        """The directory of a volume on this host (the tests that look into volumes need a local engine)."""
        path = self.api.inspect_volume(name)["Mountpoint"]
        if not os.path.isdir(path):
            pytest.fail(
                f"volume {name} lives in {path}, which is not a directory on this host: these tests need the "
                "Docker engine on this host (unset DOCKER_HOST or point it at the local socket)",
                pytrace=False,
            )
        return path

    def snapshot(self):
        """(containers, networks, volumes) named with the prefix: to show that a run changed nothing."""
        return (
            sorted(c["Names"][0] for c in self.api.containers(all=True) if self.prefix in c["Names"][0]),
            sorted(n["Name"] for n in self.api.networks() if n["Name"].startswith(self.prefix)),
            sorted(v["Name"] for v in self.api.volumes().get("Volumes") or [] if v["Name"].startswith(self.prefix)),
        )

    def leftovers(self):
        """What still exists with the prefix, and every helper container (none may outlive a module run)."""
        found = [c["Id"] for c in self.api.containers(all=True, filters={"label": HELPER_LABEL})]
        found += [c["Names"][0] for c in self.api.containers(all=True) if self.prefix in c["Names"][0]]
        found += [v["Name"] for v in self.api.volumes().get("Volumes") or [] if v["Name"].startswith(self.prefix)]
        found += [t for i in self.api.images() for t in i.get("RepoTags") or [] if self.prefix in t]
        return found

    def _ours(self, tag):
        return self.prefix in tag or self.image("") in tag

    def _container_refs(self):
        refs = list(reversed(self.containers))
        refs += [c["Id"] for c in self.api.containers(all=True) if any(self.prefix in n for n in c["Names"] or [])]
        for helper in self.api.containers(all=True, filters={"label": HELPER_LABEL}):
            if any(self.prefix in (m.get("Name") or "") for m in helper.get("Mounts") or []):
                refs.append(helper["Id"])
        return refs

    def cleanup(self):
        errors = []

        def remove(call, *args, **kwargs):
            try:
                call(*args, **kwargs)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                errors.append(exc)

        anonymous, removed = [], set()
        for ref in self._container_refs():
            try:
                inspect = self.api.inspect_container(ref)
            except docker.errors.NotFound:
                continue
            if inspect["Id"] in removed:
                continue
            removed.add(inspect["Id"])
            for mount in inspect.get("Mounts") or []:
                if mount.get("Type") == "volume" and ANONYMOUS_VOLUME.match(mount.get("Name") or ""):
                    anonymous.append(mount["Name"])
            remove(self.api.remove_container, inspect["Id"], force=True, v=True)
        networks = self.networks + [n["Name"] for n in self.api.networks() if n["Name"].startswith(self.prefix)]
        for network in dict.fromkeys(networks):
            remove(self.api.remove_network, network)
        volumes = self.volumes + anonymous
        volumes += [v["Name"] for v in self.api.volumes().get("Volumes") or [] if v["Name"].startswith(self.prefix)]
        for volume in dict.fromkeys(volumes):
            remove(self.api.remove_volume, volume, force=True)
        images = self.images + [t for i in self.api.images() for t in i.get("RepoTags") or [] if self._ours(t)]
        for image in dict.fromkeys(images):
            remove(self.api.remove_image, image, force=True)
        assert not errors, f"could not remove what the test created: {errors}"


@pytest.fixture
def res(client, request):
    """The ``Resources`` of one test, named with its module's ``RESOURCE_PREFIX``; cleaned up whatever happened."""
    base = getattr(request.module, "RESOURCE_PREFIX", None)
    if not base:
        pytest.fail(f"{request.module.__name__} uses the res fixture but sets no RESOURCE_PREFIX", pytrace=False)
    resources = Resources(client, base)
    try:
        yield resources
    finally:
        resources.cleanup()
