# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# This module_utils file is private to the ferry.docker collection. It may change without notice.

"""Whether a container that was just started is up: a state machine fed with ``docker inspect`` snapshots.

``Snapshot.from_inspect()`` reads the few fields that matter from an inspect result (never the
config or the environment). ``HealthWatch.feed()`` takes one snapshot at a time, with the time it
was taken, and answers WAIT, UP or FAILED:

- A container with a healthcheck is up when its health is ``healthy`` and failed when ``unhealthy``.
- A container without one is up only after it was seen running for ``stable_seconds`` with the same
  RestartCount and StartedAt; ``running`` at one instant proves nothing for a crash loop, because
  the engine reports a container waiting for its next restart as running.
- In both cases a container that restarts while watched (RestartCount or StartedAt changes, or the
  engine says ``restarting``), exits, dies or disappears has failed.

The caller (``docker_container_health``) polls, and turns a WAIT at its deadline into a timeout
with ``HealthWatch.timeout()``. ``log_tail()`` makes the last log lines safe to show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WAIT = "wait"
UP = "up"
FAILED = "failed"

# Final statuses, as returned by the module.
HEALTHY = "healthy"  # the healthcheck passed
STABLE = "running"  # no healthcheck; stayed running for the stable window
MISSING = "missing"
EXITED = "exited"
RESTARTING = "restarting"
UNHEALTHY = "unhealthy"
TIMEOUT = "timeout"

MAX_LINE = 1000  # characters kept of one log line
MASK = "********"
# Environment variables whose values are masked if they show up in a log line.
SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|CREDENTIAL|AUTH|PRIVATE|CERT", re.IGNORECASE)
MIN_SECRET = 4  # shorter values are too common to mask
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Snapshot:
    """The state fields of one ``docker inspect`` that decide health."""

    exists: bool
    status: str = ""
    running: bool = False
    restarting: bool = False
    paused: bool = False
    restart_count: int = 0
    started_at: str = ""
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    health: str | None = None  # None: the container has no healthcheck
    health_output: str = ""

    @classmethod
    def from_inspect(cls, inspect):
        """A snapshot from an inspect result, or of a missing container when ``inspect`` is None."""
        if inspect is None:
            return cls(exists=False)
        state = inspect.get("State") or {}
        health = state.get("Health") or None
        checks = (health or {}).get("Log") or []
        return cls(
            exists=True,
            status=str(state.get("Status") or ""),
            running=bool(state.get("Running")),
            restarting=bool(state.get("Restarting")),
            paused=bool(state.get("Paused")),
            restart_count=int(inspect.get("RestartCount") or 0),
            started_at=str(state.get("StartedAt") or ""),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
            health=str(health.get("Status") or "starting") if health else None,
            health_output=str((checks[-1] or {}).get("Output") or "").strip() if checks else "",
        )

    def as_dict(self):
        """The snapshot as the module returns it (RV(state))."""
        return dict(
            exists=self.exists,
            status=self.status,
            running=self.running,
            restarting=self.restarting,
            paused=self.paused,
            restart_count=self.restart_count,
            started_at=self.started_at,
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            error=self.error,
            health=self.health or "none",
            health_output=self.health_output,
        )


class HealthWatch:
    """Decides, snapshot by snapshot, whether a container is up, has failed, or needs more time."""

    def __init__(self, name, stable_seconds):
        if stable_seconds < 0:
            raise ValueError("stable_seconds must not be negative")
        self.name = name
        self.stable_seconds = stable_seconds
        self.baseline = None  # (RestartCount, StartedAt) of the first running snapshot
        self.running_since = None  # when that snapshot was taken
        self.last = None
        self.status = ""
        self.reason = ""

    def _fail(self, status, reason):
        self.status, self.reason = status, f"{self.name} did not become healthy: {reason}"
        return FAILED

    def _exit_text(self, snap):
        text = f"exit code {snap.exit_code}"
        if snap.oom_killed:
            text += ", killed for lack of memory"
        if snap.error:
            text += f", error: {snap.error}"
        return text

    def feed(self, snap, now):
        """WAIT, UP or FAILED for the snapshot ``snap`` taken at ``now`` (seconds, monotonic)."""
        self.last = snap
        if not snap.exists:
            return self._fail(MISSING, "the container does not exist (it was removed)")
        if snap.restarting or snap.status == "restarting":
            return self._fail(
                RESTARTING,
                f"it is restarting: it exited ({self._exit_text(snap)}) and its restart policy starts it again "
                f"(restarted {snap.restart_count} time(s) so far)",
            )
        if snap.status in ("exited", "dead") or (snap.status not in ("created", "paused") and not snap.running):
            return self._fail(EXITED, f"it is {snap.status or 'not running'} ({self._exit_text(snap)})")
        key = (snap.restart_count, snap.started_at)
        if snap.running and self.baseline is not None and key != self.baseline:
            return self._fail(
                RESTARTING,
                f"it restarted while it was watched (restart count {self.baseline[0]} -> {snap.restart_count}, "
                f"started at {self.baseline[1]} -> {snap.started_at}; last {self._exit_text(snap)})",
            )
        if snap.health == "unhealthy":
            output = f", last check: {snap.health_output}" if snap.health_output else ""
            return self._fail(UNHEALTHY, f"its healthcheck reports unhealthy{output}")
        if not snap.running or snap.paused:
            # created but not started yet, or paused: the stable window starts again.
            self.running_since = None
            return WAIT
        if self.baseline is None:
            self.baseline = key
        if self.running_since is None:
            self.running_since = now
        if snap.health is not None:
            if snap.health == "healthy":
                self.status, self.reason = HEALTHY, f"{self.name} is healthy"
                return UP
            return WAIT
        if now - self.running_since >= self.stable_seconds:
            self.status = STABLE
            self.reason = f"{self.name} has stayed running for {self.stable_seconds:g} s without a restart"
            return UP
        return WAIT

    def timeout(self, seconds):
        """FAILED, with the reason, for a container still undecided after ``seconds``."""
        snap = self.last
        if snap is None or not snap.running:
            what = f"it is still {snap.status if snap else 'unknown'}"
        elif snap.paused:
            what = "it is paused"
        elif snap.health is not None:
            output = f", last check: {snap.health_output}" if snap.health_output else ""
            what = f"its health is still {snap.health}{output}"
        else:
            what = f"it did not stay running for {self.stable_seconds:g} s"
        return self._fail(TIMEOUT, f"{what} after {seconds:g} s")


def secret_values(env):
    """Values of the environment variables (``NAME=value`` strings) whose names look like secrets."""
    values = set()
    for item in env or []:
        name, sep, value = str(item).partition("=")
        if sep and SECRET_NAME.search(name) and len(value) >= MIN_SECRET:
            values.add(value)
    return sorted(values, key=len, reverse=True)


def log_tail(raw, env=None, lines=20):
    """The last ``lines`` lines of a container's log output, safe to show.

    Decoded as UTF-8 (bad bytes replaced), carriage returns and terminal escapes removed, each line
    cut at MAX_LINE characters, and the values of secret-looking environment variables masked.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    text = ANSI_ESCAPE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    kept = [line.rstrip() for line in text.split("\n")]
    while kept and not kept[-1]:
        kept.pop()
    kept = kept[-lines:] if lines > 0 else []
    secrets = secret_values(env)
    result = []
    for line in kept:
        for secret in secrets:
            line = line.replace(secret, MASK)
        result.append(line if len(line) <= MAX_LINE else line[:MAX_LINE] + " [...]")
    return result


def failure_message(reason, tail, lines):
    """The module's failure message: the reason, then the log's last lines (or that it had none)."""
    if not tail:
        return f"{reason}. Its log is empty."
    return f"{reason}. Last {min(lines, len(tail))} line(s) of its log:\n" + "\n".join(tail)
