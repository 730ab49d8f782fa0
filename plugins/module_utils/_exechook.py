# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""A command run inside a container (a backup hook), with a deadline.

``docker exec`` has no timeout of its own, and the Docker SDK waits on its socket without one, so
``run_exec`` reads the multiplexed output stream itself with ``select`` and a deadline. Only the
last ``OUTPUT_LIMIT`` bytes of each stream are kept; ``ferry.docker.docker_container_exec_hook``
masks secret-looking environment values in what it shows.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import time

OUTPUT_LIMIT = 64 * 1024
HEADER = struct.Struct(">BxxxL")
STDOUT, STDERR = 1, 2


class HookTimeout(Exception):
    """The hook's output did not end before the deadline."""


def hook_argv(command):
    """The argv of a hook: a string runs with ``sh -c``, a list is the argv itself."""
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("the hook command is empty")
        return ["sh", "-c", command]
    if isinstance(command, (list, tuple)) and command and all(isinstance(a, str) for a in command):
        return list(command)
    raise ValueError("a hook command is a string (run with sh -c) or a non-empty list of strings (an argv)")


def hook_state(inspect):
    """Whether a hook can run in the container: ``(True, "")`` or ``(False, why not)``."""
    state = (inspect or {}).get("State") or {}
    if state.get("Paused"):
        return False, "the container is paused"
    if not state.get("Running"):
        return False, "the container is not running (%s)" % (state.get("Status") or "unknown state")
    return True, ""


def _recv(sock, deadline, clock):
    pending = getattr(sock, "pending", None)
    if not (pending and pending()):
        remaining = deadline - clock()
        if remaining <= 0:
            raise HookTimeout()
        ready, _w, _x = select.select([sock], [], [], remaining)
        if not ready:
            raise HookTimeout()
    if hasattr(sock, "recv"):
        return sock.recv(65536)
    return sock.read(65536)


def read_output(sock, deadline, clock=time.monotonic, limit=OUTPUT_LIMIT):
    """Read a multiplexed exec stream until it ends; return (stdout, stderr), each its last ``limit`` bytes.

    Raises HookTimeout when the stream has not ended by ``deadline`` (on ``clock``'s scale).
    """
    out = {STDOUT: bytearray(), STDERR: bytearray()}
    buf = bytearray()
    while True:
        chunk = _recv(sock, deadline, clock)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= HEADER.size:
            stream, length = HEADER.unpack_from(buf)
            if len(buf) < HEADER.size + length:
                break
            target = out[STDERR] if stream == STDERR else out[STDOUT]
            target += buf[HEADER.size : HEADER.size + length]
            del buf[: HEADER.size + length]
            if len(target) > limit:
                del target[:-limit]
    return bytes(out[STDOUT]), bytes(out[STDERR])


def _close(sock):
    for obj in (sock, getattr(sock, "_sock", None)):
        if obj is not None and hasattr(obj, "close"):
            try:
                obj.close()
            except OSError:
                pass


def kill_local(pid, base_url, proc_root="/proc"):
    """Kill the process of a timed-out exec when the engine runs on this host; True if signalled."""
    if not pid or not str(base_url).startswith("unix://") or not os.path.isdir(os.path.join(proc_root, str(pid))):
        return False
    try:
        os.kill(int(pid), signal.SIGKILL)
    except OSError:
        return False
    return True


def run_exec(client, container, argv, timeout, user=None, base_url="", clock=time.monotonic, sleep=time.sleep):
    """Run argv in container, waiting at most ``timeout`` seconds.

    Returns ``{"status": "ok"|"failed"|"timeout", "rc", "stdout", "stderr", "duration", "killed"}``;
    stdout and stderr are bytes (their tails).
    """
    started = clock()
    deadline = started + timeout
    exec_id = client.exec_create(container, argv, stdout=True, stderr=True, tty=False, user=user or "")["Id"]
    sock = client.exec_start(exec_id, detach=False, tty=False, socket=True)
    stdout = stderr = b""
    timed_out = False
    try:
        stdout, stderr = read_output(sock, deadline, clock)
    except HookTimeout:
        timed_out = True
    finally:
        _close(sock)
    info = client.exec_inspect(exec_id)
    # The stream can end a moment before the engine records the exit code.
    while not timed_out and info.get("Running") and clock() < deadline:
        sleep(0.1)
        info = client.exec_inspect(exec_id)
    if info.get("Running"):
        timed_out = True
    result = {
        "rc": None if timed_out else info.get("ExitCode"),
        "stdout": stdout,
        "stderr": stderr,
        "duration": round(clock() - started, 3),
        "killed": False,
    }
    if timed_out:
        result["status"] = "timeout"
        result["killed"] = kill_local(info.get("Pid"), base_url)
    else:
        result["status"] = "ok" if info.get("ExitCode") == 0 else "failed"
    return result
