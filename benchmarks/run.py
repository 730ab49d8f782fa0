# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``python -m benchmarks``: run the rows, print the table, write the JSON.

    python -m benchmarks [--scale tiny|256M|1G|2G] [--runs N] [--rows 1,2,...] [--memory]
                         [--memory-scales 256M,2G] [--seed N] [--out FILE] [--clean-cache]

The scale defaults to $BENCH_SCALE, else 1G. Every figure is the median of N >= 3 runs (min and
max beside it); the two sides of a row alternate which goes first. ``--memory`` adds the memory
part: our side of each row again at the memory scales, reporting the peak RSS of the module
process and its growth between the smallest and the largest scale. Exit status 1 if a row could
not run or a round-trip check failed; a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

from benchmarks import rows_migrate  # registers rows 6-8, which run on the lab hosts
from benchmarks.data import LABEL, SCALES, ensure_source, remove_cached
from benchmarks.harness import COLLECTIONS, REPO_ROOT, Context, compile_collection, run_row
from benchmarks.rows import ROWS

MIB = 1024 * 1024
MEMORY_TARGET = 100 * MIB
GROWTH_TARGET = 10 * MIB
CACHE_DIR = REPO_ROOT / ".cache" / "bench"


def log(message):
    print(message, file=sys.stderr, flush=True)


def _output(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO_ROOT).stdout.strip()
    except OSError:
        return ""


def filesystem_of(path, mountinfo="/proc/self/mountinfo", sysfs="/sys/fs/ext4"):
    """``"<type> on <source>"`` of the mount holding ``path``, with ``(no journal)`` for an ext4 without one.

    Row 4's times depend on it: on this machine's ext4 without a journal, creating the files of a restore
    spends up to half its time checking whether freed inodes were deleted recently (BENCHMARKS.md)."""
    best = None
    try:
        with open(mountinfo, encoding="utf-8") as f:
            for line in f:
                fields, _sep, rest = line.partition(" - ")
                point = fields.split()[4].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > len(best[0])):
                    best = (point, *rest.split()[:2])
    except (OSError, IndexError):
        return None
    if best is None:
        return None
    _point, kind, source = best
    facts = f"{kind} on {source}"
    if kind == "ext4":
        try:
            with open(os.path.join(sysfs, os.path.basename(source), "journal_task"), encoding="ascii") as f:
                if f.read().strip() == "<none>":
                    facts += " (no journal)"
        except OSError:
            pass
    return facts


def machine_facts(api):
    meminfo = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, value = line.split(":", 1)
                meminfo[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    version = api.version()
    info = api.info()
    zstd = re.search(r"v(\d+\.\d+\.\d+)", _output(["zstd", "--version"]))
    try:
        import zstandard

        zstandard_version = zstandard.__version__
    except ImportError:
        zstandard_version = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "memory_bytes": meminfo.get("MemTotal"),
        "kernel": platform.release(),
        "docker_server_version": version.get("Version"),
        "docker_api_version": version.get("ApiVersion"),
        "docker_storage_driver": info.get("Driver"),
        "docker_root_filesystem": filesystem_of(info.get("DockerRootDir") or "/var/lib/docker"),
        "zstd_version": zstd.group(1) if zstd else None,
        "python_version": platform.python_version(),
        "zstandard_version": zstandard_version,
        "git_commit": _output(["git", "rev-parse", "HEAD"]) or None,
        "git_dirty": bool(_output(["git", "status", "--porcelain", "--untracked-files=no"])),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--scale", default=os.environ.get("BENCH_SCALE") or "1G", choices=list(SCALES))
    parser.add_argument(
        "--runs", type=int, default=3, help="timed runs per side (at least 3; 1 allowed at the tiny scale)"
    )
    parser.add_argument("--rows", default=",".join(str(n) for n in sorted(ROWS)), help="comma-separated row numbers")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS at the memory scales")
    parser.add_argument("--memory-scales", default="256M,2G")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "latest.json"))
    parser.add_argument("--clean-cache", action="store_true", help="remove the cached data volumes and containers")
    parser.add_argument(
        "--page-cache",
        choices=["drop", "keep"],
        default="drop",
        help="drop this machine's page cache before each timed run (default), so that no run inherits another's",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or (args.runs < 3 and args.scale != "tiny"):
        # At the tiny scale nothing is timed that means anything (fixed costs dominate): one run per side
        # proves that a row runs and round-trips, which is what make test uses it for.
        parser.error("--runs must be at least 3 (1 at the tiny scale): every figure is a median of at least 3 runs")
    try:
        args.rows = sorted({int(n) for n in args.rows.split(",") if n.strip()})
    except ValueError:
        parser.error(f"--rows takes comma-separated numbers, not {args.rows!r}")
    unknown = [n for n in args.rows if n not in ROWS]
    if unknown:
        parser.error(f"no row {unknown[0]}; the rows are {', '.join(str(n) for n in sorted(ROWS))}")
    args.memory_scales = [s.strip() for s in args.memory_scales.split(",") if s.strip()]
    for scale in args.memory_scales:
        if scale not in SCALES:
            parser.error(f"unknown memory scale {scale!r}")
    return args


def connect():
    import docker  # the venv's Docker SDK

    api = docker.APIClient(base_url=os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock", version="auto")
    api.ping()
    return api


def preflight(rows=()):
    problems = []
    lab_rows = [n for n in rows if isinstance(ROWS[n], rows_migrate.MigrateRow)]
    if lab_rows and shutil.which("ssh") is None:
        problems.append(f"rows {lab_rows} run playbooks/migrate.yml on the lab hosts over SSH: install an SSH client")
    if not (COLLECTIONS / "ansible_collections" / "ferry" / "docker" / "galaxy.yml").exists():
        problems.append(f"{COLLECTIONS}/ansible_collections/ferry/docker is missing: run `make collection`")
    for tool in ("zstd", "tar", "docker"):
        if shutil.which(tool) is None:
            problems.append(f"the baseline needs `{tool}` on PATH")
    if os.geteuid() != 0:
        problems.append("rows 1 and 4 read and write volume mountpoints directly, which needs root")
    return problems


def run_scale(api, scale, args, run_id, sides=None):
    """Prepare the data of ``scale`` and run the chosen rows; returns (rows results, errors, source)."""
    source = ensure_source(api, scale, args.seed, CACHE_DIR, log)
    log(f"data {source.key}: {source.files} files, {source.bytes / MIB:.0f} MiB ({source.entries} entries)")
    results, errors = [], []
    workdir = tempfile.mkdtemp(prefix=f"run-{run_id}-{scale}-", dir=CACHE_DIR)
    try:
        ctx = Context(api, source, workdir, run_id, log)
        ctx.drop_cache = args.page_cache == "drop"
        compile_collection()
        for number in args.rows:
            row = ROWS[number]
            if sides and not row.memory:
                continue
            log(f"row {number}: {row.title} vs {row.baseline} ({scale}{', ours only' if sides else ''})")
            try:
                results.append(run_row(row, ctx, args.runs, sides=sides))
            except Exception as exc:  # a failed row is reported and the next one runs
                log(f"row {number} FAILED: {exc}")
                errors.append({"row": number, "scale": scale, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        _remove_leftovers(api, run_id)
    return results, errors, source


def _remove_leftovers(api, run_id):
    """Objects of this run that a failed row may have left behind (named ferry-bench-<run_id>-*)."""
    for volume in api.volumes(filters={"label": f"{LABEL}=restore"}).get("Volumes") or []:
        if volume["Name"].startswith(f"ferry-bench-{run_id}-"):
            api.remove_volume(volume["Name"], force=True)
    for image in api.images(name="ferry-bench/*"):
        for tag in image.get("RepoTags") or []:
            if f":{run_id}" in tag:
                api.remove_image(tag, force=True)


def _secs(s):
    return f"{s['median']:7.2f} [{s['min']:.2f}-{s['max']:.2f}]"


def timing_table(results, scale):
    lines = [
        f"Scale {scale}: seconds, median [min-max]; ratio = ours / baseline (medians)",
        f"{'#':>2}  {'ours':30s} {'ours (s)':>22s} {'baseline (s)':>22s} {'ratio':>6s} {'target':>7s}  "
        "verdict   baseline",
    ]
    for r in results:
        s = r["seconds"]
        baseline = _secs(s["baseline"]) if "baseline" in s else "-"
        lines.append(
            f"{r['row']:>2}  {r['title']:30s} {_secs(s['ours']):>22s} {baseline:>22s} "
            f"{r.get('ratio', 0):6.2f} {'<=' + str(r['target']):>7s}  {r.get('verdict', '-'):8s}  "
            f"{r['baseline_command']}"
        )
        if "ansible_tasks" in r:
            lines.append(f"    Ansible tasks run: {r['ansible_tasks']}; ratio = median seconds / {r['target']} s")
        if "bytes_sent" in r:
            lines.append(
                f"    bytes sent {r['bytes_sent']}; the container's own changes {r['container_changes_bytes']}; "
                f"a full docker save {r['full_save_bytes']}; ratio = sent / changes"
            )
    if scale == "tiny":
        lines.append("(tiny: proves that every row runs and round-trips; fixed costs dominate, verdicts mean nothing)")
    return "\n".join(lines)


def memory_report(by_scale, scales):
    """Peak RSS of our module per row and scale, growth from the first to the last scale, verdicts."""
    report = []
    numbers = sorted({r["row"] for results in by_scale.values() for r in results})
    for number in numbers:
        entry = {"row": number, "peak_rss_bytes": {}}
        for scale in scales:
            for r in by_scale.get(scale, []):
                if r["row"] == number:
                    entry["title"] = r["title"]
                    entry["peak_rss_bytes"][scale] = r["max_rss_bytes"]["ours"]
        peaks = entry["peak_rss_bytes"]
        if len(peaks) == len(scales):
            medians = [peaks[s]["median"] for s in scales]
            entry["growth_bytes"] = medians[-1] - medians[0]
            entry["verdict"] = (
                "PASS" if max(medians) <= MEMORY_TARGET and entry["growth_bytes"] < GROWTH_TARGET else "MISS"
            )
        report.append(entry)
    return report


def memory_table(report, scales):
    header = "".join(f" {'peak at ' + s + ' (MiB)':>24s}" for s in scales)
    lines = [
        "Peak RSS of the module process, MiB, median [min-max]; targets: <= 100 MiB, growth < 10 MiB",
        f"{'#':>2}  {'ours':30s}{header} {'growth':>8s}  verdict",
    ]
    for e in report:
        cells = ""
        for s in scales:
            p = e["peak_rss_bytes"].get(s)
            text = f"{p['median'] / MIB:.1f} [{p['min'] / MIB:.1f}-{p['max'] / MIB:.1f}]" if p else "-"
            cells += f" {text:>24s}"
        growth = f"{e['growth_bytes'] / MIB:+.1f}" if "growth_bytes" in e else "-"
        lines.append(f"{e['row']:>2}  {e.get('title', ''):30s}{cells} {growth:>8s}  {e.get('verdict', '-')}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problems = preflight(args.rows)
    try:
        api = connect()
    except Exception as exc:  # no engine: say so, with the fix
        problems.append(f"no Docker engine answers ({exc}); run `bash lab/ensure-docker.sh` or set DOCKER_HOST")
    if problems:
        for problem in problems:
            log("benchmarks: " + problem)
        return 2
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if args.clean_cache:
        remove_cached(api, log)
        return 0

    run_id = uuid.uuid4().hex[:8]
    doc = {"machine": machine_facts(api), "scale": args.scale, "runs": args.runs, "seed": args.seed, "errors": []}
    results, errors, source = run_scale(api, args.scale, args, run_id)
    doc.update(rows=results, data={k: v for k, v in vars(source).items() if k != "mountpoint"})
    doc["errors"] += errors
    print(timing_table(results, args.scale))

    if args.memory:
        by_scale = {args.scale: results}
        for scale in args.memory_scales:
            if scale not in by_scale:
                memory_results, errors, _source = run_scale(api, scale, args, run_id, sides=("ours",))
                by_scale[scale] = memory_results
                doc["errors"] += errors
        doc["memory"] = {
            "scales": args.memory_scales,
            "target_peak_bytes": MEMORY_TARGET,
            "target_growth_bytes": GROWTH_TARGET,
            "rows": memory_report(by_scale, args.memory_scales),
        }
        print()
        print(memory_table(doc["memory"]["rows"], args.memory_scales))

    for error in doc["errors"]:
        print(f"ERROR row {error['row']} at {error['scale']}: {error['error']}")
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    log(f"wrote {out}")
    return 1 if doc["errors"] else 0
