# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Encrypted and signed bundles (issue 13 B and C) through the real modules and a real engine.

Round trips: a volume bundle and an image bundle captured with encrypt_recipients (age X25519 and
ssh-ed25519 recipients) and sign_key, restored with decrypt_identities and trusted_signers; a
missing or wrong identity, an unsigned bundle, a changed manifest or signature and an untrusted
signer are refused with a message naming the bundle, and leave nothing behind. The restore policy:
privilege-bearing settings are applied only from a bundle signed by a trusted signer or with
allow_privileged. Needs a reachable engine: the tests fail without one, never skip. Resources are
named ``ferry-it-cap-<random>-*`` (the ``res`` fixture of conftest.py) and removed in ``finally``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile

import docker
import pytest
from ferry_run import run_module
from fixture_image import IMAGE
from pyrage import x25519
from test_capture_modules import tar_bytes

from ansible_collections.ferry.docker.plugins.module_utils import _bundle, _trust

SECRET = "s3cret-value-7f1c"
SOURCE = dict(hostname="src", docker_version="20.10", api_version="1.41", architecture="x86_64", os="linux")
RESOURCE_PREFIX = "ferry-it-cap"  # the res fixture (conftest.Resources) names resources <prefix>-<random>-*


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """age and ssh keys: ``age``/``other_age`` identity files, ``ssh``/``other_ssh`` OpenSSH keys, allowed_signers."""
    directory = tmp_path_factory.mktemp("trust-keys")
    found = {}
    for label in ("age", "other_age"):
        identity = x25519.Identity.generate()
        path = directory / f"{label}.txt"
        path.write_text(f"# public key: {identity.to_public()}\n{identity}\n")
        path.chmod(0o600)
        found[label] = (str(path), str(identity.to_public()))
    for label in ("ssh", "other_ssh"):
        path = directory / label
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", label, "-f", str(path)], check=True, timeout=60
        )
        found[label] = (str(path), (directory / f"{label}.pub").read_text().strip())
    for label, key in (("allowed", "ssh"), ("other_allowed", "other_ssh")):
        path = directory / label
        path.write_text(f'backup@ferry namespaces="ferry.docker" {found[key][1]}\n')
        found[label] = str(path)
    return found


def ok(result):
    assert not result.get("failed"), result.get("msg")
    return result


def refused(result, *words):
    assert result.get("failed"), result
    for word in words:
        assert word in result["msg"], result["msg"]
    return result


def volume_files(client, volume):
    """{path: content} of the regular files of a volume, read with get_archive from a created container."""
    helper = client.create_container(
        IMAGE, command=["true"], host_config=client.create_host_config(binds={volume: {"bind": "/v", "mode": "ro"}})
    )
    try:
        stream, _stat = client.get_archive(helper["Id"], "/v/.")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}
    finally:
        client.remove_container(helper["Id"], force=True, v=True)


def no_secret_in(bundle):
    for name in os.listdir(bundle):
        with open(os.path.join(bundle, name), "rb") as f:
            assert SECRET.encode() not in f.read(), name


# --------------------------------------------------------------------------------------------- B: encryption


def test_encrypted_volume_bundle_round_trip(client, res, tmp_path, keys):
    vol = res.volume("data")
    name, cid = res.container(
        "vol", environment={"DB_PASSWORD": SECRET}, host_config=client.create_host_config(binds=[f"{vol}:/data"])
    )
    client.put_archive(cid, "/data", tar_bytes({"a.txt": "alpha\n", "sub/b.txt": SECRET + "\n"}))
    bundle = tmp_path / "bundle"

    backup = ok(
        run_module(
            "docker_volume_backup",
            container=name,
            dest=str(bundle),
            encrypt_recipients=[keys["age"][1], keys["ssh"][1]],
            sign_key=keys["ssh"][0],
        )
    )
    artifact = backup["artifacts"][0]
    assert artifact["encryption"] == "age"
    with open(bundle / artifact["file"], "rb") as f:
        assert f.read(21) == b"age-encryption.org/v1"
    no_secret_in(bundle)  # neither the file in the volume nor the env value, in any bundle file
    manifest = _bundle.load_manifest(str(bundle))
    assert manifest["run_config"]["config"]["Env"][0] == "DB_PASSWORD=********"
    assert set(manifest["sealed_env"]) == {"run_config"}
    _bundle.verify_artifacts(str(bundle), manifest)  # the recorded sha256 is that of the ciphertext
    assert (bundle / "manifest.json.sig").is_file()

    target = res.name("restored")
    args = dict(bundle=str(bundle), volumes=[vol], volume_map={vol: target})
    refused(run_module("docker_volume_restore", **args), str(bundle), "no decrypt_identities")
    refused(
        run_module("docker_volume_restore", decrypt_identities=[keys["other_age"][0]], **args),
        "encrypted for other keys",
    )
    assert target not in [v["Name"] for v in client.volumes().get("Volumes") or []]

    check = ok(run_module("docker_volume_restore", check=True, decrypt_identities=[keys["age"][0]], **args))
    assert check["changed"] is True
    done = ok(
        run_module(
            "docker_volume_restore", decrypt_identities=[keys["age"][0]], trusted_signers=keys["allowed"], **args
        )
    )
    assert done["changed"] is True
    assert volume_files(client, target) == {"./a.txt": b"alpha\n", "./sub/b.txt": (SECRET + "\n").encode()}
    again = ok(run_module("docker_volume_restore", decrypt_identities=[keys["age"][0]], **args))
    assert again["changed"] is False

    # the ssh-ed25519 recipient's private key decrypts as well
    other = res.name("restored-ssh")
    ok(
        run_module(
            "docker_volume_restore",
            bundle=str(bundle),
            volumes=[vol],
            volume_map={vol: other},
            decrypt_identities=[keys["ssh"][0]],
        )
    )
    assert volume_files(client, other)["./a.txt"] == b"alpha\n"


def test_encrypted_image_bundle_round_trip_and_container_env(client, res, tmp_path, keys):
    name, cid = res.container("img", start=True, environment={"DB_PASSWORD": SECRET, "MODE": "prod"})
    client.put_archive(cid, "/", tar_bytes({"opt/state.txt": "committed\n"}))
    bundle = tmp_path / "bundle"
    saved = ok(
        run_module(
            "docker_commit_save",
            container=name,
            dest=str(bundle),
            encrypt_recipients=[keys["age"][1]],
            sign_key=keys["ssh"][0],
        )
    )
    assert saved["artifact"]["encryption"] == "age"
    no_secret_in(bundle)
    image_id = saved["artifact"]["image_id"]
    tag = f"{res.name('img')}:restored"
    res.images.append(tag)

    refused(run_module("docker_load", bundle=str(bundle), tag=tag), str(bundle), "no decrypt_identities")
    refused(
        run_module("docker_load", bundle=str(bundle), tag=tag, decrypt_identities=[keys["other_age"][0]]),
        "encrypted for other keys",
    )
    with pytest.raises(docker.errors.ImageNotFound):
        client.inspect_image(tag)

    loaded = ok(
        run_module(
            "docker_load",
            bundle=str(bundle),
            tag=tag,
            decrypt_identities=[keys["age"][0]],
            trusted_signers=keys["allowed"],
        )
    )
    assert loaded["changed"] is True and client.inspect_image(tag)["Id"] == image_id
    res.images.append(image_id)
    assert (
        ok(run_module("docker_load", bundle=str(bundle), tag=tag, decrypt_identities=[keys["age"][0]]))["changed"]
        is False
    )

    restored_name = res.name("img-restored")
    options = dict(
        bundle=str(bundle),
        image=tag,
        state="created",
        decrypt_identities=[keys["age"][0]],
        trusted_signers=keys["allowed"],
    )
    # name is run_module's positional parameter too: passed in a mapping, as test_container_health does
    restored = ok(run_module("docker_container_restore", **{"name": restored_name, **options}))
    res.containers.append(restored_name)
    assert restored["signer"] == "backup@ferry"
    env = client.inspect_container(restored_name)["Config"]["Env"]
    assert f"DB_PASSWORD={SECRET}" in env and "MODE=prod" in env
    assert SECRET not in json.dumps(restored)


def test_encrypted_filesystem_bundle_round_trip(client, res, tmp_path, keys):
    name, cid = res.container("fs", environment={"DB_PASSWORD": SECRET})
    client.put_archive(cid, "/", tar_bytes({"srv/app.txt": "exported\n"}))
    bundle = tmp_path / "bundle"
    exported = ok(
        run_module(
            "docker_export",
            container=name,
            dest=str(bundle),
            encrypt_recipients=[keys["ssh"][1]],
            sign_key=keys["ssh"][0],
        )
    )
    assert exported["artifact"]["encryption"] == "age"
    no_secret_in(bundle)
    manifest = _bundle.load_manifest(str(bundle))
    assert set(manifest["sealed_env"]) == {"run_config", "image_config"}
    repository = res.name("fs").lower()
    res.images.append(f"{repository}:latest")
    args = dict(bundle=str(bundle), repository=repository)
    refused(run_module("docker_import", **args), "no decrypt_identities")
    refused(run_module("docker_import", decrypt_identities=[keys["other_ssh"][0]], **args), "encrypted for other keys")
    imported = ok(
        run_module("docker_import", decrypt_identities=[keys["ssh"][0]], trusted_signers=keys["allowed"], **args)
    )
    assert imported["changed"] is True
    res.images.append(imported["image_id"])
    config = client.inspect_image(f"{repository}:latest")["Config"]
    assert f"DB_PASSWORD={SECRET}" in (config.get("Env") or [])  # the sealed image_config env, decrypted
    probe = client.create_container(f"{repository}:latest", command=["true"])
    try:
        stream, _stat = client.get_archive(probe["Id"], "/srv/app.txt")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            assert tar.extractfile("app.txt").read() == b"exported\n"
    finally:
        client.remove_container(probe["Id"], force=True)


# --------------------------------------------------------------------------------------------- C: signatures


def test_signature_refusals(client, res, tmp_path, keys):
    vol = res.volume("sig")
    _holder, hid = res.container("sig", host_config=client.create_host_config(binds=[f"{vol}:/v"]))
    client.put_archive(hid, "/v", tar_bytes({"x.txt": "x\n"}))
    signed, unsigned = tmp_path / "signed", tmp_path / "unsigned"
    ok(run_module("docker_volume_backup", volumes=[vol], dest=str(signed), sign_key=keys["ssh"][0]))
    ok(run_module("docker_volume_backup", volumes=[vol], dest=str(unsigned)))
    assert not (unsigned / "manifest.json.sig").exists()
    target = res.name("target")

    def restore(bundle, signers=keys["allowed"]):
        return run_module(
            "docker_volume_restore", bundle=str(bundle), volume_map={vol: target}, trusted_signers=signers
        )

    refused(restore(unsigned), f"bundle {unsigned} is not signed", "sign_key")
    refused(restore(signed, keys["other_allowed"]), f"bundle {signed} is refused", "not trusted")

    # the manifest changed after signing (one byte of a recorded size)
    tampered = tmp_path / "tampered"
    subprocess.run(["cp", "-a", str(signed), str(tampered)], check=True, timeout=60)
    text = (tampered / "manifest.json").read_text().replace('"Scope": "local"', '"Scope": "global"', 1)
    assert text != (signed / "manifest.json").read_text()
    (tampered / "manifest.json").write_text(text)
    refused(restore(tampered), f"bundle {tampered} is refused", "does not match its manifest.json")

    # the signature changed
    forged = tmp_path / "forged"
    subprocess.run(["cp", "-a", str(signed), str(forged)], check=True, timeout=60)
    lines = (forged / "manifest.json.sig").read_text().splitlines()
    raw = bytearray(base64.b64decode("".join(lines[1:-1])))
    raw[-5] ^= 1
    body = base64.b64encode(bytes(raw)).decode()
    (forged / "manifest.json.sig").write_text(
        "\n".join([lines[0], *[body[i : i + 70] for i in range(0, len(body), 70)], lines[-1]]) + "\n"
    )
    refused(restore(forged), f"bundle {forged} is refused")
    assert target not in [v["Name"] for v in client.volumes().get("Volumes") or []]

    ok(restore(signed))
    assert volume_files(client, target) == {"./x.txt": b"x\n"}
    # a capture without sign_key that changes the bundle drops the stale signature
    ok(run_module("docker_volume_backup", volumes=[vol], dest=str(signed), compression="gzip"))
    assert not (signed / "manifest.json.sig").exists()


# --------------------------------------------------------------------------------------------- D + C: policy


def privileged_bundle(path, res, sign_key=None):
    """A bundle whose run config adds a capability beyond Docker's default set (privilege-bearing)."""
    run_config = {
        "name": res.name("priv"),
        "image": IMAGE,
        "config": {"Cmd": ["sleep", "300"], "Labels": {"ferry.test": "trust"}},
        "host_config": {"CapAdd": ["SYS_ADMIN"]},
        "networks": {},
        "network_definitions": {},
        "volume_definitions": {},
        "mounts": [],
    }
    path.mkdir(parents=True, exist_ok=True)

    def edit(manifest):
        manifest["run_config"] = run_config

    def sign(data):
        return _trust.sign(sign_key, data)

    _bundle.update_manifest(str(path), edit, source=SOURCE, sign=sign if sign_key else None)
    return str(path), run_config


def test_privileged_settings_need_a_trusted_signature_or_allow_privileged(client, res, tmp_path, keys):
    signed, run_config = privileged_bundle(tmp_path / "signed", res, keys["ssh"][0])
    unsigned = privileged_bundle(tmp_path / "unsigned", res)[0]
    name = run_config["name"]
    res.containers.append(name)
    base = dict(state="created")

    refused(run_module("docker_container_restore", bundle=unsigned, **base), "privilege-bearing", "SYS_ADMIN")
    refused(run_module("docker_container_restore", bundle=signed, **base), "privilege-bearing")  # not checked
    refused(
        run_module("docker_container_restore", bundle=signed, trusted_signers=keys["other_allowed"], **base),
        "not trusted",
    )
    # a run config given as an option is not vouched for by the bundle's signature
    refused(
        run_module(
            "docker_container_restore",
            bundle=signed,
            run_config=run_config,
            trusted_signers=keys["allowed"],
            **base,
        ),
        "privilege-bearing",
    )
    with pytest.raises(docker.errors.NotFound):
        client.inspect_container(name)

    flight = ok(run_module("docker_restore_preflight", bundle=signed, trusted_signers=keys["allowed"]))
    assert flight["signer"] == "backup@ferry" and flight["privileged"] and flight["ok"] is True
    refused(run_module("docker_restore_preflight", bundle=unsigned), "privilege-bearing")
    refused(run_module("docker_restore_preflight", bundle=unsigned, trusted_signers=keys["allowed"]), "not signed")

    trusted = ok(run_module("docker_container_restore", bundle=signed, trusted_signers=keys["allowed"], **base))
    assert trusted["signer"] == "backup@ferry"
    assert client.inspect_container(name)["HostConfig"]["CapAdd"] == ["SYS_ADMIN"]
    client.remove_container(name, force=True)

    allowed = ok(run_module("docker_container_restore", bundle=unsigned, allow_privileged=True, **base))
    assert allowed["signer"] is None
    assert client.inspect_container(name)["HostConfig"]["CapAdd"] == ["SYS_ADMIN"]
