"""Run a ferry.docker module for real, through Ansible, against the local Docker engine.

Integration tests call modules the way users do: `ansible localhost -m ferry.docker.<name>`, with the
collection found through the repository's ansible.cfg. The module's JSON result comes back as a dict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _ansible():
    beside_python = Path(sys.executable).parent / "ansible"
    return str(beside_python) if beside_python.exists() else "ansible"


def run_module(name, /, check=False, diff=False, **args):
    """Run ferry.docker.<name> with ``args`` on localhost; return its result dict.

    The result has ``failed`` set when the module failed; ``msg`` then holds the module's message.
    ``name`` is positional-only, so that a module option called ``name`` can be passed in ``args``.
    """
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    cmd = [_ansible(), "localhost", "-c", "local", "-i", "localhost,", "-m", "ferry.docker." + name]
    cmd += ["-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    try:
        doc = json.loads(proc.stdout)
        result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(
            "could not read the result of ferry.docker.%s (%s)\nstdout:\n%s\nstderr:\n%s"
            % (name, exc, proc.stdout[-4000:], proc.stderr[-4000:])
        ) from exc
    return result
