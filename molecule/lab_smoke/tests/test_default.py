"""Testinfra checks for every lab host: its own dockerd, sshd, the converge marker and the workload image."""

from __future__ import annotations

import json

MARKER = "/var/lib/ferry-lab/molecule-lab-smoke"
MARKER_MODE = 0o644
WORKLOAD_IMAGE = "ferry-lab/busybox:latest"


def test_dockerd_runs_and_answers(host):
    assert host.process.filter(comm="dockerd"), "no dockerd process"
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["Name"] == host.backend.get_hostname()
    assert info["ServerVersion"]


def test_sshd_listens_on_22(host):
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_marker_from_converge(host):
    marker = host.file(MARKER)
    assert marker.is_file
    assert marker.mode == MARKER_MODE
    assert marker.content_string == f"converged by molecule lab_smoke on {host.backend.get_hostname()}\n"


def test_workload_image_is_loaded(host):
    assert host.run(f"docker image inspect {WORKLOAD_IMAGE}").rc == 0
