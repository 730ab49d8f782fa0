# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The two backends of _trust's age encryption: the age binary and pyrage, alone and together.

These tests need the real ``age`` binary (Debian package age; lab/ensure-docker.sh installs it) and
fail when it is missing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil

import pytest
from pyrage import x25519

from ansible_collections.ferry.docker.plugins.module_utils import _trust
from ansible_collections.ferry.docker.plugins.module_utils._stream import (
    ArtifactWriter,
    read_decompressed,
    sha256_file,
)

AGE = shutil.which("age")
DATA = os.urandom(3 * 1024 * 1024 + 12345) + b"\0" * (2 * 1024 * 1024)  # several STREAM chunks and pipe fills


@pytest.fixture(scope="module")
def age_path():
    if AGE is None:
        pytest.fail("the age binary is not on PATH: install the Debian package age (lab/ensure-docker.sh does)")
    return AGE


def _use(monkeypatch, backend, age_path):
    monkeypatch.setattr(_trust, "age_binary", (lambda: age_path) if backend == "age" else (lambda: None))


@pytest.fixture()
def age_key(tmp_path):
    """An age identity file with comments and blank lines, as age-keygen writes it (plus a bit more)."""
    identity = x25519.Identity.generate()
    path = tmp_path / "age.key"
    path.write_text(f"# created: test\n# public key: {identity.to_public()}\n\n{identity}\n# trailing comment\n")
    return str(path), str(identity.to_public()), str(identity)


def _encrypt(monkeypatch, age_path, backend, tmp_path, recipient, compression="zstd", name="a"):
    _use(monkeypatch, backend, age_path)
    texts = [recipient]
    _trust.parse_recipients(texts)
    with ArtifactWriter(
        str(tmp_path), name, compression=compression, encrypt=lambda out: _trust.Encryptor(texts, out)
    ) as writer:
        writer.write(DATA)
        return writer.commit()


def _decrypt(monkeypatch, age_path, backend, path, identity_paths, compression="zstd"):
    _use(monkeypatch, backend, age_path)
    _trust.load_identities(identity_paths)

    def factory(f):
        return _trust.DecryptingReader(f, identity_paths, "test artifact")

    return b"".join(read_decompressed(path, compression, 65536, factory))


# -- which backend runs ---------------------------------------------------------------------------


def test_the_binary_is_used_when_found(monkeypatch, age_path, tmp_path, age_key):
    _use(monkeypatch, "age", age_path)
    with open(tmp_path / "out", "wb") as out:
        encryptor = _trust.Encryptor([age_key[1]], out)
        assert encryptor.backend == "age"
        encryptor.abort()
    _use(monkeypatch, "pyrage", age_path)
    with open(tmp_path / "out", "wb") as out:
        encryptor = _trust.Encryptor([age_key[1]], out)
        assert encryptor.backend == "pyrage"
        encryptor.abort()


def test_age_binary_is_found_on_path(age_path):
    assert _trust.age_binary() == age_path


# -- round trips and interoperability -------------------------------------------------------------


@pytest.mark.parametrize(
    "encrypt_with, decrypt_with",
    [("age", "age"), ("pyrage", "pyrage"), ("age", "pyrage"), ("pyrage", "age")],
)
@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_round_trip_and_interop(monkeypatch, age_path, tmp_path, age_key, encrypt_with, decrypt_with, compression):
    written = _encrypt(monkeypatch, age_path, encrypt_with, tmp_path, age_key[1], compression)
    assert written["encryption"] == "age"
    with open(written["path"], "rb") as f:
        assert f.read(21) == b"age-encryption.org/v1"
    assert written["size"] == os.path.getsize(written["path"])
    assert (written["sha256"], written["size"]) == sha256_file(written["path"])
    assert _decrypt(monkeypatch, age_path, decrypt_with, written["path"], [age_key[0]], compression) == DATA


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
@pytest.mark.parametrize("encrypt_with, decrypt_with", [("age", "age"), ("age", "pyrage"), ("pyrage", "age")])
def test_ssh_recipient_and_openssh_identity(
    monkeypatch, age_path, tmp_path, ssh_keys, kind, encrypt_with, decrypt_with
):
    private, public = ssh_keys[kind]
    assert public.startswith(f"ssh-{kind} ") and public.endswith(f"{kind}@test")  # the comment is kept
    written = _encrypt(monkeypatch, age_path, encrypt_with, tmp_path, public)
    assert (written["sha256"], written["size"]) == sha256_file(written["path"])
    assert _decrypt(monkeypatch, age_path, decrypt_with, written["path"], [private]) == DATA


def test_several_identity_files_one_of_them_matches(monkeypatch, age_path, tmp_path, age_key, ssh_keys):
    written = _encrypt(monkeypatch, age_path, "age", tmp_path, age_key[1])
    identities = [ssh_keys["ed25519"][0], age_key[0]]
    assert _decrypt(monkeypatch, age_path, "age", written["path"], identities) == DATA


# -- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["age", "pyrage"])
def test_wrong_identity_says_encrypted_for_other_keys(monkeypatch, age_path, tmp_path, age_key, ssh_keys, backend):
    written = _encrypt(monkeypatch, age_path, backend, tmp_path, age_key[1])
    with pytest.raises(_trust.TrustError, match="test artifact is encrypted for other keys"):
        _decrypt(monkeypatch, age_path, backend, written["path"], [ssh_keys["ed25519"][0]])


@pytest.mark.parametrize("backend", ["age", "pyrage"])
@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_damaged_ciphertext_cannot_be_decrypted(monkeypatch, age_path, tmp_path, age_key, backend, damage):
    written = _encrypt(monkeypatch, age_path, "age", tmp_path, age_key[1], compression="none")
    path = written["path"]
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[: len(data) - 70000]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[:40]
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(_trust.TrustError, match=r"test artifact cannot be decrypted .*damaged"):
        _decrypt(monkeypatch, age_path, backend, path, [age_key[0]], compression="none")


def test_identity_file_the_binary_cannot_read_is_named(monkeypatch, age_path, tmp_path, age_key):
    written = _encrypt(monkeypatch, age_path, "age", tmp_path, age_key[1])
    bad = tmp_path / "indented.key"
    bad.write_text(f"   {age_key[2]}\n")  # pyrage accepts it, the binary does not
    _use(monkeypatch, "age", age_path)

    def factory(f):
        return _trust.DecryptingReader(f, [str(bad)], "test artifact")

    with pytest.raises(_trust.TrustError, match="a decrypt identity file is not usable by age") as info:
        b"".join(read_decompressed(written["path"], "zstd", 65536, factory))
    assert age_key[2] not in str(info.value)


def test_a_write_error_of_the_hashing_child_reaches_the_caller(monkeypatch, age_path, tmp_path, age_key):
    _use(monkeypatch, "age", age_path)
    path = tmp_path / "readonly"
    path.write_bytes(b"")
    with open(path, "rb") as out:
        encryptor = _trust.Encryptor([age_key[1]], out)
        with pytest.raises(_trust.TrustError, match=r"age encryption .*writing the encrypted file failed"):
            for _round in range(64):
                encryptor.write(DATA)
            encryptor.close()
        encryptor.abort()


def test_abort_stops_the_binary(monkeypatch, age_path, tmp_path, age_key):
    _use(monkeypatch, "age", age_path)
    with open(tmp_path / "out", "wb") as out:
        encryptor = _trust.Encryptor([age_key[1]], out)
        encryptor.write(DATA)
        encryptor.abort()
        assert encryptor._proc.returncode is not None
        assert encryptor._hasher.returncode is not None
        encryptor.abort()  # twice is fine


def test_the_digest_is_of_the_bytes_written_after_what_was_there(monkeypatch, age_path, tmp_path, age_key):
    # The ciphertext goes after what the file already holds; sha256 and size describe only the ciphertext.
    _use(monkeypatch, "age", age_path)
    path = tmp_path / "out"
    with open(path, "wb") as out:
        out.write(b"prefix")
        encryptor = _trust.Encryptor([age_key[1]], out)
        for _round in range(8):
            encryptor.write(DATA)
        digest, size = encryptor.close()
    ciphertext = path.read_bytes()[len(b"prefix") :]
    assert size == len(ciphertext) > 8 * len(DATA)
    assert digest == hashlib.sha256(ciphertext).hexdigest()


def test_no_key_material_on_the_command_line(monkeypatch, age_path, tmp_path, age_key, ssh_keys):
    seen = []
    original = _trust._age_popen

    def recording(args, **kwargs):
        seen.append(list(args))
        return original(args, **kwargs)

    monkeypatch.setattr(_trust, "_age_popen", recording)
    written = _encrypt(monkeypatch, age_path, "age", tmp_path, age_key[1])
    _decrypt(monkeypatch, age_path, "age", written["path"], [age_key[0]])
    assert seen[0][1:] == ["--encrypt", "-r", age_key[1]]
    assert seen[1][1:] == ["--decrypt", "-i", age_key[0]]
    secrets = [age_key[2], open(ssh_keys["ed25519"][0]).read()]
    assert not any(secret in arg for args in seen for arg in args for secret in secrets)


# -- without pyrage: the binary alone -------------------------------------------------------------


@pytest.fixture()
def binary_only(monkeypatch, age_path):
    monkeypatch.setattr(_trust, "pyrage", None)
    monkeypatch.setattr(_trust, "age_ssh", None)
    monkeypatch.setattr(_trust, "age_x25519", None)
    _use(monkeypatch, "age", age_path)


def test_without_pyrage_recipients_are_checked_on_their_text(binary_only, age_key, ssh_keys):
    values = [age_key[1], ssh_keys["ed25519"][1], ssh_keys["rsa"][1]]
    checked = _trust.parse_recipients(values)
    assert checked[0] == age_key[1]
    assert [c.split()[0] for c in checked[1:]] == ["ssh-ed25519", "ssh-rsa"]
    assert not any("@test" in c for c in checked)  # comments stay off the command line


@pytest.mark.parametrize(
    "value",
    [
        "age1xyz",
        "age1plugin1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq",  # a plugin recipient
        "ssh-ed25519 not-base64!",
        "ssh-ed25519 " + base64.b64encode(b"\0\0\0\x07ssh-rsa....").decode(),
        "AGE-SECRET-KEY-1QQQQ",  # a private key pasted by mistake is not echoed
        "",
    ],
)
def test_without_pyrage_a_bad_recipient_is_refused_by_position(binary_only, age_key, value):
    with pytest.raises(_trust.TrustError, match=r"encrypt_recipients\[1\] is not an age X25519 public key") as info:
        _trust.parse_recipients([age_key[1], value])
    if value:
        assert value not in str(info.value)


def test_without_pyrage_identity_files_are_checked_on_their_text(binary_only, tmp_path, age_key, ssh_keys):
    assert _trust.load_identities([age_key[0], ssh_keys["rsa"][0]]) == [age_key[0], ssh_keys["rsa"][0]]
    for name, text in (("empty", "# only a comment\n"), ("plugin", "AGE-PLUGIN-YUBIKEY-1QQQQ\n"), ("junk", "x\n")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(_trust.TrustError, match=f"decrypt identity file {path} holds no usable identity"):
            _trust.load_identities([str(path)])


def test_without_pyrage_streams_and_seals_with_the_binary(monkeypatch, binary_only, age_path, tmp_path, age_key):
    written = _encrypt(monkeypatch, age_path, "age", tmp_path, age_key[1])
    assert _decrypt(monkeypatch, age_path, "age", written["path"], [age_key[0]]) == DATA
    manifest = {"run_config": {"config": {"Env": ["A=secret", "B=x=y"]}}}
    _trust.seal_env(manifest, "run_config", _trust.parse_recipients([age_key[1]]))
    assert manifest["run_config"]["config"]["Env"] == ["A=********", "B=********"]
    assert "secret" not in json.dumps(manifest)
    _trust.unseal_env(manifest, _trust.load_identities([age_key[0]]), "bundle t")
    assert manifest["run_config"]["config"]["Env"] == ["A=secret", "B=x=y"]


def test_without_pyrage_sealed_values_with_the_wrong_key(binary_only, tmp_path, age_key, ssh_keys):
    sealed = _trust.encrypt_bytes(b'["A=1"]', _trust.parse_recipients([age_key[1]]))
    with pytest.raises(_trust.TrustError, match="encrypted for other keys"):
        _trust.decrypt_bytes(sealed, _trust.load_identities([ssh_keys["ed25519"][0]]), "the sealed env")
    with pytest.raises(_trust.TrustError, match="cannot be decrypted"):
        _trust.decrypt_bytes(sealed[:-5], _trust.load_identities([age_key[0]]), "the sealed env")


def test_neither_backend_says_what_to_install(monkeypatch, binary_only, age_key, tmp_path):
    monkeypatch.setattr(_trust, "age_binary", lambda: None)
    with pytest.raises(_trust.TrustError, match=r"age binary \(Debian package age\) or the Python library pyrage"):
        _trust.parse_recipients([age_key[1]])
    with open(tmp_path / "out", "wb") as out, pytest.raises(_trust.TrustError, match="apt-get install age"):
        _trust.Encryptor([age_key[1]], out)


def test_with_the_binary_identity_files_are_checked_as_it_reads_them(monkeypatch, age_path, tmp_path, age_key):
    _use(monkeypatch, "age", age_path)
    crlf = tmp_path / "crlf.key"
    crlf.write_bytes(f"# comment\r\n{age_key[2]}\r\n".encode())
    assert len(_trust.load_identities([str(crlf)])) == 1
    for text in (f"   {age_key[2]}\n", f"{age_key[2]}  \n", f"  # indented comment\n{age_key[2]}\n"):
        bad = tmp_path / "bad.key"
        bad.write_text(text)
        with pytest.raises(_trust.TrustError, match="no spaces around a key") as info:
            _trust.load_identities([str(bad)])
        assert age_key[2] not in str(info.value)
    _use(monkeypatch, "pyrage", age_path)  # pyrage alone reads them
    assert len(_trust.load_identities([str(bad)])) == 1
