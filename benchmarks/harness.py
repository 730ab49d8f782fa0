# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The harness: the row registry, how a command is timed, and the statistics.

A row compares one of our commands with a baseline shell command on the same data. Subclass
``Row``, set its class attributes, implement ``command()`` (and the hooks it needs), and decorate
the class with ``@register``; ``run.py`` does the rest. Per run and side the harness calls, in
order: ``prepare`` (untimed), the command (timed), ``check`` (untimed; raise ``CheckFailed``) and
``cleanup`` (untimed, also after a failure). ``setup`` and ``teardown`` run once per row.

Commands are built with ``module_command`` (one of our modules run directly as a child process,
without Ansible: ``python <module file> <args.json>``), ``shell_command`` (a bash pipeline with
pipefail) or ``playbook_command`` (``ansible-playbook`` with an inventory, for rows that measure
the roles and playbooks). Each command runs under the small launcher spawn.py, which reports the
``wait4`` resource use of the command: its peak resident memory (``ru_maxrss``, of the process
and the children it waited for, which for a module is the Python process alone: the Docker
daemon's memory is not ours) and its CPU time. The wall time is taken around the launcher.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO_ROOT / ".cache" / "collections"
MODULES = REPO_ROOT / "plugins" / "modules"
SPAWN = Path(__file__).resolve().parent / "spawn.py"
SIDES = ("ours", "baseline")

ROWS = {}


def register(cls):
    """Class decorator: add a Row subclass to the registry under its number."""
    if cls.number in ROWS:
        raise ValueError(f"row {cls.number} is registered twice")
    ROWS[cls.number] = cls()
    return cls


class CheckFailed(Exception):
    """A round-trip check found that a side's output does not match its input."""


class RowError(Exception):
    """A row cannot run (a command failed, or the situation is not fair to both sides)."""


@dataclass
class Command:
    argv: list
    env: dict = field(default_factory=dict)
    display: str = ""  # what the table and the JSON show
    module: bool = False  # one of our modules: its stdout is its JSON result
    timeout: float = 1800  # seconds; a command still running then is killed and fails its row


@dataclass
class Outcome:
    seconds: float
    max_rss: int  # bytes
    cpu: float  # user + system seconds of the process and the children it waited for
    engine_cpu: float  # user + system seconds dockerd (and its reaped children) used meanwhile, or -1
    returncode: int
    stdout: str
    stderr: str
    result: dict = field(default_factory=dict)  # a module's JSON result


class Context:
    """What rows share during one scale: the Docker client, the data, a work directory."""

    def __init__(self, api, source, workdir, run_id, log):
        self.api = api
        self.source = source
        self.workdir = Path(workdir)
        self.run_id = run_id
        self.log = log
        self.state = {}  # per-row scratch space, e.g. a bundle made in setup
        self.drop_cache = True  # every timed run starts with this machine's page cache dropped (run.py --page-cache)

    def path(self, *parts):
        return self.workdir.joinpath(*parts)

    def name(self, *parts):
        """A Docker object name unique to this benchmark run."""
        return "-".join(("ferry-bench", self.run_id, *(str(p) for p in parts)))


class Row:
    """One comparison. Override ``command`` and whichever hooks the row needs."""

    number = 0
    title = ""  # our side, as shown in the table
    baseline = ""  # the baseline command, as the issue writes it
    target = 1.2  # at most this ratio of medians (ours / baseline)
    sides = SIDES
    memory = True  # part of the peak-memory table (a module process)

    def setup(self, ctx):
        """Once before the runs (untimed)."""

    def prepare(self, ctx, side, run):
        """Before each timed run (untimed), e.g. a fresh empty volume."""

    def command(self, ctx, side, run):
        raise NotImplementedError

    def check(self, ctx, side, run, outcome):
        """After each timed run (untimed): raise CheckFailed unless the output round-trips."""

    def cleanup(self, ctx, side, run):
        """After each run (untimed), also after a failure."""

    def teardown(self, ctx):
        """Once after the runs (untimed), also after a failure."""

    def extras(self, ctx, seconds):
        """After the runs, before teardown: more figures for the result (``seconds``: side -> summary)."""
        return {}


def module_command(ctx, module, args, tag):
    """Run plugins/modules/<module>.py directly with ``args``, the way AnsiballZ would, minus Ansible.

    The collection's Python comes from the bytecode ``compile_collection`` wrote."""
    args_file = ctx.path(f"args-{tag}.json")
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    pythonpath = os.pathsep.join(p for p in (str(COLLECTIONS), os.environ.get("PYTHONPATH")) if p)
    return Command(
        argv=[sys.executable, str(MODULES / f"{module}.py"), str(args_file)],
        env={"PYTHONPATH": pythonpath},
        display=f"{module} {json.dumps(args, sort_keys=True)}",
        module=True,
    )


def compile_collection():
    """Compile the collection's Python, beside its sources (``__pycache__``, ignored by git and by Galaxy's build).

    Python reads the venv's packages (ansible, docker, zstandard) from the bytecode pip wrote when it installed
    them; the collection runs from its sources. Where PYTHONDONTWRITEBYTECODE is set, as on the CI machine, every
    run of one of our modules compiled them again (about 0.1 s per run there); where it is not, the first run did
    and the others did not. Neither compiling source nor that difference is what a row compares. (Under Ansible,
    AnsiballZ ships a module's sources, ansible's own module_utils among them, and every task compiles them.)
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO_ROOT / "plugins")],
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )


def shell_command(script):
    return Command(argv=["bash", "-c", "set -euo pipefail; " + script], display=script)


def playbook_command(playbook, inventory, extra_vars=None, limit=None):
    """``ansible-playbook`` from this venv with the repository's ansible.cfg (for rows 6 and 7)."""
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook)]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if limit:
        argv += ["--limit", limit]
    return Command(argv=argv, env={"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg")}, display=" ".join(argv))


def engine_cpu(pid_file="/var/run/docker.pid"):
    """CPU seconds (user + system, with reaped children) dockerd has used so far; -1 if unknown.

    dockerd serves everyone on the engine, so a difference of two readings is an upper bound of
    what one command cost it.
    """
    try:
        with open(pid_file, encoding="ascii") as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return -1.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def measure(command, cwd=REPO_ROOT):
    """Run ``command`` once through spawn.py; its wall time, peak RSS, CPU time and output."""
    env = dict(os.environ)
    env.update(command.env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as report:
        argv = [sys.executable, "-S", str(SPAWN), report.name, *command.argv]
        engine_before = engine_cpu()
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout=command.timeout)
        except BaseException as exc:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the command: nothing left running
            proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise RowError(f"`{command.display[:200]}` did not finish within {command.timeout:.0f} s") from exc
            raise
        seconds = time.perf_counter() - start
        engine_after = engine_cpu()
        try:
            max_rss_kib, utime, stime = report.read().split()
        except ValueError:
            max_rss_kib, utime, stime = 0, 0, 0
        out.seek(0)
        err.seek(0)
        outcome = Outcome(
            seconds=seconds,
            max_rss=int(max_rss_kib) * 1024,  # KiB on Linux
            cpu=float(utime) + float(stime),
            engine_cpu=engine_after - engine_before if engine_before >= 0 <= engine_after else -1.0,
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )
    if command.module:
        try:
            outcome.result = json.loads(outcome.stdout)
        except ValueError:
            outcome.result = {"failed": True, "msg": "the module printed no JSON result"}
    if outcome.returncode != 0 or outcome.result.get("failed"):
        detail = outcome.result.get("msg") if command.module else None
        output = detail or (outcome.stderr.strip() or outcome.stdout)[-1500:]
        raise RowError(f"`{command.display[:200]}` failed (exit {outcome.returncode}): {output}")
    return outcome


def summary(values):
    """``{"median", "min", "max", "runs"}`` of a list of numbers."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


SETTLE_SECONDS = 60  # the longest wait for the disk to go quiet before a timed run
SETTLE_BYTES = 1 << 20  # quiet: less than this written or discarded in SETTLE_STEP, twice in a row
SETTLE_STEP = 0.5


def _disk_activity():
    """Sectors written and discarded so far, and the I/Os in flight, over this machine's block devices (the lab
    hosts are containers on it: their disks are these)."""
    devices = {name for name in os.listdir("/sys/block") if not name.startswith(("loop", "ram"))}
    written = in_flight = 0
    with open("/proc/diskstats", encoding="ascii") as stats:
        for line in stats:
            fields = line.split()
            if len(fields) >= 14 and fields[2] in devices:
                written += int(fields[9]) + (int(fields[16]) if len(fields) >= 18 else 0)
                in_flight += int(fields[11])
    return written, in_flight


def drop_page_cache(path="/proc/sys/vm/drop_caches"):
    """Drop this machine's clean page cache (the lab hosts are containers on it): ``""``, or why it could not.

    The state the previous run leaves in the cache decides the next run's time: row 6's baseline moved its 1 GiB
    volume into host2 in 6.7 s after a fresh start, then 11.8, 15.6, 14.6 and 15.2 s in the runs after; with the
    cache dropped before each run, 8.6-9.3 s every time (2026-12-03). Both sides then read their data from disk."""
    try:
        with open(path, "w", encoding="ascii") as control:
            control.write("1\n")
    except OSError as exc:
        return f"the page cache was not dropped: {exc}"
    return ""


def settle_disk(limit=SETTLE_SECONDS, clock=time.monotonic, sleep=time.sleep, activity=_disk_activity):
    """Wait until the disk is quiet (the write-back and discards of earlier runs and of the cleanup are done), at
    most ``limit`` seconds; the seconds waited. A sync returns once the dirty pages are written, not once every
    I/O an earlier run or the cleanup started (discards of removed volumes and layers) is done; what is still in
    flight would land in the next timed run. (Row 6 on 2026-12-03 found the disk quiet each time: 1.0 s.)"""
    started = clock()
    quiet = 0
    before = activity()[0]
    while clock() - started < limit and quiet < 2:
        sleep(SETTLE_STEP)
        now, in_flight = activity()
        quiet = quiet + 1 if (now - before) * 512 < SETTLE_BYTES and in_flight == 0 else 0
        before = now
    return round(clock() - started, 2)


def run_row(row, ctx, runs, sides=None):
    """Run one row: ``runs`` timed runs per side, alternating which side goes first. Returns a dict."""
    sides = tuple(sides or row.sides)
    samples = {side: [] for side in sides}
    rss = {side: [] for side in sides}
    cpu = {side: [] for side in sides}
    engine = {side: [] for side in sides}
    details = {side: [] for side in sides}
    settled = {side: [] for side in sides}  # seconds waited for a quiet disk before each run
    cache_problems = []  # why the page cache could not be dropped before a run
    try:
        row.setup(ctx)
        for run in range(runs):
            order = sides if run % 2 == 0 else tuple(reversed(sides))
            for side in order:
                try:
                    row.prepare(ctx, side, run)
                    command = row.command(ctx, side, run)
                    # the dirty pages of earlier runs and of the cleanup go to disk before the clock starts:
                    # otherwise their write-back lands in whichever run comes next (rows 4 and 11 at 256M+).
                    # At the tiny scale (CI's bench step: every row runs, no verdict counts) it would only
                    # add a minute of syncs.
                    if getattr(ctx.source, "scale", None) != "tiny":
                        os.sync()
                        if getattr(ctx, "drop_cache", False):
                            problem = drop_page_cache()
                            if problem and problem not in cache_problems:
                                cache_problems.append(problem)
                                ctx.log(f"  {problem}")
                        settled[side].append(settle_disk())
                    outcome = measure(command)
                    row.check(ctx, side, run, outcome)
                finally:
                    row.cleanup(ctx, side, run)
                samples[side].append(outcome.seconds)
                rss[side].append(outcome.max_rss)
                cpu[side].append(outcome.cpu)
                engine[side].append(outcome.engine_cpu)
                details[side].append(_module_facts(outcome.result))
                ctx.log(
                    f"  row {row.number} run {run + 1}/{runs} {side:8s} {outcome.seconds:8.2f} s  "
                    f"cpu {outcome.cpu:6.2f} s  dockerd cpu {outcome.engine_cpu:6.2f} s  "
                    f"rss {outcome.max_rss / 1048576:6.1f} MiB"
                )
        # Figures a row computes itself (bytes, task counts, a verdict against an absolute target).
        extras = row.extras(ctx, {side: summary(samples[side]) for side in sides})
    finally:
        row.teardown(ctx)
    result = {
        "row": row.number,
        "title": row.title,
        "baseline_command": row.baseline,
        "target": row.target,
        "seconds": {side: summary(samples[side]) for side in sides},
        "max_rss_bytes": {side: summary(rss[side]) for side in sides},
        "cpu_seconds": {side: summary(cpu[side]) for side in sides},
        "dockerd_cpu_seconds": {side: summary(engine[side]) for side in sides},
        "module_results": details.get("ours", []),
        "checks": "passed",
    }
    if any(settled.values()):
        result["disk_settle_seconds"] = settled
        result["page_cache"] = (
            "kept"
            if not getattr(ctx, "drop_cache", False)
            else (cache_problems[0] if cache_problems else "dropped before each run")
        )
    if "ours" in samples and "baseline" in samples:
        ratio = result["seconds"]["ours"]["median"] / result["seconds"]["baseline"]["median"]
        result["ratio"] = ratio
        result["verdict"] = "PASS" if ratio <= row.target else "MISS"
        # each run's pair, measured minutes apart at most: how far the verdict rests on the machine's swings
        result["paired_ratios"] = [round(o / b, 3) for o, b in zip(samples["ours"], samples["baseline"]) if b]
    result.update(extras)
    return result


def _module_facts(result):
    keys = ("duration", "bytes_read", "bytes_written", "size", "changed", "operation")
    return {k: result[k] for k in keys if k in (result or {})}
