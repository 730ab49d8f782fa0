"""The run report POSTed to backup_notify_url (a local HTTP server on the controller, 127.0.0.1, an
ephemeral port) after success and failure, with retries; the Prometheus textfile on host1, parsed
with prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import SELECTED
from prometheus_client.parser import text_string_to_metric_families

METRICS_DIR = "/var/lib/ferry-molecule-backup-metrics"
METRICS = f"{METRICS_DIR}/ferry_backup.prom"
MISSING = "ferry-molecule-backup-missing"


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs and answers with the statuses it is given."""

    def __init__(self):
        self.posts = []
        self.answers = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                receiver.posts.append(
                    {"path": self.path, "type": self.headers.get("Content-Type"), "body": self.rfile.read(length)}
                )
                self.send_response(receiver.answers.pop(0) if receiver.answers else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ferry/backup?token=s3cr3t-t0ken"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver():
    with Receiver() as started:
        yield started


@pytest.fixture
def metrics_dir(host):
    host.run_expect([0], f"rm -rf {METRICS_DIR} && mkdir -m 0755 {METRICS_DIR}")
    try:
        yield METRICS
    finally:
        host.run(f"rm -rf {METRICS_DIR}")


def samples(text):
    """{(metric, container): value} through the official text-format parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, sample.labels["container"])] = sample.value
    return found


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ferry/backup?token=s3cr3t-t0ken"


def test_success_is_posted_and_the_metrics_parse(host, receiver, metrics_dir, run_backup):
    proc, report = run_backup(
        {"backup_containers": [SELECTED], "backup_notify_url": receiver.url, "backup_metrics_path": metrics_dir}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (post,) = receiver.posts
    assert post["path"] == "/ferry/backup?token=s3cr3t-t0ken"
    assert post["type"].startswith("application/json")
    assert json.loads(post["body"]) == report
    assert "s3cr3t-t0ken" not in proc.stdout + proc.stderr
    (entry,) = report["hosts"]["host1"]["containers"]
    metrics_file = host.file(metrics_dir)
    assert metrics_file.mode == 0o644
    got = samples(metrics_file.content_string)
    assert got[("ferry_backup_last_run_success", SELECTED)] == 1
    assert got[("ferry_backup_last_run_bytes", SELECTED)] == int(entry["bytes"])
    assert got[("ferry_backup_last_run_duration_seconds", SELECTED)] == pytest.approx(float(entry["duration"]))
    assert (
        got[("ferry_backup_last_success_timestamp_seconds", SELECTED)]
        == got[("ferry_backup_last_run_timestamp_seconds", SELECTED)]
    )


def test_failure_is_posted_after_retries_and_the_metrics_keep_the_last_success(host, receiver, metrics_dir, run_backup):
    run_backup({"backup_containers": [SELECTED], "backup_metrics_path": metrics_dir})
    first = samples(host.file(metrics_dir).content_string)
    receiver.answers = [500, 503]
    proc, report = run_backup(
        {
            "backup_containers": [MISSING, SELECTED],
            "backup_notify_url": receiver.url,
            "backup_notify_delay": 1,
            "backup_metrics_path": metrics_dir,
        }
    )
    assert proc.returncode != 0, "a missing container fails the play"
    assert report["status"] == "failed"
    assert len(receiver.posts) == 3, "two refused POSTs, then one accepted"
    assert all(json.loads(post["body"]) == report for post in receiver.posts)
    assert "could not be sent" not in proc.stdout
    got = samples(host.file(metrics_dir).content_string)
    assert got[("ferry_backup_last_run_success", MISSING)] == 0
    assert ("ferry_backup_last_success_timestamp_seconds", MISSING) not in got
    assert got[("ferry_backup_last_run_success", SELECTED)] == 1
    assert (
        got[("ferry_backup_last_success_timestamp_seconds", SELECTED)]
        >= first[("ferry_backup_last_success_timestamp_seconds", SELECTED)]
    )


def test_an_unreachable_url_fails_the_run_and_says_so_without_the_url(host, run_backup):
    url = closed_port_url()
    proc, report = run_backup(
        {
            "backup_containers": [SELECTED],
            "backup_notify_url": url,
            "backup_notify_retries": 1,
            "backup_notify_delay": 1,
        }
    )
    assert proc.returncode != 0, "a report that could not be sent fails the run"
    assert report["status"] == "ok", "the backup itself succeeded and the report says so"
    assert "could not be sent to backup_notify_url after 2 tries" in proc.stdout, proc.stdout[-3000:]
    assert "s3cr3t-t0ken" not in proc.stdout + proc.stderr


def test_check_mode_posts_nothing_and_writes_no_metrics(host, receiver, metrics_dir, run_backup):
    proc, _report = run_backup(
        {"backup_containers": [SELECTED], "backup_notify_url": receiver.url, "backup_metrics_path": metrics_dir},
        check=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert receiver.posts == []
    assert not host.file(metrics_dir).exists
