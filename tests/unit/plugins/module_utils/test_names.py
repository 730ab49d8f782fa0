# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Docker's grammar for the names a bundle brings (issue 13 E)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils._names import (
    create_body_problems,
    driver_problem,
    image_problem,
    manifest_name_problems,
    name_problem,
    split_reference,
    volume_definition_problems,
    volume_option_problems,
)


@pytest.mark.parametrize("kind", ["container", "volume", "network"])
@pytest.mark.parametrize("name", ["web", "a1", "my_vol.2-x", "0" * 64, "A" * 255])
def test_valid_names(kind, name):
    assert name_problem(kind, name) is None


@pytest.mark.parametrize("kind", ["container", "volume", "network"])
@pytest.mark.parametrize(
    "name",
    ["", "a", "/var/lib/docker", "etc/", "../x", "a/b", "-x", ".x", "_x", "a b", "a\0b", "é1", "a" * 256, None, 5],
)
def test_invalid_names(kind, name):
    assert name_problem(kind, name)


def test_absolute_volume_name_says_why():
    assert "host directory" in name_problem("volume", "/srv/data")


def test_container_name_may_carry_dockers_leading_slash():
    assert name_problem("container", "/web") is None
    assert name_problem("volume", "/web")


@given(st.text(max_size=40))
def test_name_problem_matches_the_restricted_pattern(name):
    valid = re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name, re.ASCII) is not None
    assert (name_problem("volume", name) is None) == valid


@pytest.mark.parametrize(
    "reference",
    [
        "nginx",
        "nginx:1.27",
        "library/nginx:latest",
        "docker.io/library/nginx:1.27-alpine",
        "localhost:5000/a/b_c__d-e:v1.0",
        "registry.example.com/team/app@sha256:" + "a" * 64,
        "app:1@sha256:" + "b" * 64,
        "ferry-restore/web:20240131t120000z",
        "sha256:" + "c" * 64,
        "c" * 64,
        "[::1]:5000/app:tag",
    ],
)
def test_valid_references(reference):
    assert image_problem(reference) is None


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "Nginx",
        "nginx:",
        ":tag",
        "a//b",
        "a/-b",
        "nginx:" + "t" * 129,
        "a b",
        "nginx@sha256:12",
        "/abs",
        None,
        "x" * 256,
    ],
)
def test_invalid_references(reference):
    assert image_problem(reference)


@pytest.mark.parametrize(
    "reference,expected",
    [
        ("nginx", ("nginx", "latest")),
        ("localhost:5000/app", ("localhost:5000/app", "latest")),
        ("localhost:5000/app:v2", ("localhost:5000/app", "v2")),
        ("ferry-restore/web:run1", ("ferry-restore/web", "run1")),
    ],
)
def test_split_reference(reference, expected):
    assert split_reference(reference) == expected


@pytest.mark.parametrize(
    "driver,ok",
    [(None, True), ("", True), ("local", True), ("vieux/sshfs:latest", True), ("../x", False), ("a b", False)],
)
def test_driver_names(driver, ok):
    assert (driver_problem("volume", driver) is None) is ok


@pytest.mark.parametrize(
    "options,bad",
    [
        ({}, False),
        ({"type": "tmpfs", "device": "tmpfs", "o": "size=100m"}, False),
        ({"type": "nfs", "o": "addr=10.0.0.1,rw", "device": ":/export"}, False),
        ({"type": "none", "o": "bind", "device": "/srv"}, True),
        ({"o": "rbind", "device": "/srv"}, True),
        ({"type": "BIND", "device": "x"}, True),
        ({"type": "ext4", "device": "/dev/sda1"}, True),
    ],
)
def test_volume_options_that_reach_the_host(options, bad):
    assert bool(volume_option_problems({"Driver": "local", "DriverOpts": options})) is bad


def test_other_drivers_options_are_theirs():
    assert volume_option_problems({"Driver": "vieux/sshfs", "DriverOpts": {"o": "bind"}}) == []


def test_volume_definition_problems():
    assert volume_definition_problems("data", {"Driver": "local", "Name": "data"}) == []
    assert volume_definition_problems("data", {"Name": "/etc"})
    assert volume_definition_problems("/etc", {})


def test_manifest_name_problems():
    manifest = {
        "container": {"name": "web"},
        "volumes": {"data": {"Driver": "local"}, "/etc": {"Driver": "local"}},
        "networks": {"front": {"Driver": "bridge"}, "a b": {}},
        "artifacts": [
            {"kind": "volume", "name": "x", "volume": "ok"},
            {"kind": "volume", "name": "bind:/srv", "type": "bind"},
            {"kind": "image", "name": "i", "repo_tags": ["Bad:tag"], "image_id": "nope"},
        ],
    }
    problems = manifest_name_problems(manifest)
    assert len(problems) == 4, problems
    assert any("'/etc'" in p for p in problems) and any("'a b'" in p for p in problems)
    assert any("'Bad:tag'" in p for p in problems) and any("'nope'" in p for p in problems)


def test_create_body_problems():
    body = {"Image": "nginx:1", "HostConfig": {"NetworkMode": "container:../x", "LogConfig": {"Type": "json-file"}}}
    problems = create_body_problems("web", body, [], ["/etc"], ["front"])
    assert len(problems) == 2, problems
    assert create_body_problems("web", {"Image": "nginx"}, [], ["data"], ["front"]) == []


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " "])
def test_a_trailing_newline_is_not_a_valid_name(suffix):
    assert name_problem("volume", "data" + suffix)
    assert image_problem("nginx:1" + suffix)
    assert image_problem("c" * 64 + suffix)
    assert driver_problem("volume", "local" + suffix)
