# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""The work of M(ferry.docker.docker_container_health): ``SPEC`` and ``KWARGS`` (its argument spec), ``run(module)``.

The module file runs it in its own process; ``docker_bundle_restore`` runs it in its process, one step
after another (``_steps``).
"""

from __future__ import annotations

import threading
import time

from ansible_collections.ferry.docker.plugins.module_utils._client import DockerException
from ansible_collections.ferry.docker.plugins.module_utils._health import (
    FAILED,
    UP,
    HealthWatch,
    Snapshot,
    failure_message,
    log_tail,
)
from ansible_collections.ferry.docker.plugins.module_utils._restore import RequestException, inspect_or_none


def read_log_tail(client, container, inspect, lines):
    """The container's last log lines, or one line saying why they cannot be read."""
    if lines <= 0 or not container:
        return []
    env = ((inspect or {}).get("Config") or {}).get("Env") or []
    try:
        raw = client.logs(container, stdout=True, stderr=True, tail=lines, timestamps=False)
    except (DockerException, RequestException) as exc:
        return [f"(its log cannot be read: {exc})"]
    return log_tail(raw, env, lines)


class EngineWake:
    """The watch loop's pause between two looks: it ends at once when the engine reports an event of a watched
    container (its health check's result, a start, an end), instead of at the next poll; each look still reads
    the container's state, which alone decides. A container whose health check passed is then seen within
    milliseconds, not up to ``interval`` later: that is outage after a migration. Without an event stream (one
    that cannot be opened, or that ends) it is a plain sleep. ``close()`` ends the stream."""

    def __init__(self, client, names, until, sleep=time.sleep):
        self._woken = threading.Event()
        self._sleep = sleep
        self._stream = None
        try:
            self._stream = client.events(
                decode=True, filters={"type": "container", "container": list(names)}, until=int(until) + 1
            )
        except Exception:  # the SDK's errors, an engine without the call: poll only
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for _event in self._stream:
                self._woken.set()
        except Exception:  # the stream closed (close(), the engine, the client's timeout): poll only
            pass

    def pause(self, seconds):
        if seconds <= 0:
            return
        if self._stream is None:
            self._sleep(seconds)
            return
        self._woken.wait(seconds)
        self._woken.clear()

    def close(self):
        stream, self._stream = self._stream, None
        if stream is not None and hasattr(stream, "close"):
            try:
                stream.close()
            except Exception:  # already closed
                pass


def watch_many(fm, client, p):
    """O(names): every container watched in the same loop, each until it is up or has failed."""
    watches = {name: HealthWatch(name, p["stable_seconds"]) for name in p["names"]}
    verdicts, inspects = {}, {}
    started = time.monotonic()
    deadline = started + p["timeout"]
    checks = 0
    wake = EngineWake(client, p["names"], time.time() + p["timeout"])
    try:
        while len(verdicts) < len(watches):
            now = time.monotonic()
            checks += 1
            for name, watch in watches.items():
                if name in verdicts:
                    continue
                inspects[name] = inspect_or_none(client.inspect_container, name)
                verdict = watch.feed(Snapshot.from_inspect(inspects[name]), time.monotonic())
                if verdict != UP and verdict != FAILED and now >= deadline:
                    verdict = watch.timeout(p["timeout"])
                if verdict in (UP, FAILED):
                    verdicts[name] = verdict
            if len(verdicts) < len(watches):
                wake.pause(max(0.0, min(p["interval"], deadline - time.monotonic())))
    except (DockerException, RequestException) as exc:
        fm.fail(f"watching containers {', '.join(p['names'])} failed at the Docker engine: {exc}", checks=checks)
    finally:
        wake.close()
    containers = {}
    for name, watch in watches.items():
        up = verdicts.get(name) == UP
        entry = {"status": watch.status, "up": up, "reason": "" if up else watch.reason, "log_tail": []}
        if not up:
            inspect = inspects.get(name)
            container = (inspect or {}).get("Id") or (name if inspect is not None else "")
            entry["log_tail"] = read_log_tail(client, container, inspect, p["log_lines"])
        containers[name] = entry
    result = dict(changed=False, containers=containers, waited=round(time.monotonic() - started, 3), checks=checks)
    down = [name for name, entry in containers.items() if not entry["up"]]
    if down:
        fm.fail(
            "; ".join(
                f"{name}: {failure_message(containers[name]['reason'], containers[name]['log_tail'], p['log_lines'])}"
                for name in down
            ),
            **result,
        )
    fm.exit(**result)


SPEC = dict(
    name=dict(type="str"),
    names=dict(type="list", elements="str"),
    timeout=dict(type="int", default=120),
    stable_seconds=dict(type="int", default=10),
    interval=dict(type="float", default=1.0),
    log_lines=dict(type="int", default=20),
)
KWARGS = dict(
    supports_check_mode=True,
    required_one_of=[("name", "names")],
    mutually_exclusive=[("name", "names")],
)


def run(fm):
    """The module's work, given its FerryModule (or a _steps.StepModule inside another module's process)."""
    p = fm.params
    name = p["name"]
    if p["stable_seconds"] < 0 or p["timeout"] < p["stable_seconds"]:
        fm.fail(
            f"timeout ({p['timeout']}) must be at least stable_seconds ({p['stable_seconds']}), and neither "
            "negative: a container without a healthcheck needs stable_seconds of the timeout to count as up"
        )
    if p["interval"] <= 0:
        fm.fail(f"interval must be more than 0 seconds, not {p['interval']}")
    client = fm.client
    if p["names"] is not None:
        watch_many(fm, client, p)
    watch = HealthWatch(name, p["stable_seconds"])
    started = time.monotonic()
    deadline = started + p["timeout"]
    checks = 0
    inspect = None
    wake = EngineWake(client, [name], time.time() + p["timeout"])
    try:
        while True:
            inspect = inspect_or_none(client.inspect_container, name)
            now = time.monotonic()
            checks += 1
            verdict = watch.feed(Snapshot.from_inspect(inspect), now)
            if verdict == UP:
                break
            if verdict != FAILED and now >= deadline:
                verdict = watch.timeout(p["timeout"])
            if verdict == FAILED:
                break
            wake.pause(max(0.0, min(p["interval"], deadline - now)))
    except (DockerException, RequestException) as exc:
        fm.fail(f"watching container {name} failed at the Docker engine: {exc}", checks=checks)
    finally:
        wake.close()
    result = dict(
        changed=False,
        status=watch.status,
        state=watch.last.as_dict(),
        log_tail=[],
        waited=round(time.monotonic() - started, 3),
        checks=checks,
    )
    if verdict == UP:
        fm.exit(**result)
    container = (inspect or {}).get("Id") or (name if inspect is not None else "")
    result["log_tail"] = read_log_tail(client, container, inspect, p["log_lines"])
    fm.fail(failure_message(watch.reason, result["log_tail"], p["log_lines"]), **result)
