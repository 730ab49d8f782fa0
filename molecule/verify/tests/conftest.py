"""Shared names, lab hosts, the drill reports and a playbook runner for the verify scenario's tests."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _shared():
    """molecule/shared/labtests.py, what every scenario's verifier shares."""
    spec = importlib.util.spec_from_file_location("labtests", ROOT / "molecule" / "shared" / "labtests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


labtests = _shared()
inspect, lab_host, playbook = labtests.inspect, labtests.lab_host, labtests.playbook

# Same values as molecule/verify/vars/scenario.yml.
REDIS = "ferry-mv-redis"
PG = "ferry-mv-pg"
PG_DUMP_VOLUME = "ferry-mv-pgdump"
REDIS_VOLUME = "ferry-mv-redisdata"
BACKUP_DIR = "/var/backups/ferry-mv"
PREFIX = "ferry-mv-drill"
EVIDENCE = "drill-evidence-5c1e"
REDIS_PORT = 26379


@pytest.fixture(scope="session")
def lab():
    """The two lab hosts as testinfra hosts."""
    return {name: lab_host(name) for name in ("host1", "host2")}


def ephemeral_json(name):
    """A JSON file converge or prepare wrote in molecule's ephemeral directory."""
    return json.loads((Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name).read_text())


def drill_leftovers(host):
    """Every object on host carrying the drills' label or names: containers, volumes, networks, images."""
    found = []
    for kind, command in (
        ("container", "docker ps -a --filter label=ferry.docker.verify --format '{{.Names}}'"),
        ("volume", "docker volume ls -q --filter label=ferry.docker.verify"),
        ("network", "docker network ls --filter label=ferry.docker.verify --format '{{.Name}}'"),
        ("image", f"docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' '{PREFIX}/*'"),
        ("container", f"docker ps -a --filter name={PREFIX} --format '{{{{.Names}}}}'"),
        ("volume", f"docker volume ls -q --filter name={PREFIX}"),
    ):
        found.extend(f"{kind} {name}" for name in host.check_output(command).split())
    return sorted(set(found))
