# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy
import hashlib
import json
import os

import pyrage
import pytest
from pyrage import x25519

from ansible_collections.ferry.docker.plugins.module_utils import _bundle, _trust
from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    ArtifactWriter,
    read_decompressed,
    sha256_file,
)


@pytest.fixture()
def age_key(tmp_path):
    identity = x25519.Identity.generate()
    path = tmp_path / "age.key"
    path.write_text(f"# created: test\n# public key: {identity.to_public()}\n{identity}\n")
    return str(path), str(identity.to_public())


def _encrypt_to(recipients):
    _trust.parse_recipients(recipients)

    def factory(out):
        return _trust.Encryptor(recipients, out)

    return factory


def _plain(path, compression, identity_paths):
    def factory(f):
        return _trust.DecryptingReader(f, identity_paths, "test artifact")

    return b"".join(read_decompressed(path, compression, 4096, factory if identity_paths is not None else None))


def _encrypted_file(tmp_path, recipient, data, name="a"):
    with ArtifactWriter(str(tmp_path), name, compression="none", encrypt=_encrypt_to([recipient])) as writer:
        writer.write(data)
        return writer.commit()


# -- recipients and identities --------------------------------------------------------------------


def test_parse_recipients_accepts_age_and_ssh(age_key, ssh_keys):
    values = [age_key[1], ssh_keys["ed25519"][1], ssh_keys["rsa"][1]]
    assert len(_trust.parse_recipients(values)) == 3
    assert _trust.parse_recipients([]) == []


@pytest.mark.parametrize(
    "value",
    ["age1notakey", "ssh-dss AAAAB3NzaC1kc3M", "AGE-SECRET-KEY-1QQQQ", "-----BEGIN OPENSSH PRIVATE KEY-----", ""],
)
def test_parse_recipients_refuses_others_without_echoing_them(value):
    with pytest.raises(_trust.TrustError) as err:
        _trust.parse_recipients(["age1" + "q" * 58, value][1:])
    assert "encrypt_recipients[0]" in str(err.value)
    if value:
        assert value not in str(err.value)


def test_load_identities_age_file_and_ssh_keys(age_key, ssh_keys):
    identities = _trust.load_identities([age_key[0], ssh_keys["ed25519"][0], ssh_keys["rsa"][0]])
    assert len(identities) == 3


def test_load_identities_refuses_without_echoing(tmp_path):
    secret = "AGE-SECRET-KEY-1NOTREALLYAKEYBUTSECRETLOOKING"
    path = tmp_path / "bad.key"
    path.write_text(secret + "\n")
    with pytest.raises(_trust.TrustError) as err:
        _trust.load_identities([str(path)])
    assert str(path) in str(err.value) and secret not in str(err.value)


def test_load_identities_missing_file_and_symlink(tmp_path, age_key):
    with pytest.raises(_trust.TrustError, match="cannot be opened"):
        _trust.load_identities([str(tmp_path / "nope")])
    link = tmp_path / "link"
    link.symlink_to(age_key[0])
    with pytest.raises(_trust.TrustError, match="cannot be opened"):
        _trust.load_identities([str(link)])


def test_load_identities_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(_trust.TrustError, match="not a regular file"):
        _trust.load_identities([str(fifo)])


# -- streaming encryption through the ArtifactWriter ----------------------------------------------


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("size", [0, 1, 65536, 3 * 1024 * 1024 + 17])
def test_encrypted_artifact_round_trip(tmp_path, age_key, compression, size):
    data = os.urandom(size // 2) + b"\0" * (size - size // 2)
    with ArtifactWriter(str(tmp_path), "a.tar", compression=compression, encrypt=_encrypt_to([age_key[1]])) as writer:
        for start in range(0, size, 100_000):
            writer.write(data[start : start + 100_000])
        written = writer.commit()
    assert written["encryption"] == "age" and written["raw_size"] == size
    assert (written["sha256"], written["size"]) == sha256_file(written["path"])  # of the ciphertext on disk
    with open(written["path"], "rb") as f:
        assert f.read(21) == b"age-encryption.org/v1"
    assert _plain(written["path"], compression, [age_key[0]]) == data


def test_encrypted_with_ssh_recipient_decrypts_with_ssh_key(tmp_path, ssh_keys):
    for kind in ("ed25519", "rsa"):
        recipients = [ssh_keys[kind][1]]
        with ArtifactWriter(
            str(tmp_path), f"{kind}.tar", compression="zstd", encrypt=_encrypt_to(recipients)
        ) as writer:
            writer.write(b"hello " * 1000)
            written = writer.commit()
        assert _plain(written["path"], "zstd", [ssh_keys[kind][0]]) == b"hello " * 1000


def test_wrong_identity_is_named(tmp_path, age_key):
    written = _encrypted_file(tmp_path, age_key[1], b"x" * 1000)
    other = tmp_path / "other.key"
    other.write_text(f"{x25519.Identity.generate()}\n")
    with pytest.raises(_trust.TrustError, match="encrypted for other keys"):
        _plain(written["path"], "none", [str(other)])
    with pytest.raises(_trust.TrustError, match="no decrypt_identities were given"):
        _plain(written["path"], "none", [])


def test_tampered_ciphertext_is_refused(tmp_path, age_key):
    written = _encrypted_file(tmp_path, age_key[1], b"y" * 200_000)
    with open(written["path"], "r+b") as f:
        f.seek(-100, os.SEEK_END)
        byte = f.read(1)
        f.seek(-100, os.SEEK_END)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(_trust.TrustError, match="cannot be decrypted"):
        _plain(written["path"], "none", [age_key[0]])


def test_truncated_ciphertext_is_refused(tmp_path, age_key):
    written = _encrypted_file(tmp_path, age_key[1], b"z" * 200_000)
    os.truncate(written["path"], written["size"] - 65552)  # drop the last STREAM chunk whole
    with pytest.raises(_trust.TrustError, match="cannot be decrypted"):
        _plain(written["path"], "none", [age_key[0]])


def test_abort_leaves_nothing(tmp_path, age_key):
    writer = ArtifactWriter(str(tmp_path), "a", encrypt=_encrypt_to([age_key[1]]))
    with pytest.raises(RuntimeError), writer:
        writer.write(b"q" * 3_000_000)
        raise RuntimeError("stop")
    proc = writer._encryptor._proc
    assert os.listdir(tmp_path) == ["age.key"]
    assert proc.returncode is not None  # the child was reaped


def test_a_write_error_of_the_child_reaches_the_caller(tmp_path, age_key):
    path = tmp_path / "readonly"
    path.write_bytes(b"")
    with open(path, "rb") as out:  # the child cannot write to it
        encryptor = _trust.Encryptor([age_key[1]], out)
        with pytest.raises(_trust.TrustError, match="age encryption"):
            for _chunk in range(100):
                encryptor.write(b"w" * 1_000_000)
            encryptor.close()
        encryptor.abort()


def test_closing_a_decrypting_reader_early_stops_its_child(tmp_path, age_key):
    path = tmp_path / "c"
    path.write_bytes(pyrage.encrypt(b"r" * 5_000_000, _trust.parse_recipients([age_key[1]])))
    with open(path, "rb") as f:
        reader = _trust.DecryptingReader(f, [age_key[0]], "c")
        assert reader.read(10) == b"r" * 10
        reader.close()
        assert reader._proc.returncode is not None


def test_encryptor_reports_what_is_on_disk(tmp_path, age_key):
    with open(tmp_path / "out", "wb") as out:
        encryptor = _trust.Encryptor([age_key[1]], out)
        encryptor.write(b"abc" * 100_000)
        digest, size = encryptor.close()
    assert (digest, size) == sha256_file(str(tmp_path / "out"))
    assert pyrage.decrypt((tmp_path / "out").read_bytes(), _trust.load_identities([age_key[0]])) == b"abc" * 100_000


# -- sealed env values ----------------------------------------------------------------------------

MANIFEST = {
    "run_config": {"name": "web", "config": {"Env": ["DB_PASSWORD=s3cret-value", "MODE=prod", "EMPTY="]}},
    "image_config": {"Env": ["PATH=/usr/bin", "TOKEN=abc"]},
}


def test_seal_and_unseal_env(age_key):
    recipients = _trust.parse_recipients([age_key[1]])
    manifest = copy.deepcopy(MANIFEST)
    _trust.seal_env(manifest, "run_config", recipients)
    _trust.seal_env(manifest, "image_config", recipients)
    text = json.dumps(manifest)
    assert "s3cret-value" not in text and "abc" not in text
    assert manifest["run_config"]["config"]["Env"] == ["DB_PASSWORD=********", "MODE=********", "EMPTY=********"]
    assert set(manifest["sealed_env"]) == {"run_config", "image_config"}
    assert _trust.sealed_problems(manifest) == []
    assert _trust.encrypted(manifest)
    _trust.unseal_env(manifest, _trust.load_identities([age_key[0]]), "bundle /b")
    assert manifest == MANIFEST


def test_seal_without_recipients_drops_the_old_sealed_copy(age_key):
    manifest = copy.deepcopy(MANIFEST)
    _trust.seal_env(manifest, "run_config", _trust.parse_recipients([age_key[1]]))
    manifest["run_config"] = copy.deepcopy(MANIFEST["run_config"])
    _trust.seal_env(manifest, "run_config", [])
    assert "sealed_env" not in manifest and manifest["run_config"] == MANIFEST["run_config"]


def test_unseal_refuses_swapped_names_and_wrong_keys(age_key):
    manifest = copy.deepcopy(MANIFEST)
    _trust.seal_env(manifest, "run_config", _trust.parse_recipients([age_key[1]]))
    swapped = copy.deepcopy(manifest)
    swapped["run_config"]["config"]["Env"][0] = "OTHER=********"
    with pytest.raises(_trust.TrustError, match="do not match the env names"):
        _trust.unseal_env(swapped, _trust.load_identities([age_key[0]]), "bundle /b")
    with pytest.raises(_trust.TrustError, match="encrypted for other keys"):
        _trust.unseal_env(copy.deepcopy(manifest), [x25519.Identity.generate()], "bundle /b")
    with pytest.raises(_trust.TrustError, match="no decrypt_identities"):
        _trust.unseal_env(copy.deepcopy(manifest), [], "bundle /b")


@pytest.mark.parametrize(
    "sealed, problem",
    [
        ("text", "sealed_env must be an object"),
        ({"other": "x"}, "unknown key"),
        ({"run_config": 5}, "base64 string"),
        ({"image_config": "eA=="}, "does not have"),
    ],
)
def test_sealed_problems(sealed, problem):
    manifest = {"run_config": {"config": {"Env": []}}, "sealed_env": sealed}
    assert any(problem in p for p in _trust.sealed_problems(manifest))


# -- signatures -----------------------------------------------------------------------------------


def _allowed(tmp_path, principal, public_key, name="allowed_signers"):
    path = tmp_path / name
    path.write_text(f'{principal} namespaces="ferry.docker" {public_key}\n')
    return str(path)


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_sign_and_verify(tmp_path, ssh_keys, kind):
    key, public = ssh_keys[kind]
    data = b'{"artifacts": []}\n'
    signature = _trust.sign(key, data)
    assert signature == _trust.sign(key, data)  # deterministic: re-signing an unchanged manifest changes nothing
    allowed = _allowed(tmp_path, "ops@example.org", public)
    assert _trust.verify(allowed, data, signature, "/b") == "ops@example.org"


def test_verify_refuses_tampering_and_untrusted_keys(tmp_path, ssh_keys):
    key, public = ssh_keys["ed25519"]
    data = b'{"artifacts": []}\n'
    signature = _trust.sign(key, data)
    allowed = _allowed(tmp_path, "ops", public)
    with pytest.raises(_trust.TrustError, match=r"does not match its manifest\.json") as err:
        _trust.verify(allowed, data + b" ", signature, "/srv/b1")
    assert "bundle /srv/b1 is refused" in str(err.value)
    other = _allowed(tmp_path, "someone", ssh_keys["rsa"][1], "other")
    with pytest.raises(_trust.TrustError, match="not trusted"):
        _trust.verify(other, data, signature, "/b")
    with pytest.raises(_trust.TrustError, match="refused"):
        _trust.verify(allowed, data, b"-----BEGIN SSH SIGNATURE-----\ngarbage\n-----END SSH SIGNATURE-----\n", "/b")
    wrong_namespace = tmp_path / "ns"
    wrong_namespace.write_text(f'ops namespaces="other" {public}\n')
    with pytest.raises(_trust.TrustError, match="refused"):
        _trust.verify(str(wrong_namespace), data, signature, "/b")


def test_trusted_signer_keys_verify_without_a_file_on_the_host(tmp_path, ssh_keys):
    key, public = ssh_keys["ed25519"]
    data = b'{"artifacts": []}\n'
    signature = _trust.sign(key, data)
    keys = _trust.BundleKeys(signer_keys=[ssh_keys["rsa"][1], public.strip() + " run key of run-1"])
    assert keys.checks_signature and keys.verify(data, signature, "/b") == "trusted-signer-1"
    only_rsa = _trust.BundleKeys(signer_keys=[ssh_keys["rsa"][1]])
    with pytest.raises(_trust.TrustError, match="not trusted in trusted_signer_keys"):
        only_rsa.verify(data, signature, "/b")
    assert not _trust.BundleKeys().checks_signature


@pytest.mark.parametrize(
    "text",
    [
        "not a key",
        "ssh-ed25519",
        "ssh-dss AAAAB3NzaC1kc3M=",
        "cert-authority ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
        'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\nops namespaces="ferry.docker" ssh-ed25519 AAAA',
        "ssh-ed25519 AAAA,cert-authority",
    ],
)
def test_trusted_signer_keys_take_public_keys_only(text):
    # a second line or an allowed_signers option never reaches the file that decides trust
    with pytest.raises(_trust.TrustError, match=r"trusted_signer_keys\[0\] is not an OpenSSH public key"):
        _trust.BundleKeys(signer_keys=[text])


def test_trusted_signers_and_trusted_signer_keys_are_one_or_the_other(tmp_path, ssh_keys):
    with pytest.raises(_trust.TrustError, match="both set"):
        _trust.BundleKeys(trusted_signers=str(tmp_path / "f"), signer_keys=[ssh_keys["ed25519"][1]])


def test_sign_refuses_a_missing_or_bad_key(tmp_path):
    with pytest.raises(_trust.TrustError, match="not a file"):
        _trust.sign(str(tmp_path / "missing"), b"x")
    bad = tmp_path / "bad"
    bad.write_text("not a key\n")
    with pytest.raises(_trust.TrustError, match="signing with sign_key"):
        _trust.sign(str(bad), b"x")


def test_update_manifest_signs_and_removes_a_stale_signature(tmp_path, ssh_keys):
    key, public = ssh_keys["ed25519"]
    source = dict.fromkeys(_bundle.SOURCE_FIELDS, "x")

    def sign(data):
        return _trust.sign(key, data)

    _bundle.update_manifest(str(tmp_path), lambda m: None, source=source, sign=sign)
    data = _bundle.read_manifest_bytes(str(tmp_path))
    signature = _bundle.read_signature(str(tmp_path))
    assert _trust.verify(_allowed(tmp_path, "ops", public), data, signature, "b") == "ops"
    # unchanged and signed again: no change
    assert _bundle.update_manifest(str(tmp_path), lambda m: None, source=source, sign=sign)[1] is False
    # a capture without sign_key that changes the manifest drops the signature that no longer matches
    _bundle.update_manifest(str(tmp_path), lambda m: m["volumes"].update(v={}), sign=None)
    assert _bundle.read_signature(str(tmp_path)) is None
    assert hashlib.sha256(data).hexdigest() != sha256_file(str(tmp_path / "manifest.json"))[0]


def test_manifest_validation_of_encryption_fields():
    manifest = _bundle.new_manifest(dict.fromkeys(_bundle.SOURCE_FIELDS, "x"))
    manifest["artifacts"].append(
        {
            "kind": "volume",
            "name": "v",
            "file": "v.tar",
            "compression": "none",
            "size": 1,
            "sha256": "0" * 64,
            "raw_size": 1,
            "encryption": "rot13",
        }
    )
    assert any("encryption must be 'age'" in p for p in _bundle.validate_manifest(manifest))
    manifest["artifacts"][0]["file"] = "manifest.json.sig"
    assert any("plain file name" in p for p in _bundle.validate_manifest(manifest))
