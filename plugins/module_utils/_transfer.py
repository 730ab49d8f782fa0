# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The direct transfer of a bundle directory: rsync over SSH with a run's key, in one place.

The transfer role runs it as a task (through the filter ferry.docker.transfer_rsync_argv), and
docker_migrate_source runs it in its own process for a small bundle, right after the capture. Both give
rsync the same arguments: streamed, resumable (``--partial``), every file checked against a whole-file
checksum, every received directory 0700, host keys checked against the run's known_hosts file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shlex
import subprocess
import threading

RSYNC_IO_TIMEOUT = 120  # seconds without a byte moving before rsync gives up
SSH_CONNECT_TIMEOUT = 15
_SENT = re.compile(r"Total bytes sent: ([0-9][0-9,.]*)")
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_LOADED_ID = re.compile(r"^Loaded image ID: (sha256:[0-9a-f]{64})$", re.MULTILINE)
_LOADED_REF = re.compile(r"^Loaded image: (\S+)$", re.MULTILINE)
_TAIL = 600  # characters of a remote command's stderr kept for a message


CONTROL_PERSIST_SECONDS = 30

# OpenSSH's default ciphers with AES-GCM first. OpenSSH puts chacha20-poly1305 first because it is fast and
# constant-time without AES instructions; with them, AES-GCM moves a GB with about half the CPU on each end.
AES_FIRST = (
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr"
)


def has_aes(cpuinfo=None):
    """Whether this host's CPU has AES instructions: ``aes`` among the flags (x86) or features (arm64) of
    ``cpuinfo`` (the text of /proc/cpuinfo, read when not given; unreadable: False)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _sep, value = line.partition(":")
        if key.strip() in ("flags", "Features") and "aes" in value.split():
            return True
    return False


@functools.lru_cache(maxsize=1)
def _local_aes():
    return has_aes()


def cipher_options(aes):
    """ssh's options for the run's bulk data: AES-GCM first where the CPU has AES instructions (``aes``), else
    OpenSSH's own order (none given)."""
    return ["-o", f"Ciphers={AES_FIRST}"] if aes else []


def ssh_command(key_dir, port, shared=False):
    """The ssh command rsync runs (``--rsh``): the run's key only, host keys from the run's known_hosts.

    ``shared``: the connections of one module process and the next ones share one SSH connection per target
    (a control socket in the run's key directory, kept CONTROL_PERSIST_SECONDS after its last use), so a
    pass or a send while the source is stopped does not pay for a new handshake. Such a connection is made
    by a module on the sending host, which carries the volumes and the image: it prefers AES-GCM when that
    host's CPU has AES instructions (``cipher_options``)."""
    control = (
        [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={key_dir}/cm-%h-%p",
            "-o",
            f"ControlPersist={CONTROL_PERSIST_SECONDS}",
            *cipher_options(_local_aes()),
        ]
        if shared
        else []
    )
    return [
        "ssh",
        *control,
        "-i",
        f"{key_dir}/id_ed25519",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={SSH_CONNECT_TIMEOUT}",
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=6",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={key_dir}/known_hosts",
        "-p",
        str(int(port)),
    ]


def rsync_argv(key_dir, port, src_dir, user, address, dest_dir, shared=False):
    """rsync's arguments (without the program) to push ``src_dir`` into ``dest_dir`` on ``user@address``."""
    ssh = ssh_command(key_dir, port, shared)
    return [
        "--archive",
        "--info=progress2",
        "--outbuf=L",
        "--partial",
        "--stats",
        "--mkpath",
        "--chmod=Dgo-rwx",  # every directory it receives 0700, the top one too (the sender's may be 0755)
        f"--timeout={RSYNC_IO_TIMEOUT}",
        "--rsh",
        " ".join(shlex.quote(part) for part in ssh),  # rsync splits it on spaces and honours quotes
        f"{src_dir.rstrip('/')}/",
        f"{user}@{address}:{dest_dir.rstrip('/')}/",
    ]


def sent_bytes(stats):
    """The bytes rsync sent, from its ``--stats`` output (0 when it does not say)."""
    found = _SENT.search(stats or "")
    return int(found.group(1).replace(",", "").replace(".", "")) if found else 0


def child_environment():
    """This process's environment without the run's marker: the shared SSH connection outlives the step that
    opened it, and the guard must not take it for a step of the run that still works."""
    return {k: v for k, v in os.environ.items() if k != "FERRY_MIGRATE_RUN"}


class SendFailed(Exception):
    """rsync failed; the message names the destination and rsync's last words."""


def send(key_dir, port, src_dir, user, address, dest_dir, timeout, run=subprocess.run):
    """Push ``src_dir`` with rsync; the bytes sent. Raises SendFailed."""
    where = f"{user}@{address}:{dest_dir}"
    try:
        done = _quietly(
            ["rsync", *rsync_argv(key_dir, port, src_dir, user, address, dest_dir, shared=True)], timeout, run
        )
    except subprocess.TimeoutExpired:
        raise SendFailed(f"sending {src_dir} to {where} took more than {timeout} s") from None
    except OSError as exc:
        raise SendFailed(f"rsync could not run on this host to send {src_dir} to {where}: {exc}") from None
    if done.returncode != 0:
        last = " | ".join(line.strip() for line in (done.stderr or "").strip().splitlines()[-3:])
        raise SendFailed(f"sending {src_dir} to {where} failed (rsync exit {done.returncode}): {last}")
    return sent_bytes(done.stdout)


KEYGEN_SECONDS = 60


def make_key_pair(key_dir, comment, run=subprocess.run, timeout=KEYGEN_SECONDS):
    """The run's ed25519 key pair in ``key_dir`` (``id_ed25519``, no passphrase, made with ``comment``; a pair
    already there is kept), every directory made for it private (0700) and the key 0600: its public key line.
    Raises OSError with why it could not."""
    private = os.path.join(key_dir, "id_ed25519")
    old = os.umask(0o077)
    try:
        os.makedirs(key_dir, exist_ok=True)
        if not os.path.lexists(private):
            argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", private]
            try:
                done = _quietly(argv, timeout, run)
            except subprocess.TimeoutExpired:
                raise OSError(f"ssh-keygen took more than {timeout} s") from None
            if done.returncode != 0:
                raise OSError(f"ssh-keygen failed (exit {done.returncode}): {_tail(done.stderr)}")
    finally:
        os.umask(old)
    with open(private + ".pub", encoding="ascii") as handle:
        return handle.read(4096).strip()


def _quietly(argv, timeout, run):
    """``run(argv)`` with its output captured as text, without the run's marker in its environment."""
    return run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=child_environment())


def _tail(text):
    return " | ".join(line.strip() for line in (text or "").strip().splitlines()[-3:])[-_TAIL:]


def remote_argv(key_dir, port, user, address, command):
    """ssh over the run's shared connection to ``user@address``, running ``command`` (a string) there."""
    return [*ssh_command(key_dir, port, shared=True), f"{user}@{address}", command]


_HAS_ZSTD = "if command -v zstd >/dev/null 2>&1; then echo zstd=yes; else echo zstd=no; fi"


def _ask(key_dir, port, user, address, command, what, timeout, run):
    """``command`` run on ``address`` over the run's shared connection (its completed process); SendFailed when ssh
    cannot run or ``timeout`` passes, naming ``what`` was asked."""
    where = f"{user}@{address}"
    try:
        return _quietly(remote_argv(key_dir, port, user, address, command), timeout, run)
    except subprocess.TimeoutExpired:
        raise SendFailed(f"asking {where} whether {what} took more than {timeout} s") from None
    except OSError as exc:
        raise SendFailed(f"ssh could not run on this host to reach {where}: {exc}") from None


def probe_unpack(key_dir, port, user, address, timeout=60, run=subprocess.run):
    """What the host ``address`` unpacks an image stream with: ``"zstd"`` when it has the program, else ``"none"``.
    Raises SendFailed when the host cannot be asked."""
    where = f"{user}@{address}"
    done = _ask(key_dir, port, user, address, _HAS_ZSTD, "it has zstd", timeout, run)
    answer = (done.stdout or "").strip()
    if done.returncode == 0 and answer in ("zstd=yes", "zstd=no"):
        return "zstd" if answer == "zstd=yes" else "none"
    raise SendFailed(
        f"could not ask {where} whether it has zstd (exit {done.returncode}): {_tail(done.stderr or done.stdout)}"
    )


def probe_target(key_dir, port, user, address, image_id, timeout=60, run=subprocess.run):
    """What the host ``address`` has for an image stream, in one round trip: ``(image_id or "", zstd)``, the image
    when its engine has it, and whether ``zstd`` is there to unpack the stream. Raises SendFailed when the host
    cannot be asked (ssh fails, or docker answers something else)."""
    if not _IMAGE_ID.match(image_id or ""):
        raise ValueError(f"{image_id!r} is not an image ID (sha256:<64 hexadecimal digits>)")
    where = f"{user}@{address}"
    command = f"{_HAS_ZSTD}; docker image inspect --format '{{{{.Id}}}}' {image_id} 2>&1 || true"
    done = _ask(key_dir, port, user, address, command, f"it has image {image_id}", timeout, run)
    first, _sep, answer = (done.stdout or "").partition("\n")
    answer = answer.strip()
    if done.returncode == 0 and first.startswith("zstd="):
        zstd = first.strip() == "zstd=yes"
        if answer == image_id:
            return image_id, zstd
        if "no such image" in answer.lower():
            return "", zstd
    raise SendFailed(
        f"could not ask the engine on {where} whether it has image {image_id} (exit {done.returncode}): "
        + _tail(done.stderr or done.stdout)
    )


def remove_remote_image(key_dir, port, user, address, image_id, timeout=60, run=subprocess.run):
    """Remove the image ``image_id`` (an ID, never a name) from the engine on ``address`` unless a container uses it;
    ``""`` when it is gone, else why not."""
    if not _IMAGE_ID.match(image_id or ""):
        return f"{image_id!r} is not an image ID"
    command = f"docker image rm {image_id} >/dev/null 2>&1; ! docker image inspect {image_id} >/dev/null 2>&1"
    try:
        done = _quietly(remote_argv(key_dir, port, user, address, command), timeout, run)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return f"removing it failed: {exc}"
    return "" if done.returncode == 0 else f"it is still there (exit {done.returncode}: {_tail(done.stderr)})"


class RemoteLoad:
    """``docker load`` on another host, fed through the run's shared SSH connection: ``write`` the archive (a
    ``docker save`` stream, raw or gzip, or zstd with ``unpack="zstd"``; each byte is hashed as it goes), then
    ``finish()``. Nothing is staged on either disk.

    ``finish()`` returns the image IDs the engine there says it loaded; an archive of an image without a tag
    loads without one, so nothing on that host refers to the image before it is checked. ``timeout`` bounds the
    whole load: past it the ssh process is killed. ``abort()`` kills it (safe to call twice)."""

    def __init__(self, key_dir, port, user, address, timeout, unpack="", popen=subprocess.Popen):
        self.where = f"{user}@{address}"
        self.timeout = timeout
        self.bytes = 0
        self._sha256 = hashlib.sha256()
        self._out, self._err = [], []
        self._timed_out = False
        try:
            self._proc = popen(
                # docker load unpacks gzip itself; zstd (which it does not read before Docker 25) goes through zstd
                remote_argv(
                    key_dir, port, user, address, "zstd -dc | docker load" if unpack == "zstd" else "docker load"
                ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_environment(),
            )
        except OSError as exc:
            raise SendFailed(f"ssh could not run on this host to reach {self.where}: {exc}") from None
        self._readers = [
            threading.Thread(target=self._drain, args=(self._proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(self._proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._watchdog = threading.Timer(timeout, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    @staticmethod
    def _drain(pipe, into):
        for data in iter(lambda: pipe.read(65536), b""):
            into.append(data)

    def _expire(self):
        self._timed_out = True
        self._kill()

    def _kill(self):
        if self._proc.poll() is None:
            self._proc.kill()

    @property
    def sha256(self):
        return self._sha256.hexdigest()

    def _said(self, parts):
        return b"".join(parts).decode("utf-8", "replace")

    def _failure(self, what):
        if self._timed_out:
            return SendFailed(f"docker load on {self.where} took more than {self.timeout} s; it was stopped")
        return SendFailed(f"docker load on {self.where} {what}: {_tail(self._said(self._err)) or 'no message'}")

    def write(self, data):
        if not data:
            return
        self._sha256.update(data)
        self.bytes += len(data)
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, ValueError):
            self._finish_process()
            raise self._failure(f"stopped reading after {self.bytes} bytes") from None

    def _finish_process(self):
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        self._proc.wait()
        self._watchdog.cancel()
        for reader in self._readers:
            reader.join(timeout=10)  # the pipes close with ssh; a child that kept them open is not waited for

    def finish(self):
        """Close the stream and wait for the load; the image IDs it loaded. Raises SendFailed."""
        self._finish_process()
        if self._timed_out or self._proc.returncode != 0:
            raise self._failure(f"failed (exit {self._proc.returncode})")
        said = self._said(self._out)
        ids = _LOADED_ID.findall(said)
        if not ids and _LOADED_REF.search(said):
            raise SendFailed(f"docker load on {self.where} loaded a tagged image ({_tail(said)}); expected none")
        return ids

    def abort(self):
        self._watchdog.cancel()
        self._kill()
        try:
            self._finish_process()
        except OSError:
            pass
