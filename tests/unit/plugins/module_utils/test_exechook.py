# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Hooks run inside containers: argv, when they can run, the exec stream read with a deadline."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _exechook as x


def frame(stream, data):
    return struct.pack(">BxxxL", stream, len(data)) + data


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("redis-cli BGSAVE", ["sh", "-c", "redis-cli BGSAVE"]),
        (["pg_dump", "-f", "/dump.sql"], ["pg_dump", "-f", "/dump.sql"]),
    ],
)
def test_hook_argv(command, argv):
    assert x.hook_argv(command) == argv


@pytest.mark.parametrize("command", ["", "   ", [], [1, 2], None, {"cmd": "x"}])
def test_hook_argv_rejects(command):
    with pytest.raises(ValueError, match="hook command"):
        x.hook_argv(command)


@pytest.mark.parametrize(
    ("state", "runnable", "why"),
    [
        ({"Running": True, "Status": "running"}, True, ""),
        ({"Running": True, "Paused": True, "Status": "paused"}, False, "paused"),
        ({"Running": False, "Status": "exited"}, False, "not running (exited)"),
        ({}, False, "not running (unknown state)"),
    ],
)
def test_hook_state(state, runnable, why):
    ok, reason = x.hook_state({"State": state})
    assert ok is runnable
    assert why in reason


def test_read_output_demultiplexes_and_ends_with_the_stream():
    a, b = socket.socketpair()
    try:
        b.sendall(frame(1, b"out one\n") + frame(2, b"err\n") + frame(1, b"out two\n"))
        b.shutdown(socket.SHUT_WR)
        assert x.read_output(a, deadline=time.monotonic() + 3600) == (b"out one\nout two\n", b"err\n")
    finally:
        a.close()
        b.close()


@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=300)), max_size=20), st.integers(1, 97))
def test_read_output_any_framing_and_split(frames, cut):
    """However the bytes arrive, each stream is the concatenation of its frames, cut to its tail."""
    data = b"".join(frame(s, d) for s, d in frames)
    a, b = socket.socketpair()

    def send():
        # in a thread of its own, as an engine writes while the hook reads: thousands of one-byte sends hold
        # a buffer each, and a socketpair's send buffer fills long before the data is all written
        for i in range(0, len(data), cut):
            b.sendall(data[i : i + cut])
        b.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        out, err = x.read_output(a, deadline=time.monotonic() + 60, limit=500)
        sender.join(60)
    finally:
        a.close()
        b.close()
    assert out == b"".join(d for s, d in frames if s == 1)[-500:]
    assert err == b"".join(d for s, d in frames if s == 2)[-500:]


def test_read_output_times_out_when_the_stream_does_not_end():
    a, b = socket.socketpair()
    try:
        b.sendall(frame(1, b"still working\n"))
        with pytest.raises(x.HookTimeout):
            x.read_output(a, deadline=0.0, clock=lambda: 1.0)
    finally:
        a.close()
        b.close()


class FakeClient:
    """exec_create/exec_start/exec_inspect over a socketpair; the test plays the engine's side."""

    def __init__(self, payload, inspect, end=True):
        self.ours, self.engine = socket.socketpair()
        self.engine.sendall(payload)
        if end:
            self.engine.shutdown(socket.SHUT_WR)
        self.inspects = list(inspect)
        self.created = None

    def exec_create(self, container, cmd, **kwargs):
        self.created = (container, cmd, kwargs)
        return {"Id": "e1"}

    def exec_start(self, exec_id, **kwargs):
        assert kwargs["socket"] is True
        return self.ours

    def exec_inspect(self, exec_id):
        return self.inspects.pop(0) if len(self.inspects) > 1 else self.inspects[0]

    def close(self):
        self.engine.close()


def test_run_exec_ok_waits_for_the_exit_code():
    client = FakeClient(frame(1, b"saved\n"), [{"Running": True}, {"Running": False, "ExitCode": 0}])
    try:
        result = x.run_exec(client, "redis", ["sh", "-c", "true"], 30, user="redis", sleep=lambda s: None)
    finally:
        client.close()
    assert result["status"] == "ok"
    assert result["rc"] == 0
    assert result["stdout"] == b"saved\n"
    assert client.created == (
        "redis",
        ["sh", "-c", "true"],
        {"stdout": True, "stderr": True, "tty": False, "user": "redis"},
    )


def test_run_exec_failed():
    client = FakeClient(frame(2, b"no such table\n"), [{"Running": False, "ExitCode": 3}])
    try:
        result = x.run_exec(client, "db", ["false"], 30)
    finally:
        client.close()
    assert (result["status"], result["rc"], result["stderr"]) == ("failed", 3, b"no such table\n")


def test_run_exec_timeout_on_a_remote_engine_kills_nothing():
    ticks = iter([0.0, 100.0, 100.0, 100.0])
    client = FakeClient(b"", [{"Running": True, "Pid": 4242}], end=False)
    try:
        result = x.run_exec(
            client, "db", ["sleep", "1000"], 30, base_url="tcp://10.0.0.1:2376", clock=lambda: next(ticks)
        )
    finally:
        client.close()
    assert result["status"] == "timeout"
    assert result["rc"] is None
    assert result["killed"] is False


@pytest.mark.parametrize(
    ("pid", "base_url", "exists", "expected"),
    [
        (0, "unix:///var/run/docker.sock", True, False),
        (4242, "tcp://host:2376", True, False),
        (4242, "unix:///var/run/docker.sock", False, False),
    ],
)
def test_kill_local_only_for_a_local_engine_and_a_live_pid(tmp_path, pid, base_url, exists, expected):
    if exists:
        (tmp_path / str(pid)).mkdir()
    assert x.kill_local(pid, base_url, proc_root=str(tmp_path)) is expected
