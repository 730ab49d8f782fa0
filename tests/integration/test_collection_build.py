"""The collection builds into a tarball that installs and loads from a fresh collections path."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(args, **kwargs):
    proc = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_build_and_install_into_a_temporary_collections_path(tmp_path):
    run([BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp_path, REPO_ROOT])
    tarball = tmp_path / "ferry-docker-0.1.0.tar.gz"
    assert tarball.is_file()
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert "galaxy.yml" not in names  # built artifacts carry MANIFEST.json instead
    assert "MANIFEST.json" in names
    assert "plugins/doc_fragments/docker.py" in names
    assert not [name for name in names if name.startswith(("lab/", "tests/", ".venv/", "molecule/", ".cache/"))]

    target = tmp_path / "collections"
    # --no-deps: Galaxy is not reachable; community.docker and ansible.posix come with the ansible package.
    run([BIN / "ansible-galaxy", "collection", "install", "--offline", "--no-deps", "--force", "-p", target, tarball])
    # Only the installed copy is visible: an empty ansible.cfg, run from outside the repository.
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(target), ANSIBLE_CONFIG=str(config))
    listing = run([BIN / "ansible-galaxy", "collection", "list", "ferry.docker"], env=env, cwd=tmp_path)
    assert str(target) in listing
    assert "0.1.0" in listing
    modules = sorted(path.stem for path in (REPO_ROOT / "plugins" / "modules").glob("*.py"))
    for module in modules:
        doc = run([BIN / "ansible-doc", "ferry.docker." + module], env=env, cwd=tmp_path)
        assert str(target) in doc  # documentation comes from the installed tarball
