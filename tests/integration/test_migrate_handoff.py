"""The early restore on a lab host: docker_bundle_restore waiting for a capture's handoff (issue 12).

The module runs on host2 as the migrate role starts it, and the test plays the capture's part by writing
the handoff file (or not). A handoff that is not what a capture writes is refused before anything is
restored; a group let go by its capture or by the controller is not restored; a restore waiting for a run
whose key is gone ends. The whole migration with the handoff runs in test_migrate_precopy.py and in the
fault matrix (test_migrate_faults.py, phase ``wait``). The capture's side of the handoff runs here from the
controller over the lab's key: a handoff no restore takes is withdrawn, one the waiting restore takes is claimed.
A whole migration whose early restore is killed before the handoff leaves the source serving and host2 clean.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import lab_run
import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _handoff

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE = REPO_ROOT / "lab" / ".state"
INCOMING = "/var/lib/ferry/incoming"
MODULE_SECONDS = 300
DIGEST = "0" * 64


@pytest.fixture
def group(lab):
    """A group of one member that never existed on host2; its directory and files removed afterwards."""
    name = f"ferry-handoff-{uuid.uuid4().hex[:8]}"
    directory = f"{INCOMING}/test-host1-{name}"
    yield name, directory
    ssh("host2", f"rm -rf {directory} {directory}.*; docker rm -f {name} >/dev/null 2>&1; true", check=False)


def restore(name, directory, tmp_path, others=(), **handoff):
    """Start docker_bundle_restore with ``handoff`` on host2 (a one-task play, JSON output); the process. Its
    environment marks the module's command line (it runs pipelined, as python3 reading its stdin). ``others``:
    ``(name, directory)`` of more groups it waits for."""
    args = {
        "groups": [
            {
                "id": group_name,
                "members": [
                    {
                        "container": group_name,
                        "name": group_name,
                        "image_ref": f"ferry-migrate/{group_name}:latest",
                        "received": f"{group_dir}/{group_name}",
                    }
                ],
            }
            for group_name, group_dir in ((name, directory), *others)
        ],
        "handoff": dict({"timeout": 120}, **handoff),
    }
    play = [
        {
            "hosts": "host2",
            "gather_facts": False,
            "tasks": [
                {
                    "ferry.docker.docker_bundle_restore": args,
                    "environment": {"FERRY_HANDOFF_TEST": name},
                    "ignore_errors": True,
                }
            ],
        }
    ]
    path = tmp_path / f"restore-{uuid.uuid4().hex[:6]}.yml"
    path.write_text(json.dumps(play))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
    )
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(STATE / "inventory.ini"), str(path)]
    return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(process):
    out, err = process.communicate(timeout=MODULE_SECONDS)
    try:
        return json.loads(out)["plays"][0]["tasks"][0]["hosts"]["host2"]
    except (ValueError, KeyError, IndexError):
        pytest.fail(f"no JSON result (rc {process.returncode}): {out[-2000:]} {err[-2000:]}")


def ssh(host, script, check=True):
    return lab_run.ssh(host, script, check=check, timeout=120)


def put(directory, doc, mode="600"):
    """Write the handoff as host2's root would, with ``mode``."""
    text = json.dumps(doc).replace("'", "")
    path = f"{directory}.handoff"
    ssh("host2", f"mkdir -p {INCOMING} && umask 077 && printf '%s' '{text}' > {path} && chmod {mode} {path}")


def wait_until_it_waits(process, name):
    """Until the module runs on host2 (its wait has begun), so that what the test writes comes after."""
    deadline = time.monotonic() + 120
    while ssh("host2", f"pgrep -f 'FERRY_HANDOFF_TES[T]={name} ' >/dev/null", check=False).returncode != 0:
        assert process.poll() is None, result(process)
        assert time.monotonic() < deadline, "the restore did not start on host2"
        time.sleep(0.2)


def nothing_restored(name, directory):
    assert ssh("host2", f"docker inspect {name}", check=False).returncode != 0, f"{name} exists on host2"
    # the handoff was read once and removed; nothing else is left beside the group's directory
    assert ssh("host2", f"ls -d {directory}.handoff* 2>/dev/null | wc -l").stdout.strip() == "0"


@pytest.mark.parametrize(
    "members, mode, said",
    [
        ({"intruder": {"image_id": "", "image_streamed": "", "precopied": {}}}, "600", "are not the group's"),
        (None, "600", "was not prepared for this group"),  # a volume the controller did not name
        (None, "666", "not this user's alone"),  # a file anyone could have written
    ],
)
def test_a_handoff_that_is_not_what_a_capture_writes_is_refused_and_nothing_is_restored(
    group, tmp_path, members, mode, said
):
    name, directory = group
    forged = {name: {"image_id": "", "image_streamed": "", "precopied": {"etc": {"digest": DIGEST, "entries": 1}}}}
    put(directory, {"version": 1, "group": name, "ok": True, "members": members or forged}, mode=mode)
    done = result(restore(name, directory, tmp_path))
    assert done.get("failed") and said in done["msg"] and f"{directory}.handoff" in done["msg"], done
    assert done.get("phase") == "handoff" and "Nothing was restored" in done["msg"]
    nothing_restored(name, directory)


def test_a_group_whose_capture_failed_or_that_the_controller_lets_go_is_not_restored(group, tmp_path):
    name, directory = group
    put(directory, {"version": 1, "group": name, "ok": False})
    done = result(restore(name, directory, tmp_path))
    assert not done.get("failed") and not done["changed"] and done["groups"] == {}, done
    assert "capture failed" in done["let_go"][name]
    nothing_restored(name, directory)

    process = restore(name, directory, tmp_path)
    wait_until_it_waits(process, name)
    ssh("host2", f"touch {directory}.cancel")
    done = result(process)
    assert not done.get("failed") and done["groups"] == {} and "controller let it go" in done["let_go"][name], done
    assert ssh("host2", f"ls {directory}.cancel", check=False).returncode != 0  # consumed
    nothing_restored(name, directory)


def test_a_restore_waiting_for_a_run_whose_key_is_gone_ends(group, tmp_path):
    name, directory = group
    key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{uuid.uuid4().hex} ferry-handoff-test"
    blob = key.split()[1]
    ssh("host2", f"echo 'restrict,command=\"/bin/false\" {key}' >> ~/.ssh/authorized_keys")
    try:
        process = restore(name, directory, tmp_path, key=key, timeout=600)
        wait_until_it_waits(process, name)
        time.sleep(2)
        assert process.poll() is None  # it waits while the key is there
    finally:
        ssh("host2", f"sed -i '/{blob}/d' ~/.ssh/authorized_keys")
    done = result(process)
    assert done.get("failed") and "run key is gone" in done["msg"], done
    nothing_restored(name, directory)


@pytest.fixture
def send(lab, tmp_path):
    """The capture's ``send`` options for host2, from this controller: the lab's key and known hosts, and the user,
    address and port that the lab's ssh_config gives (read, never written here). The shared connection it opens
    is closed afterwards."""
    key_dir = tmp_path / "key"
    key_dir.mkdir(mode=0o700)
    for name in ("id_ed25519", "known_hosts"):
        shutil.copyfile(STATE / name, key_dir / name)
    (key_dir / "id_ed25519").chmod(0o600)
    shown = subprocess.run(
        ["ssh", "-F", str(STATE / "ssh_config"), "-G", "host2"], capture_output=True, text=True, timeout=30, check=True
    )
    config = dict(line.split(" ", 1) for line in shown.stdout.splitlines() if " " in line)
    options = dict(key_dir=str(key_dir), port=int(config["port"]), user=config["user"], address=config["hostname"])
    yield options
    subprocess.run(
        ["ssh", "-o", f"ControlPath={key_dir}/cm-%h-%p", "-O", "exit", f"{options['user']}@{options['address']}"],
        capture_output=True,
        timeout=30,
        check=False,
    )


def captured_doc(name):
    return _handoff.document(name, {"ok": True, "members": {name: {"image_id": "", "volumes": {}}}})


def test_a_handoff_no_restore_takes_is_withdrawn_over_ssh(group, send):
    """The capture's write waits for a claim on host2; without one it withdraws the handoff, so that a restore
    that comes later finds nothing, and the group fails (its source is put back)."""
    name, directory = group
    ssh("host2", f"mkdir -p {INCOMING}")
    with pytest.raises(OSError, match=r"did not take the handoff .* within 1 s \(withdrawn\)"):
        _handoff.hand_off(send, directory, captured_doc(name), claim_seconds=1)
    assert ssh("host2", f"ls -d {directory}.handoff* 2>/dev/null | wc -l").stdout.strip() == "0"


def test_a_handoff_the_waiting_restore_takes_is_claimed_over_ssh(group, tmp_path, send):
    """The restore waiting on host2 claims and accepts the handoff; the capture's write hears so over ssh and
    removes the mark. The restore waits for a second group too (so that it does not go on, fail for the bundle
    this test never sent, and undo everything before the write has looked); once that group is let go, it goes
    on with the first."""
    name, directory = group
    other = (f"{name}-b", f"{directory}-b")
    process = restore(name, directory, tmp_path, others=[other])
    try:
        wait_until_it_waits(process, name)
        try:
            said = _handoff.hand_off(send, directory, captured_doc(name), claim_seconds=60)
        except OSError as exc:
            said = str(exc)
        assert said == "", said
        assert ssh("host2", f"ls -d {directory}.handoff* 2>/dev/null | wc -l").stdout.strip() == "0"
    finally:
        ssh("host2", f"touch {other[1]}.cancel")
    done = result(process)
    assert "controller let it go" in done["let_go"][other[0]], done
    assert name in done["groups"] and not done["groups"][name]["ok"], done  # taken: restored (and failed: no bundle)
    ssh("host2", f"rm -f {other[1]}.*", check=False)


@pytest.fixture
def service(lab):
    """A web server on host1 with a named volume (pre-copied: migrate_precopy_min_bytes 0); removed afterwards."""
    name = f"ferry-handoff-{uuid.uuid4().hex[:8]}"
    yield name
    for host in ("host1", "host2"):
        ssh(
            host,
            f"docker rm -f {name} >/dev/null 2>&1; docker volume rm {name}-data >/dev/null 2>&1; "
            f"docker image rm ferry-migrate/{name}:latest >/dev/null 2>&1; "
            f"rm -rf /var/lib/ferry/migrate/*/{name} {INCOMING}/*-{name} {INCOMING}/*-{name}.*; true",
            check=False,
        )


def start(name, label=""):
    ssh(
        "host1",
        f"docker run -d --pull never --name {name} -v {name}-data:/data {label} ferry-lab/busybox "
        "sh -c 'head -c 4194304 /dev/urandom > /data/blob && exec httpd -f -p 8080 -h /data' >/dev/null",
    )


def run_of(name):
    """The id of the run that migrates ``name`` (its journal's name on host1, which names the container), or ""."""
    script = f"grep -l -s -F -- '\"{name}\"' /var/lib/ferry/journal/*.json | head -n 1"
    return Path(ssh("host1", script, check=False).stdout.strip()).name[: -len(".json")]


def restores_of(run_id):
    """A shell command printing, one per line, the pid and command line of each restore module process on host2
    that carries the run's marker in its environment (other tests may restore on host2 meanwhile)."""
    return (
        "for pid in $(pgrep -f 'AnsiballZ_docker_bundle_restor[e]'); do "
        f"tr '\\0' '\\n' 2>/dev/null < /proc/$pid/environ | grep -qxF 'FERRY_MIGRATE_RUN={run_id}' || continue; "
        "printf '%s ' $pid; tr '\\0' ' ' < /proc/$pid/cmdline; echo; done"
    )


def left_on_host2(name):
    """What a failed run must not leave on host2: the copy, its volume, files beside the group's directory, the
    results file of the restore's async job, a restore of the run still running. Ansible's async wrapper outlives
    its job by up to its 5 s poll: looked at until then."""
    run_id = run_of(name)
    assert run_id, f"no journal on host1 names {name}"
    script = (
        f"docker inspect {name} >/dev/null 2>&1 && echo container; "
        f"docker volume inspect {name}-data >/dev/null 2>&1 && echo volume; "
        f"ls -d {INCOMING}/*-{name}* 2>/dev/null; "
        # the results file of the early restore's async job, once the role has read it
        f'grep -l -s -F -- {name} "$HOME"/.ansible_async/* | sed "s/^/async-job:/"; '
        f"{restores_of(run_id)} | grep -q . && echo restore-running; true"
    )
    deadline = time.monotonic() + 30
    while True:
        left = ssh("host2", script).stdout.split()
        if left != ["restore-running"] or time.monotonic() > deadline:
            return left
        time.sleep(1)


@pytest.mark.parametrize(
    "how",
    ["hook", "task"],
    ids=["a-capture-that-fails-hands-its-group-off-as-failed", "a-capture-task-that-fails-lets-the-restore-go"],
)
def test_a_failed_capture_leaves_the_source_serving_and_the_early_restore_restores_nothing(service, tmp_path, how):
    name = service
    if how == "hook":  # the group fails inside the capture: its handoff says so and the restore lets it go
        start(name, label="-l ferry.docker.pre-migrate='exit 3'")
        extra = {}
    else:  # the capture task fails before its module runs: the rescue lets the restore go and waits for it
        start(name)
        extra = {"migrate_hooks": {name: {"during": []}}}
    run, report = lab_run.migrate(tmp_path, [name], migrate_precopy_min_bytes=0, **extra)
    entry = report[name]
    assert entry["status"] == "failed" and not entry["early_restore"], entry
    assert ssh("host1", f"docker inspect -f '{{{{.State.Status}}}}' {name}").stdout.strip() == "running"
    assert left_on_host2(name) == [], run.stdout[-4000:]
    # no digest cache of the run on the source: the capture drops them, or the rescue when no capture ran
    assert ssh("host1", f"find /var/lib/ferry/migrate -name '*{name}*.marshal'").stdout.split() == []
    if how == "hook":
        assert entry["phase"] == "hooks", entry
    else:
        assert "Let the early restore go" in run.stdout and "Wait for the early restore to end" in run.stdout


def kill_the_waiting_restore(name, deadline):
    """SIGKILL the restore module of the run that migrates ``name`` on host2 (not Ansible's async wrapper, which
    then reports the job as failed); the module's command line. It is looked for until ``deadline`` (monotonic)."""
    run_id = ""
    while time.monotonic() < deadline:
        run_id = run_id or run_of(name)
        if not run_id:  # the run has not journaled yet
            time.sleep(0.2)
            continue
        for line in ssh("host2", restores_of(run_id)).stdout.splitlines():
            pid, _space, command = line.partition(" ")
            words = command.split()
            if len(words) > 1 and words[1].endswith("AnsiballZ_docker_bundle_restore.py"):
                ssh("host2", f"kill -KILL {pid}")
                return command
        time.sleep(0.2)
    pytest.fail(f"no restore module for {name} ran on host2")


def test_an_early_restore_that_dies_before_the_handoff_leaves_the_source_serving(service, tmp_path):
    """The restore waiting on the target is killed while the capture's pre-migrate hook still runs: the capture's
    handoff is then taken by no one, so the capture withdraws it and puts the source back itself, and the rescue
    removes what the run made on host2."""
    name = service
    start(name, label="-l ferry.docker.pre-migrate='sleep 6'")
    done = {}

    def migrate():
        try:
            done["run"], done["report"] = lab_run.migrate(tmp_path, [name], migrate_precopy_min_bytes=0)
        except BaseException as exc:  # reported below, in the test's own thread
            done["error"] = exc

    runner = threading.Thread(target=migrate)
    runner.start()
    killed = kill_the_waiting_restore(name, time.monotonic() + 120)
    runner.join(lab_run.PLAYBOOK_SECONDS + 30)
    assert not runner.is_alive() and "report" in done, f"the migration did not end: {done.get('error')}"
    entry = done["report"][name]
    assert entry["status"] == "failed" and not entry["early_restore"], (killed, entry)
    assert "did not take the handoff" in entry["error"] and "(withdrawn)" in entry["error"], entry
    # stopped while its capture waited for the claim, then put back: the report counts that, not 0
    assert entry["downtime_seconds"] >= _handoff.CLAIM_SECONDS, entry
    assert ssh("host1", f"docker inspect -f '{{{{.State.Status}}}}' {name}").stdout.strip() == "running"
    served = ssh("host1", f"docker exec {name} wget -q -O - http://127.0.0.1:8080/blob | wc -c").stdout.strip()
    assert served == "4194304", served  # the source serves its volume as before
    assert left_on_host2(name) == [], done["run"].stdout[-4000:]
