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

import os
import re
import shlex
import subprocess

RSYNC_IO_TIMEOUT = 120  # seconds without a byte moving before rsync gives up
SSH_CONNECT_TIMEOUT = 15
_SENT = re.compile(r"Total bytes sent: ([0-9][0-9,.]*)")


CONTROL_PERSIST_SECONDS = 30


def ssh_command(key_dir, port, shared=False):
    """The ssh command rsync runs (``--rsh``): the run's key only, host keys from the run's known_hosts.

    ``shared``: the connections of one module process and the next ones share one SSH connection per target
    (a control socket in the run's key directory, kept CONTROL_PERSIST_SECONDS after its last use), so a
    pass or a send while the source is stopped does not pay for a new handshake."""
    control = (
        [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={key_dir}/cm-%h-%p",
            "-o",
            f"ControlPersist={CONTROL_PERSIST_SECONDS}",
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
        done = run(
            ["rsync", *rsync_argv(key_dir, port, src_dir, user, address, dest_dir, shared=True)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=child_environment(),
        )
    except subprocess.TimeoutExpired:
        raise SendFailed(f"sending {src_dir} to {where} took more than {timeout} s") from None
    except OSError as exc:
        raise SendFailed(f"rsync could not run on this host to send {src_dir} to {where}: {exc}") from None
    if done.returncode != 0:
        last = " | ".join(line.strip() for line in (done.stderr or "").strip().splitlines()[-3:])
        raise SendFailed(f"sending {src_dir} to {where} failed (rsync exit {done.returncode}): {last}")
    return sent_bytes(done.stdout)
