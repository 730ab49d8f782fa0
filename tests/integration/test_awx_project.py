# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The repository as an AWX / AAP project: the playbooks run through ansible-runner as AWX runs a job.

Each job gets a private data dir laid out as AWX lays it out:

- ``project/``: the files git knows, copied (what a project sync checks out); the playbooks find
  ferry.docker there through ``playbooks/collections`` and nowhere else: ANSIBLE_COLLECTIONS_PATHS is
  set as AWX sets it, to an empty ``requirements_collections`` first (community.docker and
  ansible.posix come from the ansible package, as they come from the execution environment in AWX);
- ``inventory/hosts``: an executable script that prints the inventory as JSON, as AWX writes it, with
  the lab hosts' addresses from lab/.state (never written here) and no ``ansible_user``;
- ``env/ssh_key``: the machine credential's key (ansible-runner adds it to an ssh-agent);
- ``env/extravars``: the job template's extra vars and the survey answers (the survey's defaults,
  plus the few answers a survey requires), as AWX passes them: strings from text fields, JSON text for
  the maps;
- ``env/cmdline``: ``-u <user>`` (and ``--become``, ``--check``) as AWX builds them from the
  credential and the job template.

Every job must end ``successful``; the job events must carry the roles' report (set_stats:
``ferry_backup_report``, ``ferry_restore_report``). The restore check-mode job must change nothing on
either host. The sudo host (``lab.py up --sudo-host``: user ferry, sudo, no root login) receives a
restore with ``-u ferry --become``. Every name is ``ferry-it-awx-<random>``; all of it is removed at the end.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE = REPO_ROOT / "lab" / ".state"
SURVEYS = REPO_ROOT / "awx" / "surveys"
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"]
WORKLOAD_IMAGE = "ferry-lab/busybox:latest"
JOB_TIMEOUT = 600
# Host variables of the lab inventory a job keeps; the user and key come from the credential instead.
KEPT_HOSTVARS = ("ansible_host", "ansible_port", "ansible_python_interpreter", "ansible_ssh_common_args")


def _runner() -> str:
    beside_python = Path(sys.executable).parent / "ansible-runner"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("ansible-runner")
    if found is None:
        pytest.fail("ansible-runner is not installed; run `make venv` (requirements-dev.txt lists it)")
    return found


def _ini_hosts(path: Path) -> dict[str, dict[str, str]]:
    """{host: {var: value}} for every host of a lab inventory file, group vars included."""
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",), interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    hosts: dict[str, dict[str, str]] = {}
    for section in parser.sections():
        if section.endswith(":vars"):
            continue
        group_vars = {}
        if parser.has_section(f"{section}:vars"):
            for key, value in parser.items(f"{section}:vars"):
                name, rest = (key + (" " + value if value else "")).split("=", 1)
                group_vars[name.strip()] = rest.strip().strip("'")
        for name, values in parser.items(section):
            # A host can be in several groups (lab, debian_<release>): merge, the host's own vars last.
            fields = dict(field.split("=", 1) for field in (values or "").split())
            hosts[name] = {**group_vars, **hosts.get(name, {}), **fields}
    return hosts


def ssh(host: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a shell script on a lab host as root (sudo on the sudo host)."""
    command = ["ssh", "-F", str(STATE / "ssh_config"), *SSH_OPTIONS, host]
    command.append(f"sudo -n sh -c {shlex.quote(script)}" if host == "sudo1" else script)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"on {host}: {script!r} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def readme_example(name: str) -> dict:
    """The YAML block that follows `<!-- awx-example: NAME -->` in README.md."""
    text = (REPO_ROOT / "README.md").read_text()
    marker = f"<!-- awx-example: {name} -->"
    assert marker in text, f"README.md has no {marker}"
    block = text.split(marker, 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def survey_answers(name: str, **answers) -> dict:
    """The survey's defaults as AWX passes them (questions without a default are left out), then answers."""
    spec = json.loads((SURVEYS / f"{name}.json").read_text())["spec"]
    extravars = {question["variable"]: question["default"] for question in spec if "default" in question}
    required = {question["variable"] for question in spec if question.get("required") and "default" not in question}
    missing = required - set(answers)
    assert not missing, f"the {name} survey requires answers to {sorted(missing)}"
    extravars.update(answers)
    return extravars


class Job:
    """One ansible-runner job: its status, rc, events and what set_stats gave."""

    def __init__(self, data_dir: Path, ident: str):
        artifacts = data_dir / "artifacts" / ident
        self.status = (artifacts / "status").read_text().strip()
        self.rc = int((artifacts / "rc").read_text().strip())
        self.stdout = (artifacts / "stdout").read_text() if (artifacts / "stdout").exists() else ""
        events_dir = artifacts / "job_events"
        self.events = [json.loads(path.read_text()) for path in sorted(events_dir.glob("*.json"))]
        self.events.sort(key=lambda event: event.get("counter", 0))
        stats = [event for event in self.events if event.get("event") == "playbook_on_stats"]
        self.artifact_data = stats[-1]["event_data"].get("artifact_data", {}) if stats else {}

    def results(self, task_start: str) -> list[dict]:
        """The results of the tasks whose name starts with task_start, retries included, in order."""
        kinds = ("runner_on_ok", "runner_on_failed", "runner_retry")
        return [
            event["event_data"]["res"]
            for event in self.events
            if event.get("event") in kinds and event["event_data"].get("task", "").startswith(task_start)
        ]

    def stats(self, kind: str) -> dict:
        """The play recap's counts of one kind (ok, changed, failures, ...) per host."""
        stats = [event for event in self.events if event.get("event") == "playbook_on_stats"]
        return stats[-1]["event_data"].get(kind, {}) if stats else {}

    def explain(self) -> str:
        return f"status {self.status}, rc {self.rc}; last output:\n{self.stdout[-6000:]}"

    def task_paths(self) -> set[str]:
        data = [event.get("event_data", {}) for event in self.events]
        return {entry["task_path"] for entry in data if entry.get("task_path")}


class AwxProject:
    """Private data dirs for jobs on a copy of the project, with the lab's hosts as the inventory."""

    def __init__(self, root: Path):
        self.root = root
        self.project = root / "project-checkout"
        self.project.mkdir(parents=True)
        listing = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        )
        # Only what a clean checkout has: files git knows (the playbooks' collections link included).
        names = [name for name in listing.stdout.decode().split("\0") if name and (REPO_ROOT / name).is_symlink()]
        names += [name for name in listing.stdout.decode().split("\0") if name and (REPO_ROOT / name).is_file()]
        tar = subprocess.run(
            ["tar", "-C", str(REPO_ROOT), "--no-recursion", "-cf", "-", "--null", "-T", "-"],
            input="\0".join(sorted(set(names))).encode(),
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-C", str(self.project), "-xf", "-"], input=tar.stdout, check=True)
        self.hosts = _ini_hosts(STATE / "inventory.ini")
        sudo_inventory = STATE / "inventory-sudo.ini"
        self.sudo_hosts = _ini_hosts(sudo_inventory) if sudo_inventory.exists() else {}
        self.count = 0

    def job(
        self,
        playbook: str,
        extravars: dict,
        user: str = "root",
        become: bool = False,
        check: bool = False,
        host_users: dict[str, str] | None = None,
        host_become: dict[str, bool] | None = None,
        hosts: dict[str, dict[str, str]] | None = None,
        groups: dict[str, list[str]] | None = None,
    ) -> Job:
        """Run playbook as an AWX job template would, and return the job."""
        self.count += 1
        data_dir = self.root / f"job{self.count}"
        shutil.copytree(self.project, data_dir / "project", symlinks=True)
        (data_dir / "requirements_collections").mkdir()
        (data_dir / "inventory").mkdir()
        (data_dir / "env").mkdir()
        hosts = hosts if hosts is not None else self.hosts
        hostvars = {
            name: {key: value for key, value in variables.items() if key in KEPT_HOSTVARS}
            for name, variables in hosts.items()
        }
        for variables in hostvars.values():
            # The credential's key is in ansible-runner's ssh-agent, which IdentitiesOnly would ignore.
            variables["ansible_ssh_common_args"] = variables["ansible_ssh_common_args"].replace(
                "-o IdentitiesOnly=yes", ""
            )
        for name, login in (host_users or {}).items():
            hostvars[name]["ansible_user"] = login
        for name, become_there in (host_become or {}).items():
            hostvars[name]["ansible_become"] = become_there  # an inventory variable, not the credential's flag
        inventory = {"all": {"hosts": sorted(hostvars)}, "_meta": {"hostvars": hostvars}}
        inventory.update({group: {"hosts": members} for group, members in (groups or {}).items()})
        script = data_dir / "inventory" / "hosts"
        script.write_text(f"#! {sys.executable}\nprint({json.dumps(json.dumps(inventory))})\n")
        script.chmod(0o700)
        key = (STATE / "id_ed25519").read_text()
        (data_dir / "env" / "ssh_key").write_text(key)
        (data_dir / "env" / "ssh_key").chmod(0o600)
        (data_dir / "env" / "extravars").write_text(json.dumps(extravars))
        cmdline = ["-u", user] + (["--become"] if become else []) + (["--check"] if check else [])
        (data_dir / "env" / "cmdline").write_text(" ".join(cmdline))
        collections = f"{data_dir / 'requirements_collections'}:~/.ansible/collections:/usr/share/ansible/collections"
        (data_dir / "env" / "envvars").write_text(
            json.dumps({"ANSIBLE_COLLECTIONS_PATHS": collections, "ANSIBLE_FORCE_COLOR": "False"})
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "PYTHONPATH"}
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        ident = f"job{self.count}"
        run = subprocess.run(
            [_runner(), "run", str(data_dir), "-p", playbook, "--ident", ident, "-j"],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT,
            check=False,
        )
        if not (data_dir / "artifacts" / ident / "status").exists():
            pytest.fail(f"ansible-runner wrote no status (rc {run.returncode}):\n{run.stderr[-3000:]}")
        job = Job(data_dir, ident)
        project = str(data_dir / "project")
        roles = {path for path in job.task_paths() if "/roles/" in path}
        assert roles or job.status != "successful", "the job ran no task of a ferry.docker role"
        # The roles came from the project itself, as ferry.docker (not from any collection path).
        assert all(path.startswith(project) for path in roles), sorted(roles)[:5]
        return job


def host_state(host: str, token: str) -> str:
    """What a job could have changed on host for this test's objects, as text to compare."""
    return ssh(
        host,
        f"docker ps -a --format '{{{{.Names}}}} {{{{.Status}}}}' | grep -F '{token}' | sed 's/ Up .*/ Up/';"
        f" docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep -F '{token}';"
        f" docker volume ls -q | grep -F '{token}';"
        " grep -F 'ferry.docker restore' ~/.ssh/authorized_keys /home/*/.ssh/authorized_keys 2>/dev/null;"
        " true",
    ).stdout


@pytest.fixture(scope="module")
def awx(lab, tmp_path_factory):
    """The project copy, the lab with its sudo host, and a container with a volume on host1."""
    up = subprocess.run(
        [sys.executable, str(REPO_ROOT / "lab" / "lab.py"), "up", "--sudo-host"],
        capture_output=True,
        text=True,
        check=False,
    )
    if up.returncode != 0:
        pytest.fail(f"`lab.py up --sudo-host` failed:\n{up.stderr[-3000:]}")
    token = f"ferry-it-awx-{uuid.uuid4().hex[:8]}"
    project = AwxProject(tmp_path_factory.mktemp("awx"))
    project.token = token
    project.host_report = f"/var/lib/ferry/{token}-backup/backup.json"
    assert "sudo1" in project.sudo_hosts, "lab/.state/inventory-sudo.ini has no sudo1"
    ssh(
        "host1",
        f"docker volume create {token}-data >/dev/null && docker run -d --name {token} -v {token}-data:/data"
        f" --label {shlex.quote(readme_example('backup extra vars')['backup_label_selector'])}"
        f" {WORKLOAD_IMAGE} sh -c 'echo {token} > /data/hello && exec sleep 3600' >/dev/null"
        f" && until docker exec {token} cat /data/hello >/dev/null 2>&1; do sleep 0.2; done",
    )
    try:
        yield project
    finally:
        for host in ("host1", "host2", "sudo1"):
            ssh(
                host,
                f"docker ps -aq --filter name={token} | xargs -r docker rm -f >/dev/null;"
                f" docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep -F '{token}'"
                " | xargs -r docker rmi -f >/dev/null;"
                f" docker volume ls -q | grep -F '{token}' | xargs -r docker volume rm -f >/dev/null;"
                f" rm -rf /var/backups/ferry/{token} /var/lib/ferry/{token}*; true",
                check=False,
            )


@pytest.fixture(scope="module")
def backed_up(awx):
    """backup.yml as a scheduled job: the survey's defaults plus which host and container."""
    extravars = survey_answers(
        "backup", ferry_backup_hosts="host1", backup_containers=awx.token, backup_host_report_path=awx.host_report
    )
    # A job template's extra vars: report the progress of each capture every second.
    extravars["backup_progress_interval"] = 1
    job = awx.job("playbooks/backup.yml", extravars)
    assert job.status == "successful", job.explain()
    return job


def test_backup_job(awx, backed_up):
    report = backed_up.artifact_data["ferry_backup_report"]
    assert report["status"] == "ok"
    (entry,) = report["hosts"]["host1"]["containers"]
    assert entry["container"] == awx.token
    assert entry["status"] == "ok"
    assert int(entry["bytes"]) > 0
    assert entry["bundle"].startswith(f"/var/backups/ferry/{awx.token}/")
    assert entry["volumes"] == [f"{awx.token}-data"]
    # The host keeps its part of the report; the directory was made for it.
    on_host = json.loads(ssh("host1", f"cat {awx.host_report}").stdout)
    assert on_host["host"] == "host1"
    assert on_host["containers"][0]["bundle"] == entry["bundle"]
    assert ssh("host1", f"stat -c %a {Path(awx.host_report).parent}").stdout.strip() == "700"
    # Each capture ran in the background; its result carries the progress of the last poll.
    (commit,) = backed_up.results("Wait for the commit")[-1:]
    assert commit["finished"] is True
    assert commit["progress"]["bytes"] > 0
    (volumes,) = backed_up.results("Wait for the volume backup")[-1:]
    assert volumes["progress"]["bytes"] >= commit["progress"]["bytes"]


def test_backup_job_as_in_the_readme(awx, backed_up):
    """The scheduled backup job template of README.md's AWX / AAP section: its extra vars as written."""
    extravars = readme_example("backup extra vars")
    job = awx.job("playbooks/backup.yml", extravars, groups={extravars["ferry_backup_hosts"]: ["host1"]})
    assert job.status == "successful", job.explain()
    report = job.artifact_data["ferry_backup_report"]
    assert list(report["hosts"]) == ["host1"]
    mine = [entry for entry in report["hosts"]["host1"]["containers"] if entry["container"] == awx.token]
    assert [entry["status"] for entry in mine] == ["ok"]
    # The default report path on the host: its directory is created, and it outlives the job.
    on_host = json.loads(ssh("host1", "cat /var/lib/ferry/reports/backup.json").stdout)
    assert on_host["host"] == "host1"


def test_restore_job_in_check_mode_changes_nothing(awx, backed_up):
    before = {host: host_state(host, awx.token) for host in ("host1", "host2")}
    extravars = survey_answers(
        "restore",
        restore_target="host2",
        restore_container=awx.token,
        restore_bundle_host="host1",
        restore_work_dir=f"/var/lib/ferry/{awx.token}/incoming",
        restore_host_report_path=f"/var/lib/ferry/{awx.token}/check/restore.json",
    )
    job = awx.job("playbooks/restore.yml", extravars, check=True)
    assert job.status == "successful", job.explain()
    report = job.artifact_data["ferry_restore_report"]["host2"]
    assert report["status"] == "would_restore"
    assert report["plan"]["bytes_to_send"] > 0
    assert report["plan"]["volumes_to_create"] == [f"{awx.token}-data"]
    assert report["plan"]["image"].startswith(f"ferry-restore/{awx.token}:")
    assert "Would restore" in job.stdout and "Nothing was changed" in job.stdout
    assert {host: host_state(host, awx.token) for host in ("host1", "host2")} == before
    for host in ("host1", "host2"):
        assert ssh(host, f"test -e /var/lib/ferry/{awx.token}", check=False).returncode == 1, host


def test_restore_job_from_another_host(awx, backed_up):
    extravars = survey_answers(
        "restore",
        restore_target="host2",
        restore_container=awx.token,
        restore_bundle_host="host1",
        restore_name=f"{awx.token}-r",
        restore_progress_interval=1,
    )
    # The survey's textareas send the maps as JSON text.
    assert extravars["restore_port_map"] == "{}"
    try:
        job = awx.job("playbooks/restore.yml", extravars)
        assert job.status == "successful", job.explain()
        report = job.artifact_data["ferry_restore_report"]["host2"]
        assert report["status"] == "ok"
        assert int(report["sent_bytes"]) > 0
        assert report["created"]["container"] == f"{awx.token}-r"
        # rsync ran in the background, writing its --info=progress2 lines, which the wait reports (the
        # last try's line is the last line rsync wrote, from its statistics).
        (rsync,) = job.results("Wait for rsync")[-1:]
        assert rsync["finished"] is True
        assert rsync["progress"]["line"]
        assert "100%" in rsync["stdout"]
        # The same job again: the container runs with the bundle's config, so nothing changes.
        again = awx.job("playbooks/restore.yml", extravars)
        assert again.status == "successful", again.explain()
        assert again.artifact_data["ferry_restore_report"]["host2"]["status"] == "unchanged"
        assert again.stats("changed") == {}
        assert ssh("host2", f"docker exec {awx.token}-r cat /data/hello").stdout.strip() == awx.token
    finally:
        # The migration below moves the same container (and its volume) to host2.
        ssh(host="host2", script=f"docker rm -f {awx.token}-r; docker volume rm -f {awx.token}-data", check=False)


def test_restore_job_refuses_a_map_that_is_not_a_json_object(awx, backed_up):
    """A survey answer that is not a JSON object stops the job before anything is looked at, naming it."""
    extravars = survey_answers(
        "restore", restore_target="host2", restore_container=awx.token, restore_port_map='["80/tcp", 18080]'
    )
    job = awx.job("playbooks/restore.yml", extravars)
    assert job.status == "failed"
    assert "restore_port_map" in job.stdout
    assert "Find the bundle" not in job.stdout


def test_restore_job_on_a_host_without_root_login(awx, backed_up):
    """-u ferry --become, as a machine credential with privilege escalation gives them."""
    hosts = {"host1": awx.hosts["host1"], "sudo1": awx.sudo_hosts["sudo1"]}
    extravars = survey_answers(
        "restore",
        restore_target="sudo1",
        restore_container=awx.token,
        restore_bundle_host="host1",
        restore_progress_interval=1,
    )
    # host1 still logs in as root (its inventory says so); sudo1 as the credential's user.
    job = awx.job(
        "playbooks/restore.yml", extravars, user="ferry", become=True, host_users={"host1": "root"}, hosts=hosts
    )
    assert job.status == "successful", job.explain()
    report = job.artifact_data["ferry_restore_report"]["sudo1"]
    assert report["status"] == "ok"
    assert int(report["sent_bytes"]) > 0
    assert ssh("sudo1", f"docker exec {awx.token} cat /data/hello").stdout.strip() == awx.token
    # The run's key was authorised for ferry, and removed again.
    assert "ferry.docker restore" not in ssh("sudo1", "cat /home/ferry/.ssh/authorized_keys").stdout


def _migrate_to_sudo1(awx, **become):
    """migrate.yml host1 -> sudo1 as user ferry there; the source keeps serving, for the next test. ``become`` goes
    to ``awx.job``: the credential's flag (become=True) or an inventory variable (host_become)."""
    # an earlier job left its copy on sudo1: the migration needs a target without it
    ssh(
        "sudo1",
        f"docker ps -aq --filter name={awx.token} | xargs -r docker rm -f >/dev/null;"
        f" docker volume ls -q | grep -F '{awx.token}' | xargs -r docker volume rm -f >/dev/null; true",
    )
    hosts = {"host1": awx.hosts["host1"], "sudo1": awx.sudo_hosts["sudo1"]}
    extravars = survey_answers(
        "migrate",
        migrate_source="host1",
        migrate_target="sudo1",
        migrate_containers=awx.token,
        migrate_consistency="pause",
        migrate_cutover="keep",
    )
    job = awx.job("playbooks/migrate.yml", extravars, user="ferry", host_users={"host1": "root"}, hosts=hosts, **become)
    assert job.status == "successful", job.explain()
    (entry,) = job.artifact_data["ferry_migrate_report"]["host1"]["containers"]
    assert (entry["container"], entry["target"], entry["status"]) == (awx.token, "sudo1", "migrated")
    assert ssh("sudo1", f"docker exec {awx.token} cat /data/hello").stdout.strip() == awx.token
    # the run key went to ferry (root may not log in) and is gone again from both
    assert "ferry.docker migrate" not in ssh("sudo1", "cat /home/ferry/.ssh/authorized_keys").stdout
    assert "ferry.docker migrate" not in ssh("sudo1", "cat /root/.ssh/authorized_keys 2>/dev/null; true").stdout


def test_migrate_job_to_a_host_without_root_login(awx, backed_up):
    """-u ferry --become on the target: the run key, rsync, the signed bundles and the guard use the login user."""
    _migrate_to_sudo1(awx, become=True)


def test_migrate_job_to_a_host_whose_inventory_asks_for_become(awx, backed_up):
    """ansible_become: true in the inventory instead of the credential's flag. A variable outranks a task's
    ``become: false``: the key must still be authorised for the login user, not for root, who may not log in."""
    _migrate_to_sudo1(awx, host_become={"sudo1": True})


def test_migrate_job(awx, backed_up):
    extravars = survey_answers("migrate", migrate_source="host1", migrate_target="host2", migrate_containers=awx.token)
    # as a large capture would: each capture step in the background, its progress in the job output
    extravars.update(migrate_progress_bytes=1, migrate_progress_interval=1)
    job = awx.job("playbooks/migrate.yml", extravars)
    assert job.status == "successful", job.explain()
    # The progress lines are job events of their own, recorded while the capture task runs (before its result).
    captured_at = min(
        event["counter"]
        for event in job.events
        if event.get("event") == "runner_on_ok"
        and event["event_data"].get("task", "").startswith("Stop and capture the groups")
    )
    shown = [
        event["stdout"]
        for event in job.events
        if event.get("event") == "verbose" and event["counter"] < captured_at and "in the background" in event["stdout"]
    ]
    assert any(f"host1: committing and saving {awx.token}: started in the background" in line for line in shown), shown
    assert any(f"host1: backing up the volumes of {awx.token}: started" in line for line in shown), shown
    # and the task's result keeps each step's last progress report
    (captured,) = job.results("Stop and capture the groups")
    (group,) = captured["groups"].values()
    assert [report["bytes"] > 0 for report in group["members"][awx.token]["progress"]] == [True, True], group
    assert ssh("host2", f"docker exec {awx.token} cat /data/hello").stdout.strip() == awx.token
    (entry,) = job.artifact_data["ferry_migrate_report"]["host1"]["containers"]
    assert entry["status"] == "migrated" and entry["target"] == "host2"
