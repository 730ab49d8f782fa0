# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The backup and restore roles with encrypted, signed bundles, on this machine's engine (localhost).

playbooks/backup.yml with backup_encrypt_recipients and backup_sign_key writes a bundle whose files
hold no env value and whose archives are age files; playbooks/restore.yml with
restore_decrypt_identities and restore_trusted_signers restores the container with its real env, a
second run changes nothing, and a bundle signed by a key that is not trusted is refused before
anything is loaded. The lab hosts are not used: their Python has no pyrage (Debian has no package of
it). Needs a reachable engine: the tests fail without one, never skip. Resources are named
``ferry-it-cap-<random>-*`` (the ``res`` fixture of conftest.py) and removed in ``finally``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from pyrage import x25519

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_TIMEOUT = 600
SECRET = "tok-5c2e9a-secret"
RESOURCE_PREFIX = "ferry-it-cap"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


def run_playbook(name, extra):
    """playbooks/<name>.yml on localhost (local connection, this Python); return (return code, output)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    argv = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-v",
        "--inventory",
        "localhost,",
        "--connection",
        "local",
        "--extra-vars",
        json.dumps({"ansible_python_interpreter": sys.executable, **extra}),
        str(REPO_ROOT / "playbooks" / f"{name}.yml"),
    ]
    proc = subprocess.run(
        argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=PLAYBOOK_TIMEOUT
    )
    return proc.returncode, proc.stdout + proc.stderr


def recap_changed(output):
    line = next(line for line in output.splitlines() if line.startswith("localhost") and "changed=" in line)
    return int(line.split("changed=")[1].split()[0])


def test_backup_and_restore_roles_with_encrypted_signed_bundles(client, res, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    identity = x25519.Identity.generate()
    (keys / "age.key").write_text(f"{identity}\n")
    for label in ("sign", "other"):
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", label, "-f", str(keys / label)]
        subprocess.run(argv, check=True, timeout=60)
        public = (keys / f"{label}.pub").read_text().strip()
        (keys / f"{label}.allowed").write_text(f'{label}@ferry namespaces="ferry.docker" {public}\n')

    volume = res.volume("data")
    source = res.container(
        "src",
        start=True,
        environment={"SECRET_TOKEN": SECRET},
        host_config=client.create_host_config(binds=[f"{volume}:/data"]),
    )[0]
    backups = tmp_path / "backups"
    code, output = run_playbook(
        "backup",
        {
            "ferry_backup_hosts": "localhost",
            "backup_containers": [source],
            "backup_dir": str(backups),
            "backup_encrypt_recipients": [str(identity.to_public())],
            "backup_sign_key": str(keys / "sign"),
            "backup_host_report_path": "",
            "backup_report_path": "",
        },
    )
    assert code == 0, output[-3000:]
    bundle = backups / source / "latest"
    names = sorted(os.listdir(bundle))
    assert "manifest.json.sig" in names, names
    for name in names:
        data = (bundle / name).read_bytes()
        assert SECRET.encode() not in data, name
        if name.endswith(".tar.zst"):
            assert data.startswith(b"age-encryption.org/v1"), name

    target = res.name("dst")
    res.containers.append(target)
    restore = {
        "restore_target": "localhost",
        "restore_container": source,
        "restore_backup_dir": str(backups),
        "restore_name": target,
        "restore_decrypt_identities": [str(keys / "age.key")],
        "restore_trusted_signers": str(keys / "sign.allowed"),
        "restore_host_report_path": "",
        "restore_health_stable_seconds": 2,
    }
    code, output = run_playbook("restore", restore)
    assert code == 0, output[-3000:]
    assert SECRET not in output
    inspect = client.inspect_container(target)
    assert f"SECRET_TOKEN={SECRET}" in inspect["Config"]["Env"] and inspect["State"]["Running"]

    code, output = run_playbook("restore", restore)
    assert code == 0, output[-3000:]
    assert recap_changed(output) == 0, output[-3000:]

    untrusted = res.name("dst2")
    res.containers.append(untrusted)
    code, output = run_playbook(
        "restore", {**restore, "restore_name": untrusted, "restore_trusted_signers": str(keys / "other.allowed")}
    )
    assert code != 0
    assert f"bundle {bundle} is refused" in output and "not trusted" in output, output[-3000:]
    assert SECRET not in output
    with pytest.raises(docker.errors.NotFound):
        client.inspect_container(untrusted)
    assert not client.images(name=f"ferry-restore/{untrusted.lower()}")
