# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The health state machine fed with inspect-shaped snapshots, and the log tail shown on failure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _health as h

T0 = "2026-11-30T05:00:00.000000001Z"
T1 = "2026-11-30T05:00:03.000000001Z"


def inspect(status="running", restarts=0, started=T0, health=None, exit_code=0, output="", **state):
    """A `docker inspect` result with only the fields the watch reads (and an env it must not show)."""
    data = {
        "Id": "c0ffee",
        "RestartCount": restarts,
        "Config": {"Env": ["DB_PASSWORD=hunter2hunter2"]},
        "State": {
            "Status": status,
            "Running": status in ("running", "restarting", "paused"),
            "Restarting": status == "restarting",
            "Paused": status == "paused",
            "StartedAt": started,
            "ExitCode": exit_code,
            **state,
        },
    }
    if health is not None:
        data["State"]["Health"] = {"Status": health, "Log": [{"Output": output}] if output else []}
    return data


def run(snapshots, stable=10, step=1.0):
    """Feed (time, inspect) pairs; return the verdicts and the watch."""
    watch = h.HealthWatch("db", stable)
    verdicts = [watch.feed(h.Snapshot.from_inspect(data), at * step) for at, data in enumerate(snapshots)]
    return verdicts, watch


# --------------------------------------------------------------------------------------------- snapshots


def test_snapshot_reads_state_and_never_the_config():
    snap = h.Snapshot.from_inspect(inspect(health="unhealthy", output=" no answer \n", OOMKilled=True))
    assert (snap.status, snap.running, snap.health, snap.health_output, snap.oom_killed) == (
        "running",
        True,
        "unhealthy",
        "no answer",
        True,
    )
    assert "hunter2" not in repr(snap.as_dict())
    assert h.Snapshot.from_inspect(None) == h.Snapshot(exists=False)
    assert h.Snapshot.from_inspect(inspect()).as_dict()["health"] == "none"


# --------------------------------------------------------------------------------------- no healthcheck


def test_running_without_healthcheck_is_up_only_after_the_stable_window():
    verdicts, watch = run([inspect()] * 12, stable=10)
    assert verdicts[:10] == [h.WAIT] * 10
    assert verdicts[10] == h.UP
    assert watch.status == h.STABLE


def test_zero_stable_seconds_means_running_once_is_enough():
    verdicts, watch = run([inspect()], stable=0)
    assert verdicts == [h.UP] and watch.status == h.STABLE


@pytest.mark.parametrize(
    "later, phrase",
    [
        (inspect(restarts=1, started=T1), "restart count 0 -> 1"),
        (inspect(restarts=0, started=T1), "started at"),  # restarted by hand: the count stays
        (inspect(status="restarting", restarts=1, exit_code=3), "it is restarting"),
    ],
)
def test_a_restart_inside_the_window_fails(later, phrase):
    verdicts, watch = run([inspect(), inspect(), later, inspect()], stable=10)
    assert verdicts[:3] == [h.WAIT, h.WAIT, h.FAILED]
    assert watch.status == h.RESTARTING
    assert phrase in watch.reason
    assert watch.reason.startswith("db did not become healthy: ")


def test_crash_loop_is_caught_however_it_is_seen():
    # The engine shows a crash-looping container running (between restarts) or restarting.
    loop = [
        inspect(restarts=2, started=T0),
        inspect(status="restarting", restarts=2, exit_code=1),
    ]
    verdicts, watch = run(loop)
    assert verdicts == [h.WAIT, h.FAILED] and watch.status == h.RESTARTING
    assert "exit code 1" in watch.reason


@pytest.mark.parametrize(
    "data, status, phrase",
    [
        (None, h.MISSING, "does not exist"),
        (inspect(status="exited", exit_code=1), h.EXITED, "it is exited (exit code 1)"),
        (inspect(status="dead", exit_code=137, OOMKilled=True), h.EXITED, "lack of memory"),
        (inspect(status="exited", exit_code=127, Error="exec: not found"), h.EXITED, "error: exec: not found"),
    ],
)
def test_gone_or_stopped_fails_at_once(data, status, phrase):
    verdicts, watch = run([data])
    assert verdicts == [h.FAILED]
    assert watch.status == status and phrase in watch.reason


def test_created_and_paused_wait_and_restart_the_window():
    snaps = [inspect(status="created", started="0001-01-01T00:00:00Z")] + [inspect()] * 3
    snaps += [inspect(status="paused")] + [inspect()] * 4
    verdicts, _watch = run(snaps, stable=3)
    assert verdicts == [h.WAIT] * 4 + [h.WAIT] * 4 + [h.UP]


# ------------------------------------------------------------------------------------------ healthcheck


def test_healthcheck_healthy_is_up_without_waiting_for_the_window():
    verdicts, watch = run([inspect(health="starting"), inspect(health="healthy")], stable=10)
    assert verdicts == [h.WAIT, h.UP] and watch.status == h.HEALTHY


def test_healthcheck_unhealthy_fails_with_the_last_check():
    verdicts, watch = run([inspect(health="starting"), inspect(health="unhealthy", output="refused")])
    assert verdicts == [h.WAIT, h.FAILED]
    assert watch.status == h.UNHEALTHY and "last check: refused" in watch.reason


def test_healthcheck_restart_before_healthy_fails():
    verdicts, watch = run([inspect(health="starting"), inspect(health="starting", restarts=1, started=T1)])
    assert verdicts == [h.WAIT, h.FAILED] and watch.status == h.RESTARTING


# -------------------------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize(
    "last, phrase",
    [
        (inspect(health="starting", output="not yet"), "its health is still starting, last check: not yet"),
        (inspect(), "did not stay running for 10 s"),
        (inspect(status="created"), "it is still created"),
        (inspect(status="paused"), "it is paused"),
    ],
)
def test_timeout_says_what_was_still_missing(last, phrase):
    _verdicts, watch = run([last])
    assert watch.timeout(30) == h.FAILED
    assert watch.status == h.TIMEOUT
    assert phrase in watch.reason and watch.reason.endswith("after 30 s")


def test_negative_window_is_refused():
    with pytest.raises(ValueError):
        h.HealthWatch("db", -1)


@given(
    st.lists(
        st.sampled_from(["running", "restart", "restarting", "paused", "created"]),
        min_size=1,
        max_size=30,
    ),
    st.integers(min_value=0, max_value=5),
)
def test_up_only_after_an_unbroken_running_window(events, stable):
    """Property: UP without a healthcheck needs `stable` seconds of running with one (count, start)."""
    restarts = 0
    snaps = []
    for event in events:
        if event == "restart":
            restarts += 1
            snaps.append(inspect(restarts=restarts, started=f"t{restarts}"))
        elif event == "running":
            snaps.append(inspect(restarts=restarts, started=f"t{restarts}"))
        else:
            snaps.append(inspect(status=event, restarts=restarts, started=f"t{restarts}"))
    verdicts, _watch = run(snaps, stable=stable)
    # The module stops at the first verdict that is not WAIT.
    decided = next((i for i, verdict in enumerate(verdicts) if verdict != h.WAIT), len(verdicts))
    verdicts = verdicts[: decided + 1]
    if h.UP in verdicts:
        end = verdicts.index(h.UP)
        window = snaps[end - stable : end + 1] if stable else [snaps[end]]
        assert len(window) == stable + 1
        assert all(s["State"]["Status"] == "running" for s in window)
        assert len({(s["RestartCount"], s["State"]["StartedAt"]) for s in window}) == 1
    if "restarting" in events and decided >= events.index("restarting"):
        assert verdicts[-1] == h.FAILED


# --------------------------------------------------------------------------------------------- log tail


def test_log_tail_keeps_the_last_lines_and_masks_secrets():
    raw = b"".join(b"line %d\n" % n for n in range(30)) + b"password is hunter2hunter2\r\n\n"
    tail = h.log_tail(raw, ["DB_PASSWORD=hunter2hunter2", "PATH=/usr/bin", "API_KEY=abc"], lines=20)
    assert len(tail) == 20
    assert tail[0] == "line 11"
    assert tail[-1] == "password is ********"


def test_log_tail_cleans_up_terminal_output():
    raw = "\x1b[31mFATAL\x1b[0m: bad\rprogress 100%\n" + "x" * 5000 + "\n" + "\udcff"
    tail = h.log_tail(raw.encode("utf-8", "surrogateescape"), lines=5)
    assert tail[:2] == ["FATAL: bad", "progress 100%"]
    assert tail[2].endswith(" [...]") and len(tail[2]) == h.MAX_LINE + len(" [...]")
    assert tail[3] == "\ufffd"
    assert h.log_tail(b"", lines=20) == [] and h.log_tail(b"a\n", lines=0) == []


def test_failure_message_lists_the_log():
    assert (
        h.failure_message("db did not become healthy: x", [], 20) == "db did not become healthy: x. Its log is empty."
    )
    message = h.failure_message("db did not become healthy: x", ["a", "b"], 20)
    assert message == "db did not become healthy: x. Last 2 line(s) of its log:\na\nb"


# -- the watch loop's pause: woken by the engine's events (EngineWake) -------------------------------------------


class EventClient:
    """``events()`` as the SDK gives it: a stream that yields what the test puts in, until it is closed."""

    def __init__(self, fail=False):
        import queue

        self.fail = fail
        self.asked = None
        self.queue = queue.Queue()
        self.closed = False

    def events(self, **kwargs):
        if self.fail:
            raise RuntimeError("404 page not found")
        self.asked = kwargs
        client = self

        class Stream:
            def __iter__(self):
                while True:
                    item = client.queue.get()
                    if item is None:
                        raise OSError("the stream was closed")
                    yield item

            def close(self):
                client.closed = True
                client.queue.put(None)

        return Stream()


def test_an_event_of_a_watched_container_ends_the_pause_at_once():
    import threading
    import time

    from ansible_collections.ferry.docker.plugins.module_utils._step_health import EngineWake

    client = EventClient()
    wake = EngineWake(client, ["web"], until=1000.4)
    assert client.asked == {"decode": True, "filters": {"type": "container", "container": ["web"]}, "until": 1001}
    threading.Timer(0.05, client.queue.put, [{"Action": "health_status: healthy"}]).start()
    began = time.monotonic()
    wake.pause(5)
    assert time.monotonic() - began < 2  # woken by the event, not after the 5 s
    # without an event the pause lasts its time
    began = time.monotonic()
    wake.pause(0.2)
    assert 0.15 < time.monotonic() - began < 2
    wake.close()
    assert client.closed


def test_without_an_event_stream_the_pause_is_a_sleep():
    from ansible_collections.ferry.docker.plugins.module_utils._step_health import EngineWake

    slept = []
    wake = EngineWake(EventClient(fail=True), ["web"], until=1000, sleep=slept.append)
    wake.pause(0.25)
    wake.pause(0)
    wake.close()
    assert slept == [0.25]
