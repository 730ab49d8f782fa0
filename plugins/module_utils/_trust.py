# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Encryption at rest (age, through pyrage) and authenticity (OpenSSH signatures) of ferry.docker bundles.

Encryption. With ``encrypt_recipients`` the capture modules store every artifact as an age file
(https://age-encryption.org/v1): raw bytes -> compressor -> age -> sha256 -> file. The recipients
are age X25519 public keys (``age1...``) or OpenSSH ``ssh-ed25519``/``ssh-rsa`` public keys. The
artifact entry gets ``"encryption": "age"``; its ``size`` and ``sha256`` are those of the ciphertext
on disk, so a bundle (and a central copy of it) is verified byte for byte without any key, and a
restore checks the sha256 of the ciphertext before it decrypts one byte. The plaintext is then
authenticated chunk by chunk by age's STREAM construction (ChaCha20-Poly1305, 64 KiB chunks, the
last chunk marked), so a decryption that does not fail returned exactly what was encrypted.
Two backends produce the same age v1 files, so bundles move freely between hosts that have either:

- the ``age`` binary (Debian package ``age``, the Go reference implementation, v1.0 or later), when
  ``age_binary()`` finds it on the managed host's PATH. It streams archives (``Encryptor``,
  ``DecryptingReader``) as a child process. Its cipher is faster than pyrage's, but the bytes cross
  one more pipe, so it takes about as much CPU; it takes less wall time where there is a CPU to spare,
  since encrypting and hashing-and-writing run in two processes (row 9 of BENCHMARKS.md). Recipients
  are public keys and go on its command line (``-r``);
  identities are only ever given as ``-i <identity file>``, never their content;
- the Python library ``pyrage``, with ``encrypt_io``/``decrypt_io`` in a child Python process fed
  through pipes (see below), used when there is no binary.

Either one is enough. When pyrage is installed it also checks recipients and identity files and
seals the (small) env lists in process; without it those checks are made on the keys' text, and the
env lists go through the binary too. Memory is a few chunks whatever the artifact size, and no
plaintext copy is ever written to disk.

The env values of the manifest (``run_config.config.Env``, ``image_config.Env``) are sealed: each
list is replaced by the same entries with the values masked (``NAME=********``), and the list
itself is stored as an age ciphertext (base64) in ``sealed_env.<run_config|image_config>``.
``unseal_env`` puts the values back in memory. Env names stay readable, values do not.

Authenticity. With ``sign_key`` the capture modules sign ``manifest.json`` with
``ssh-keygen -Y sign -n ferry.docker`` into ``manifest.json.sig`` (the manifest lists the sha256 of
every artifact file, so the signature covers every byte of the bundle). A restore with
``trusted_signers`` (an OpenSSH allowed_signers file) reads the manifest and the signature once,
checks them with ``ssh-keygen -Y find-principals`` and ``ssh-keygen -Y verify`` and parses exactly
the bytes it verified.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

from ansible_collections.ferry.docker.plugins.module_utils._stream import FerryError

PYRAGE_IMPORT_ERROR = None
try:
    import pyrage
    from pyrage import ssh as age_ssh
    from pyrage import x25519 as age_x25519
except ImportError as exc:  # reported by the modules with missing_required_lib
    pyrage = age_ssh = age_x25519 = None
    PYRAGE_IMPORT_ERROR = str(exc)

ENCRYPTION = "age"
NAMESPACE = "ferry.docker"
SIGNATURE_NAME = "manifest.json.sig"
MASK = "********"
SEALED_KEY = "sealed_env"
SEALED_PLACES = ("run_config", "image_config")
IDENTITY_MAX_BYTES = 1024 * 1024  # an identity file is a few KiB
SIGNATURE_MAX_BYTES = 64 * 1024  # an SSHSIG is under 2 KiB even with RSA 8192
SSH_KEYGEN_TIMEOUT = 60
_PIPE_BYTES = 1024 * 1024  # the kernel buffer of the pipes to and from the age process
_SSH_PREFIXES = ("ssh-ed25519 ", "ssh-rsa ")


class TrustError(FerryError):
    """A key, recipient, signature or encrypted file cannot be used; the message says which and what to do."""


AGE_TIMEOUT = 120  # for the small env lists; the streaming processes end with their input
_AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")  # X25519 only: a plugin's age1<name>1... has a 1
_AGE_IDENTITY = re.compile(r"AGE-SECRET-KEY-1[02-9AC-HJ-NP-Z]{58}")
_SSH_KEY_TYPES = {"ssh-ed25519 ": b"ssh-ed25519", "ssh-rsa ": b"ssh-rsa"}


def age_binary():
    """The path of the ``age`` binary on this host's PATH, or None (then pyrage is used).

    A function so that tests (and a host with both) can choose the backend by replacing it.
    """
    return shutil.which("age")


def require_pyrage():
    if pyrage is None:
        raise TrustError(
            f"encryption needs the Python library pyrage on the managed host ({PYRAGE_IMPORT_ERROR}); "
            "install it (pip install pyrage) or leave encrypt_recipients and decrypt_identities empty"
        )


def require_age():
    """The age binary's path, or None when pyrage will do the work; TrustError when neither is there."""
    binary = age_binary()
    if binary is None and pyrage is None:
        raise TrustError(
            "encryption needs the age binary (Debian package age) or the Python library pyrage on the managed "
            f"host ({PYRAGE_IMPORT_ERROR}); install one of them (apt-get install age, or pip install pyrage) or "
            "leave encrypt_recipients and decrypt_identities empty"
        )
    return binary


def _age_env():
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def _age_popen(args, **kwargs):
    """Start the age binary; ``args`` hold public keys and identity file paths only."""
    try:
        return subprocess.Popen(
            args,
            close_fds=True,
            cwd="/",
            env=_age_env(),
            start_new_session=True,  # no controlling terminal: a passphrase prompt fails instead of hanging
            **kwargs,
        )
    except OSError as exc:
        raise TrustError(f"cannot start {args[0]} ({exc.strerror or exc}); reinstall age or remove it") from None


def _recipient_args(recipients):
    args = []
    for recipient in recipients:
        args += ["-r", str(recipient).strip()]
    return args


def _identity_args(paths):
    args = []
    for path in paths:
        args += ["-i", os.path.abspath(path)]  # a bare "-" would be stdin
    return args


# ------------------------------------------------------------------------------------------------
# keys


def parse_recipients(values):
    """pyrage recipients of ``values`` (``age1...``, ``ssh-ed25519 ...`` or ``ssh-rsa ...`` public keys).

    Raises TrustError naming the position of a recipient that is not one of these (public keys are
    not secret, but a private key pasted by mistake must not be echoed, so its text is never shown).
    """
    if not values:
        return []
    if require_age() is not None and pyrage is None:
        return [_checked_recipient_text(index, value) for index, value in enumerate(values)]
    recipients = []
    for index, value in enumerate(values):
        text = str(value).strip()
        try:
            if text.startswith("age1"):
                recipients.append(age_x25519.Recipient.from_str(text))
            elif text.startswith(_SSH_PREFIXES):
                recipients.append(age_ssh.Recipient.from_str(text))
            else:
                raise ValueError("unknown kind")
        except (ValueError, pyrage.RecipientError) as exc:
            raise TrustError(
                f"encrypt_recipients[{index}] is not an age X25519 public key (age1...) nor an ssh-ed25519 or "
                f"ssh-rsa public key line ({type(exc).__name__}); give public keys only, e.g. the output of "
                "age-keygen -y or the content of id_ed25519.pub"
            ) from None
    return recipients


def _bad_recipient(index, why):
    return TrustError(
        f"encrypt_recipients[{index}] is not an age X25519 public key (age1...) nor an ssh-ed25519 or "
        f"ssh-rsa public key line ({why}); give public keys only, e.g. the output of "
        "age-keygen -y or the content of id_ed25519.pub"
    )


def _checked_recipient_text(index, value):
    """``value`` as a recipient for the age binary, checked on its text (used without pyrage)."""
    text = str(value).strip()
    if _AGE_RECIPIENT.fullmatch(text):
        return text
    for prefix, kind in _SSH_KEY_TYPES.items():
        if text.startswith(prefix):
            fields = text.split()
            try:
                blob = base64.b64decode(fields[1], validate=True)
            except (IndexError, binascii.Error):
                raise _bad_recipient(index, "the key is not base64") from None
            if blob[4 : 4 + len(kind)] != kind or int.from_bytes(blob[:4], "big") != len(kind):
                raise _bad_recipient(index, "the key does not match its type")
            return " ".join(fields[:2])  # the comment stays out of the command line
    raise _bad_recipient(index, "unknown kind")


def _read_key_file(path, what):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TrustError(
            f"{what} {path} cannot be opened ({exc.strerror or exc}); give a readable regular file"
        ) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TrustError(f"{what} {path} is not a regular file; give the path of the key file")
        os.set_blocking(fd, True)
        data = f.read(IDENTITY_MAX_BYTES + 1)
    if len(data) > IDENTITY_MAX_BYTES:
        raise TrustError(f"{what} {path} is larger than {IDENTITY_MAX_BYTES} bytes, which no key file is")
    return data


def load_identities(paths):
    """pyrage identities from identity files: age identity files (``AGE-SECRET-KEY-1...`` lines, ``#``
    comments) or unencrypted OpenSSH ed25519/RSA private keys. TrustError names the file, never its content.

    With the age binary on PATH the files are also checked on their text as the binary reads them
    (each line as it is: a key line without spaces around it, comments starting the line with ``#``);
    without pyrage the result is then their paths, which the binary reads itself.
    """
    if not paths:
        return []
    binary = require_age()
    if binary is not None:
        checked = [_checked_identity_file(path) for path in paths]  # what the binary will read
        if pyrage is None:
            return checked
    identities = []
    for path in paths:
        data = _read_key_file(path, "decrypt identity file")
        try:
            if b"-----BEGIN" in data:
                identities.append(age_ssh.Identity.from_buffer(data))
                continue
            found = 0
            for line in data.decode("ascii").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                identities.append(age_x25519.Identity.from_str(line))
                found += 1
            if not found:
                raise ValueError("no identity")
        except (ValueError, UnicodeDecodeError, pyrage.IdentityError):
            raise TrustError(
                f"decrypt identity file {path} holds no usable identity: give an age identity file "
                "(AGE-SECRET-KEY-1... lines, as age-keygen writes) or an unencrypted OpenSSH ed25519 or RSA "
                "private key"
            ) from None
    return identities


def _checked_identity_file(path):
    """``path`` when it reads, as the age binary reads it, as an age identity file or an SSH private key."""
    data = _read_key_file(path, "decrypt identity file")
    if data.startswith(b"-----BEGIN ") and b"PRIVATE KEY-----" in data.split(b"\n", 1)[0]:
        return path
    try:
        lines = [line[:-1] if line.endswith("\r") else line for line in data.decode("ascii").split("\n")]
    except UnicodeDecodeError:
        lines = ["?"]
    keys = [line for line in lines if line and not line.startswith("#")]
    if keys and all(_AGE_IDENTITY.fullmatch(line) for line in keys):
        return path
    raise TrustError(
        f"decrypt identity file {path} holds no usable identity: give an age identity file "
        "(AGE-SECRET-KEY-1... lines, as age-keygen writes; the age binary reads each line as it is, so no "
        "spaces around a key, and a comment starts its line with #) or an unencrypted OpenSSH ed25519 or RSA "
        "private key"
    )


# ------------------------------------------------------------------------------------------------
# streaming age in a child process
#
# pyrage holds the GIL while it encrypts, so a thread gives no parallelism: every chunk would wait for
# the module's own Python work (reading files, building the tar). A child Python process runs pyrage
# instead, on the second core: the module writes compressed bytes into its stdin pipe; for encryption
# it writes the ciphertext straight to the artifact's temporary file (its descriptor is passed) and
# reports the sha256 and size of what it wrote; for decryption it reads the bundle file (descriptor
# passed) and writes the plaintext to its stdout pipe. The child gets public keys or identity file
# paths on its command line, never key material.
#
# With the age binary, the binary is the child. Decryption reads the bundle file as its stdin. For
# encryption its stdout is a pipe to a small hashing child (``_HASHER``), which writes the ciphertext
# to the artifact's temporary file (descriptor passed) and reports the sha256 and size of what it
# wrote, as the pyrage child does: the module's own process only compresses and writes into age's
# stdin. (A thread of the module that drained age's stdout measured no better on row 9 of
# BENCHMARKS.md, and it would share the GIL with the module's tar work.)

_CHILD = r"""
import hashlib, json, os, sys
import pyrage
from pyrage import ssh, x25519

class Out:
    def __init__(self, fd, digest):
        self.fd, self.digest, self.size = fd, digest, 0
    def write(self, data):
        view = memoryview(data)
        if self.digest is not None:
            self.digest.update(view)
        self.size += len(view)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)
    def flush(self):
        return None

def identities(paths):
    found = []
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        if b"-----BEGIN" in data:
            found.append(ssh.Identity.from_buffer(data))
            continue
        for line in data.decode("ascii").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(x25519.Identity.from_str(line))
    return found

def recipient(text):
    return x25519.Recipient.from_str(text) if text.startswith("age1") else ssh.Recipient.from_str(text)

mode, fd, keys = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
try:
    if mode == "encrypt":
        out = Out(fd, hashlib.sha256())
        source = open(0, "rb", buffering=1 << 20, closefd=False)  # pyrage reads 8 KiB at a time
        pyrage.encrypt_io(source, out, [recipient(k) for k in keys])
        sys.stdout.write(json.dumps({"sha256": out.digest.hexdigest(), "size": out.size}))
    else:
        with os.fdopen(fd, "rb") as source:
            pyrage.decrypt_io(source, Out(1, None), identities(keys))
except BrokenPipeError:
    sys.exit(3)
except Exception as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}")
    sys.exit(2)
"""


def _child(mode, fd, keys, **kwargs):
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _CHILD, mode, str(fd), json.dumps(list(keys))],
            pass_fds=(fd,),
            close_fds=True,
            cwd="/",  # sys.path[0] of ``-c`` is the working directory: never import from the module's
            **kwargs,
        )
    except OSError as exc:
        raise TrustError(f"cannot start the age {mode}ion process ({exc.strerror or exc})") from None


def _widen(pipe):
    """Give ``pipe`` a 1 MiB kernel buffer (Linux), so that a chunk crosses it in one step, not sixteen."""
    try:
        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except OSError:
        pass  # the default size works, with more context switches


def _child_error(proc):
    """What the child said on stderr, without the age binary's "age: " prefixes and its bug-report line."""
    if not proc.stderr:
        return ""
    return _age_message(proc.stderr.read())


def _age_message(stderr):
    """``stderr`` of age (or a child) as one line, without "age: error: " and age's bug-report line."""
    lines = []
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("age: report "):
            continue
        for prefix in ("age: error: ", "age: "):
            if line.startswith(prefix):
                line = line[len(prefix) :]
                break
        lines.append(line)
    return "; ".join(lines)[-500:]


_HASHER = r"""
import hashlib, json, os, sys
fd, digest, size = int(sys.argv[1]), hashlib.sha256(), 0
try:
    while True:
        data = os.read(0, 1 << 20)
        if not data:
            break
        digest.update(data)
        size += len(data)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
except OSError as exc:
    sys.stderr.write(f"writing the encrypted file failed: {exc.strerror or exc}")
    sys.exit(2)
sys.stdout.write(json.dumps({"sha256": digest.hexdigest(), "size": size}))
"""


def _age_encrypt_chain(binary, recipients, fd):
    """Start ``age --encrypt`` (stdin a pipe) -> pipe -> the hashing child, which writes to ``fd``.

    Returns ``(age, hasher)``; the hasher prints the sha256 and size of what it wrote as JSON.
    """
    read_end, write_end = os.pipe()
    hasher = None
    try:
        try:
            fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
        except OSError:
            pass  # the default size works, with more context switches
        try:
            hasher = subprocess.Popen(
                [sys.executable, "-c", _HASHER, str(fd)],
                stdin=read_end,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(fd,),
                close_fds=True,
                cwd="/",  # sys.path[0] of ``-c`` is the working directory: never import from the module's
            )
        except OSError as exc:
            raise TrustError(f"cannot start the process that hashes the ciphertext ({exc.strerror or exc})") from None
        age = _age_popen(
            [binary, "--encrypt", *_recipient_args(recipients)],
            stdin=subprocess.PIPE,
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
    except BaseException:
        if hasher is not None:
            hasher.kill()
            hasher.communicate()
        raise
    finally:
        os.close(read_end)
        os.close(write_end)
    return age, hasher


def _close_pipes(proc):
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass


class Encryptor:
    """Push-style age encryption into ``out`` (a binary file object): ``write(data)``..., then ``close()``.

    ``close()`` finishes the age file (its last STREAM chunk) and returns ``(sha256 hexdigest, size)``
    of the ciphertext written to ``out``; ``abort()`` stops without finishing. ``recipients`` are the
    public key strings (checked with ``parse_recipients`` first). With the age binary, the module
    writes into age's stdin and a hashing child writes age's output to ``out``; with pyrage, one
    child does both.
    """

    def __init__(self, recipients, out):
        binary = require_age()
        out.flush()
        self.backend = "age" if binary else "pyrage"
        self._hasher = None
        if binary:
            self._proc, self._hasher = _age_encrypt_chain(binary, recipients, out.fileno())
        else:
            self._proc = _child(
                "encrypt",
                out.fileno(),
                recipients,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        _widen(self._proc.stdin)
        self._closed = False

    def _failure(self, what):
        if self._hasher is not None and self._hasher.returncode:
            detail = _child_error(self._hasher) or f"exit {self._hasher.returncode}"
        else:
            detail = _child_error(self._proc) or f"exit {self._proc.returncode}"
        return TrustError(f"age encryption {what}: {detail}")

    def write(self, data):
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError:
            self._proc.wait()
            if self._hasher is not None:
                self._hasher.wait()
            raise self._failure("stopped") from None

    def close(self):
        if self._closed:
            raise TrustError("the age encryption was already closed")
        self._closed = True
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        reporter = self._hasher or self._proc
        report = reporter.stdout.read()
        failed = reporter.wait() != 0
        if self._proc.wait() != 0 or failed:
            raise self._failure("failed")
        try:
            report = json.loads(report)
            return report["sha256"], report["size"]
        except (ValueError, KeyError, TypeError):
            raise TrustError("age encryption gave no sha256 and size of what it wrote") from None

    def abort(self):
        if self._closed:
            return
        self._closed = True
        for proc in (self._proc, self._hasher):
            if proc is not None:
                proc.kill()
                _close_pipes(proc)
                proc.wait()


class DecryptingReader:
    """A readable file object of the plaintext of the age file ``f`` (``read(size)``); call ``close()``.

    ``identity_paths`` are identity files (checked with ``load_identities`` first). A wrong identity, a
    damaged or truncated file raises TrustError from ``read``, at the latest when the end is reached;
    ``name`` is used in the messages.
    """

    def __init__(self, f, identity_paths, name):
        if not identity_paths:
            raise no_identities(name)
        binary = require_age()
        self.name = name
        self.backend = "age" if binary else "pyrage"
        if binary:
            self._proc = _age_popen(
                [binary, "--decrypt", *_identity_args(identity_paths)],
                stdin=f.fileno(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        else:
            self._proc = _child(
                "decrypt",
                f.fileno(),
                identity_paths,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        _widen(self._proc.stdout)
        self._done = False

    def read(self, size=-1):
        if self._done:
            return b""
        data = self._proc.stdout.read(size if size is not None and size >= 0 else -1)
        if not data or size is None or size < 0:
            self._finish()
        return data

    def _finish(self):
        self._done = True
        error = _child_error(self._proc)
        if self._proc.wait() != 0:
            raise decrypt_error(self.name, error or f"exit {self._proc.returncode}")

    def close(self):
        if self._proc.poll() is None:
            self._proc.kill()
        for pipe in (self._proc.stdout, self._proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass
        self._proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def no_identities(name):
    """The TrustError for an encrypted ``name`` and no identities."""
    return TrustError(
        f"{name} is encrypted (age) and no decrypt_identities were given; give the identity file of one of the "
        "bundle's recipients (decrypt_identities; restore_decrypt_identities in the restore role)"
    )


def decrypt_error(name, exc):
    """The TrustError for a failed decryption of ``name`` (``exc``: the error or its text)."""
    text = str(exc)
    if "No matching keys" in text or "no identity matched any of the recipients" in text:
        return TrustError(
            f"{name} is encrypted for other keys: none of the decrypt_identities is one of its recipients; give "
            "the identity file of a key the bundle was encrypted to (see the README on key rotation)"
        )
    if text.startswith('reading "'):  # the age binary could not use an identity file
        return TrustError(
            f"{name} cannot be decrypted: a decrypt identity file is not usable by age ({text}); give age "
            "identity files (AGE-SECRET-KEY-1... lines, comments start the line with #) or unencrypted OpenSSH "
            "ed25519 or RSA private keys"
        )
    return TrustError(
        f"{name} cannot be decrypted ({text or type(exc).__name__}): the file is damaged or was changed after "
        "capture; copy the bundle again from its source"
    )


def _age_run(args, data):
    try:
        proc = subprocess.run(
            args,
            input=data,
            capture_output=True,
            timeout=AGE_TIMEOUT,
            check=False,
            cwd="/",
            env=_age_env(),
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise TrustError(f"age did not finish within {AGE_TIMEOUT} s") from None
    except OSError as exc:
        raise TrustError(f"cannot start {args[0]} ({exc.strerror or exc}); reinstall age or remove it") from None
    return proc.returncode, proc.stdout, _age_message(proc.stderr)


def encrypt_bytes(data, recipients):
    """The age ciphertext of ``data`` for ``recipients`` (from ``parse_recipients``)."""
    recipients = list(recipients)
    if pyrage is not None and not any(isinstance(r, str) for r in recipients):
        return pyrage.encrypt(data, recipients)
    binary = age_binary()
    if binary is None:
        require_pyrage()
        return pyrage.encrypt(data, parse_recipients(recipients))
    code, out, error = _age_run([binary, "--encrypt", *_recipient_args(recipients)], data)
    if code != 0:
        raise TrustError(f"age encryption failed: {error or f'exit {code}'}")
    return out


def decrypt_bytes(data, identities, name):
    """The plaintext of the age ciphertext ``data`` with ``identities`` (from ``load_identities``)."""
    if not identities:
        raise no_identities(name)
    identities = list(identities)
    if pyrage is not None and not any(isinstance(i, str) for i in identities):
        try:
            return pyrage.decrypt(data, identities)
        except pyrage.DecryptError as exc:
            raise decrypt_error(name, exc) from None
    binary = age_binary()
    if binary is None:
        require_pyrage()
        return decrypt_bytes(data, load_identities(identities), name)
    code, out, error = _age_run([binary, "--decrypt", *_identity_args(identities)], data)
    if code != 0:
        raise decrypt_error(name, error or f"exit {code}")
    return out


# ------------------------------------------------------------------------------------------------
# sealed env values


def _env_name(entry):
    return str(entry).split("=", 1)[0]


def _masked(env):
    return [(_env_name(e) + "=" + MASK) if "=" in str(e) else e for e in env]


def seal_env(manifest, place, recipients):
    """Seal the env values of ``manifest[place]`` (in place): masked list stays, ciphertext goes to sealed_env.

    ``place`` is ``run_config`` (``config.Env``) or ``image_config`` (``Env``). Without recipients any
    sealed copy of that place is dropped (the plaintext one just written supersedes it).
    """
    sealed = manifest.get(SEALED_KEY) or {}
    holder = _env_holder(manifest, place)
    env = holder.get("Env") if holder is not None else None
    if recipients and env:
        plaintext = json.dumps(list(env)).encode("utf-8")
        sealed[place] = base64.b64encode(encrypt_bytes(plaintext, recipients)).decode("ascii")
        holder["Env"] = _masked(env)
    else:
        sealed.pop(place, None)
    if sealed:
        manifest[SEALED_KEY] = sealed
    else:
        manifest.pop(SEALED_KEY, None)
    return manifest


def _env_holder(manifest, place):
    value = manifest.get(place)
    if not isinstance(value, dict):
        return None
    if place == "run_config":
        config = value.get("config")
        return config if isinstance(config, dict) else None
    return value


def sealed_problems(manifest):
    """Problems of the ``sealed_env`` of a manifest (empty when absent or well formed)."""
    if SEALED_KEY not in manifest:
        return []
    sealed = manifest[SEALED_KEY]
    if not isinstance(sealed, dict):
        return [f"{SEALED_KEY} must be an object"]
    problems = []
    for place, value in sealed.items():
        if place not in SEALED_PLACES:
            problems.append(f"{SEALED_KEY} has an unknown key {place!r}")
        elif not isinstance(value, str) or len(value) > 4 * 1024 * 1024:
            problems.append(f"{SEALED_KEY}.{place} must be a base64 string")
        elif not isinstance((_env_holder(manifest, place) or {}).get("Env"), list):
            problems.append(f"{SEALED_KEY}.{place} seals an env list that {place} does not have")
    return problems


def unseal_env(manifest, identities, where):
    """Put the sealed env values of ``manifest`` back (in place); TrustError if they cannot be decrypted.

    The decrypted list must have the same names in the same order as the masked list it replaces.
    ``where`` names the manifest in messages (``bundle /srv/b``).
    """
    sealed = manifest.pop(SEALED_KEY, None) or {}
    for place in SEALED_PLACES:
        if place not in sealed:
            continue
        name = f"the sealed env values ({place}) of {where}"
        try:
            ciphertext = base64.b64decode(sealed[place], validate=True)
        except ValueError:
            raise TrustError(f"{name} are not valid base64: the manifest is damaged; copy the bundle again") from None
        try:
            env = json.loads(decrypt_bytes(ciphertext, identities, name).decode("utf-8"))
        except ValueError:
            raise TrustError(f"{name} do not decrypt to a JSON list: the manifest is damaged") from None
        holder = _env_holder(manifest, place)
        masked = holder.get("Env") if holder else None
        if not (isinstance(env, list) and all(isinstance(e, str) for e in env) and masked == _masked(env)):
            raise TrustError(
                f"{name} do not match the env names of the manifest: the manifest was changed after capture; "
                "copy the bundle again from its source"
            )
        holder["Env"] = env
    return manifest


def encrypted(manifest):
    """Whether any part of ``manifest`` (an artifact or env values) is encrypted."""
    return bool(manifest.get(SEALED_KEY)) or any(
        isinstance(a, dict) and a.get("encryption") for a in manifest.get("artifacts") or []
    )


# ------------------------------------------------------------------------------------------------
# OpenSSH signatures


def _ssh_keygen():
    path = shutil.which("ssh-keygen")
    if not path:
        raise TrustError(
            "ssh-keygen is not installed on this host; install openssh-client (Debian, Ubuntu) or "
            "openssh (RHEL) to sign or verify bundles"
        )
    return path


def _run(args, data=None):
    try:
        return subprocess.run(
            args,
            input=data,
            capture_output=True,
            timeout=SSH_KEYGEN_TIMEOUT,
            check=False,
            start_new_session=True,  # no controlling terminal: a passphrase prompt fails instead of hanging
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        raise TrustError(f"ssh-keygen did not finish within {SSH_KEYGEN_TIMEOUT} s") from None
    except OSError as exc:
        raise TrustError(f"ssh-keygen cannot be run: {exc.strerror or exc}") from None


def sign(key_path, data):
    """The ``ssh-keygen -Y sign -n ferry.docker`` signature of ``data`` with the private key ``key_path``."""
    if not os.path.isfile(key_path):
        raise TrustError(f"sign_key {key_path} is not a file on this host; give the path of an OpenSSH private key")
    proc = _run([_ssh_keygen(), "-q", "-Y", "sign", "-f", key_path, "-n", NAMESPACE], data)
    if proc.returncode != 0 or not proc.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TrustError(
            f"signing with sign_key {key_path} failed ({detail[-1] if detail else f'exit {proc.returncode}'}); "
            "give an OpenSSH private key without a passphrase that this user can read"
        )
    return proc.stdout


def verify(allowed_signers, data, signature, bundle_dir, label=None):
    """The principal of ``allowed_signers`` whose key made ``signature`` over ``data`` for ferry.docker.

    ``label`` names the trusted keys in messages (default: the file's path). TrustError naming the
    bundle when no trusted principal signed exactly these bytes.
    """
    if not os.path.isfile(allowed_signers):
        raise TrustError(
            f"trusted_signers {allowed_signers} is not a file on this host; give an OpenSSH allowed_signers file"
        )
    label = label or allowed_signers
    refused = (
        f"bundle {bundle_dir} is refused: its signature {SIGNATURE_NAME} "
        "{why}. Nothing was changed. If the bundle is yours, capture it again with sign_key set to a key "
        f"listed in {label}; otherwise do not restore it"
    )
    tool = _ssh_keygen()
    with tempfile.TemporaryDirectory(prefix="ferry-verify-") as tmp:
        sig_path = os.path.join(tmp, SIGNATURE_NAME)
        with open(sig_path, "wb") as f:
            f.write(signature)
        found = _run([tool, "-Y", "find-principals", "-s", sig_path, "-f", allowed_signers, "-n", NAMESPACE])
        principals = [p for p in found.stdout.decode("utf-8", "replace").splitlines() if p.strip()]
        if found.returncode != 0 or not principals:
            if b"not a signature" in found.stderr.lower() or b"invalid" in found.stderr.lower():
                raise TrustError(refused.format(why="is not a valid OpenSSH signature (damaged or forged)"))
            raise TrustError(refused.format(why=f"was made by a key that is not trusted in {label}"))
        for principal in principals:
            proc = _run(
                [tool, "-Y", "verify", "-f", allowed_signers, "-I", principal, "-n", NAMESPACE, "-s", sig_path], data
            )
            if proc.returncode == 0:
                return principal
    raise TrustError(
        refused.format(why="does not match its manifest.json: the manifest or the signature was changed after signing")
    )


# ------------------------------------------------------------------------------------------------
# what a restore module is given


def argument_spec():
    """Options of the restore modules that read a bundle: decrypt_identities, trusted_signers and
    trusted_signer_keys."""
    return dict(
        decrypt_identities=dict(type="list", elements="path", default=[]),
        trusted_signers=dict(type="path"),
        trusted_signer_keys=dict(type="list", elements="str", default=[], no_log=False),
    )


# An OpenSSH public key as a .pub file holds it: its type and base64 blob (a comment after them is dropped).
_PUBLIC_KEY = re.compile(
    r"(?:ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com|ssh-rsa) [A-Za-z0-9+/]+={0,3}"
)


def signer_key(text, index):
    """``type blob`` of the ``index``-th entry of trusted_signer_keys; TrustError for anything else (an
    allowed_signers option such as cert-authority or a second line never gets into the file)."""
    fields = str(text).strip().split()
    key = " ".join(fields[:2])
    if len(fields) < 2 or "\n" in str(text).strip() or not _PUBLIC_KEY.fullmatch(key):
        raise TrustError(
            f"trusted_signer_keys[{index}] is not an OpenSSH public key; give a line of a .pub file "
            "(for example 'ssh-ed25519 AAAA... comment')"
        )
    return key


class BundleKeys:
    """The keys a restore uses for one bundle: loaded identities, the allowed_signers file, and who signed.

    ``signer`` is set by ``_restore.open_bundle`` to the principal whose signature was verified;
    ``trusted`` is true only then.
    """

    def __init__(self, identity_paths=(), trusted_signers=None, signer_keys=()):
        self.identity_paths = list(identity_paths or [])
        self.trusted_signers = trusted_signers or None
        self.signer_keys = [signer_key(text, index) for index, text in enumerate(signer_keys or [])]
        if self.trusted_signers and self.signer_keys:
            raise TrustError(
                "trusted_signers and trusted_signer_keys are both set; give the keys in one of them. "
                "Nothing was changed"
            )
        self.identities = load_identities(self.identity_paths)
        self.signer = None

    @classmethod
    def from_params(cls, params):
        return cls(params.get("decrypt_identities"), params.get("trusted_signers"), params.get("trusted_signer_keys"))

    @property
    def checks_signature(self):
        """Whether a bundle must be signed by a trusted key (trusted_signers or trusted_signer_keys)."""
        return bool(self.trusted_signers or self.signer_keys)

    @property
    def signers_label(self):
        return self.trusted_signers or "trusted_signer_keys"

    def verify(self, data, signature, bundle_dir):
        """The trusted principal whose key signed ``data`` (see ``verify``). The keys of trusted_signer_keys
        are written, for this check only, to an allowed_signers file in a private temporary directory, each
        as principal C(trusted-signer-<n>)."""
        if self.trusted_signers:
            return verify(self.trusted_signers, data, signature, bundle_dir)
        with tempfile.TemporaryDirectory(prefix="ferry-signers-") as tmp:
            path = os.path.join(tmp, "allowed_signers")
            with open(path, "w", encoding="ascii") as f:
                for index, key in enumerate(self.signer_keys):
                    f.write(f'trusted-signer-{index} namespaces="{NAMESPACE}" {key}\n')
            return verify(path, data, signature, bundle_dir, label="trusted_signer_keys")

    @property
    def trusted(self):
        return self.signer is not None
