"""The checkout as an AWX / AAP project: collections/requirements.yml and the playbooks' link to it.

AWX's project sync installs collections/requirements.yml into the job's collection path; the
playbooks find the checkout itself as ferry.docker through playbooks/collections (Ansible searches a
playbook's adjacent collections/ directory first, whatever ANSIBLE_COLLECTIONS_PATHS says).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ansible_collections
import pytest
import yaml
from ansible.galaxy.dependency_resolution.versioning import meets_requirements

REPO_ROOT = Path(__file__).resolve().parents[3]
LINK = REPO_ROOT / "playbooks" / "collections" / "ansible_collections" / "ferry" / "docker"
REQUIREMENTS = REPO_ROOT / "collections" / "requirements.yml"


def _requirements() -> dict[str, str]:
    entries = yaml.safe_load(REQUIREMENTS.read_text())["collections"]
    return {entry["name"]: entry["version"] for entry in entries}


def test_requirements_match_galaxy_dependencies():
    galaxy = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())
    assert _requirements() == galaxy["dependencies"]


@pytest.mark.parametrize("name", sorted(_requirements()))
def test_installed_collections_meet_the_requirements(name):
    """The collections the tests run with (the ansible package in .venv) satisfy each range."""
    namespace, collection = name.split(".")
    manifests = [Path(p) / namespace / collection / "MANIFEST.json" for p in ansible_collections.__path__]
    manifest = next((m for m in manifests if m.is_file()), None)
    assert manifest is not None, f"{name} is not installed next to the ansible package"
    version = json.loads(manifest.read_text())["collection_info"]["version"]
    assert meets_requirements(version, _requirements()[name]), f"{name} {version} is outside {_requirements()[name]}"


def test_playbooks_find_the_checkout_as_ferry_docker():
    assert LINK.is_symlink()
    # Relative, so that it holds in any clone and in AWX's copy of the project.
    assert not os.path.isabs(os.readlink(LINK))
    assert LINK.resolve() == REPO_ROOT
    assert (LINK / "galaxy.yml").is_file()


def test_build_leaves_the_project_files_out():
    ignored = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["build_ignore"]
    assert "playbooks/collections" in ignored
    assert "collections" in ignored
