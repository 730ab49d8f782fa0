"""The action group: ``module_defaults: {group/ferry.docker.docker: ...}`` reaches every module that talks to Docker.

A module left out of the group silently ignores the group's defaults: a play that sets ``docker_host`` there
would read one engine with some steps and another (or none) with the rest.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[4]


def _documentation(path):
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets):
            return yaml.safe_load(node.value.value)
    raise AssertionError(f"{path.name} has no DOCUMENTATION")


def _connection_modules():
    """The modules whose documentation takes the Docker connection options (the ferry.docker.docker fragment)."""
    return {
        path.stem
        for path in (ROOT / "plugins" / "modules").glob("*.py")
        if "ferry.docker.docker" in (_documentation(path).get("extends_documentation_fragment") or [])
    }


def test_every_module_with_the_connection_options_is_in_the_group():
    group = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text(encoding="utf-8"))["action_groups"]["docker"]
    modules = _connection_modules()
    assert len(modules) >= 15, modules  # the scan found the modules (a path mistake would find none)
    assert sorted(modules - set(group)) == [], "add these to action_groups.docker in meta/runtime.yml"
    assert sorted(set(group) - modules) == [], "these are in the group but take no Docker connection options"
