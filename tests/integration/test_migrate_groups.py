"""Dependent containers move as one group (issue 11 E), with playbooks/migrate.yml on the lab.

- A sidecar that shares its main container's network namespace and volumes (``--network container:main
  --volumes-from main``), migrated by naming only the sidecar: both move, and on host2 the sidecar reaches
  main's server on localhost through the shared namespace. main's ``ferry.docker.pre-migrate`` label hook
  ran before it stopped (its file is in the migrated volume).
- A three-service project labelled the way docker compose labels it, one of whose services cannot get its
  published port on host2: the whole project stays running on host1, and the report names that service.
  Once the port is free, the project moves as a whole.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest
from lab_run import migrate, ssh


def state(host, name):
    return (
        ssh(host, f"docker inspect -f '{{{{.State.Status}}}}' {name} 2>/dev/null", check=False).stdout.strip()
        or "absent"
    )


def fetch(host, name, port=8080, path="token"):
    """What ``name``'s network namespace serves on localhost, seen from inside ``name``."""
    result = ssh(
        host, f"timeout 5 docker exec {name} wget -q -O - http://127.0.0.1:{port}/{path} 2>/dev/null", check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


@pytest.fixture
def names(lab):
    """A prefix for this test's containers; everything with it removed from both hosts afterwards."""
    prefix = f"ferry-grp-{uuid.uuid4().hex[:6]}"
    yield prefix
    for host in ("host1", "host2"):
        ssh(
            host,
            f"docker ps -aq --filter name={prefix} | xargs -r docker rm -f >/dev/null; "
            f"docker volume ls -q --filter name={prefix} | xargs -r docker volume rm >/dev/null; "
            f"docker images -q 'ferry-migrate/{prefix}*' | sort -u | xargs -r docker rmi -f >/dev/null; true",
            check=False,
        )


def test_a_sidecar_named_alone_moves_with_its_main_container(names, tmp_path):
    main, side = f"{names}-main", f"{names}-side"
    token = uuid.uuid4().hex
    ssh(
        "host1",
        f"docker volume create {names}-data >/dev/null && "
        f"docker run --rm --pull never -v {names}-data:/data ferry-lab/busybox sh -c 'echo {token} > /data/token' && "
        f"docker run -d --pull never --name {main} --hostname web1 -v {names}-data:/data "
        "-l ferry.docker.pre-migrate='date > /data/pre-migrate' "
        f"ferry-lab/busybox httpd -f -p 8080 -h /data >/dev/null && "
        f"docker run -d --pull never --name {side} --network container:{main} --volumes-from {main} "
        f"ferry-lab/busybox sleep 100000 >/dev/null",
    )
    assert fetch("host1", side) == token

    run, report = migrate(tmp_path, [side])
    assert run.returncode == 0, run.stdout[-6000:]
    assert {report[main]["status"], report[side]["status"]} == {"migrated"}
    assert report[main]["pulled_in"] is True and report[side]["pulled_in"] is False
    assert report[side]["group"] == [main, side]
    # main's pre-migrate hook ran before it stopped: its file moved with the volume
    assert [hook["status"] for hook in report[main]["hooks"]] == ["ok"] and report[side]["hooks"] == []
    assert ssh("host2", f"docker exec {side} cat /data/pre-migrate").stdout.strip()
    # On host2 the sidecar is in main's network namespace (it reaches main's server on localhost) and
    # has main's volume; the sources are stopped.
    assert fetch("host2", side) == token
    mode = ssh("host2", f"docker inspect -f '{{{{.HostConfig.NetworkMode}}}}' {side}").stdout.strip()
    main_id = ssh("host2", f"docker inspect -f '{{{{.Id}}}}' {main}").stdout.strip()
    assert mode in (f"container:{main}", f"container:{main_id}")
    assert ssh("host2", f"docker exec {side} cat /data/token").stdout.strip() == token
    assert state("host1", main) == "exited" and state("host1", side) == "exited"


def compose_project(names, port):
    """Three services as docker compose labels them: db, then api (depends on db), then web (on api)."""
    project = f"{names}-proj"
    services = [("db", ""), ("api", "db:service_started:false"), ("web", "api:service_started:false")]
    script = []
    for service, depends_on in services:
        labels = f"-l com.docker.compose.project={project} -l com.docker.compose.service={service}"
        if depends_on:
            labels += f" -l com.docker.compose.depends_on={depends_on}"
        publish = f"-p {port}:8080" if service == "web" else ""
        script.append(
            f"docker run -d --pull never --name {names}-{service} {labels} {publish} "
            "ferry-lab/busybox sh -c "
            f"'mkdir -p /www && echo {service} > /www/name && httpd -f -p 8080 -h /www' >/dev/null"
        )
    ssh("host1", " && ".join(script))
    return [f"{names}-{service}" for service, _depends_on in services]


def test_a_project_with_one_service_that_fails_its_checks_stays_whole_on_the_source(names, tmp_path):
    port = random.randint(20000, 29999)
    db, api, web = compose_project(names, port)
    blocker = f"{names}-blocker"
    ssh(
        "host2", f"docker run -d --pull never --name {blocker} -p {port}:8080 ferry-lab/busybox sleep 100000 >/dev/null"
    )

    run, report = migrate(tmp_path, [api])
    assert run.returncode != 0
    assert {report[c]["status"] for c in (db, api, web)} == {"failed"}
    assert str(port) in report[web]["error"]
    assert web in report[db]["error"] and web in report[api]["error"]  # the others name the member that failed
    for name in (db, api, web):
        assert state("host1", name) == "running" and state("host2", name) == "absent"
        assert fetch("host1", name, path="name") == name.rsplit("-", 1)[-1]

    ssh("host2", f"docker rm -f {blocker} >/dev/null")
    run, report = migrate(tmp_path, [api])
    assert run.returncode == 0, run.stdout[-6000:]
    assert {report[c]["status"] for c in (db, api, web)} == {"migrated"}
    assert report[db]["group"] == [db, api, web]  # dependency order
    for name in (db, api, web):
        assert state("host2", name) == "running" and state("host1", name) == "exited"
        assert fetch("host2", name, path="name") == name.rsplit("-", 1)[-1]


def test_check_mode_reports_what_would_move_and_changes_nothing(names, tmp_path):
    main, side = f"{names}-main", f"{names}-side"
    ssh(
        "host1",
        f"docker run -d --pull never --name {main} -v {names}-data:/data ferry-lab/busybox "
        f"httpd -f -p 8080 -h /data >/dev/null && "
        f"docker run -d --pull never --name {side} --network container:{main} "
        "ferry-lab/busybox sleep 100000 >/dev/null",
    )
    # what the run could make on host2 (other tests migrate to host2 meanwhile): containers and volumes named
    # after this test's, the run's key line; and on host1, the run's journal
    on_host2 = (
        f"docker ps -aq --filter name={names} | wc -l; docker volume ls -q --filter name={names} | wc -l; "
        "grep -c -F 'ferry.docker migrate {run} ' ~/.ssh/authorized_keys; true"
    )
    # a mapping as a JSON object string, the way an AWX survey's text field sends it
    run, report = migrate(tmp_path, [main], check=True, migrate_name_map=json.dumps({main: f"{main}-new"}))
    assert run.returncode == 0, run.stdout[-6000:]
    assert {report[main]["status"], report[side]["status"]} == {"would_migrate"}
    assert report[main]["name"] == f"{main}-new" and report[side]["name"] == side
    assert report[main]["volumes_to_create"] == [f"{names}-data"] and report[side]["pulled_in"] is True
    assert state("host1", main) == "running" and state("host1", side) == "running"
    (written,) = tmp_path.glob("report-*.json")
    run_id = json.loads(written.read_text())["sources"]["host1"]["run"]
    assert run_id, written.read_text()
    assert ssh("host2", on_host2.format(run=run_id)).stdout.split() == ["0", "0", "0"]
    assert ssh("host1", f"ls /var/lib/ferry/journal 2>/dev/null | grep -c -F {run_id}; true").stdout.strip() == "0"
