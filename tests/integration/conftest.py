"""Fixtures for integration tests that need the lab hosts (lab/lab.py)."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fixture_image
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO_ROOT / "lab" / "lab.py"
LAB_INVENTORY = REPO_ROOT / "lab" / ".state" / "inventory.ini"
MIN_HOSTS = 2  # the lab always has at least two hosts


def _tool(name: str) -> str:
    """An Ansible CLI from the same environment as this Python, else from PATH."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make venv` (or pip install -r requirements-dev.txt)")
    return found


def _parse_inventory(path: Path) -> dict[str, str]:
    """Host name -> ansible_host for the [lab] group of the generated inventory."""
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",))
    parser.optionxform = str  # keep host names as written
    parser.read(path)
    hosts = {}
    for name, values in parser.items("lab"):
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
