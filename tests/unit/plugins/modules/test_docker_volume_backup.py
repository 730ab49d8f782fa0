# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_volume_backup without an engine: which mounts are read and under which artifact file names."""

from __future__ import annotations

import contextlib
import socket

import pytest

from ansible_collections.ferry.docker.plugins.module_utils import _step_volume_backup as mod
from ansible_collections.ferry.docker.plugins.module_utils._bundle import _check_file_name
from ansible_collections.ferry.docker.plugins.module_utils._capture import bind_file_name, parse_mode

ANON = "a" * 64


class FakeCapture:
    compression = "zstd"


INSPECT = {
    "Mounts": [
        {"Type": "volume", "Name": "zeta", "Destination": "/z", "RW": True},
        {"Type": "bind", "Source": "/srv/conf dir", "Destination": "/etc/app", "RW": False},
        {"Type": "volume", "Name": ANON, "Destination": "/anon", "RW": True},
        {"Type": "tmpfs", "Destination": "/run"},
        {"Type": "volume", "Name": "alpha", "Destination": "/a", "RW": True},
    ]
}


def test_plan_takes_volumes_in_a_stable_order_and_binds_only_when_asked():
    sources = mod.plan(FakeCapture(), INSPECT, [], include_binds=False)
    assert [s["name"] for s in sources] == [ANON, "alpha", "zeta"]
    assert [s["file"] for s in sources] == [f"volume-{ANON}.tar.zst", "volume-alpha.tar.zst", "volume-zeta.tar.zst"]
    assert sources[1]["destination"] == "/a" and sources[1]["rw"] is True


def test_plan_adds_binds_and_standalone_volumes_without_duplicates():
    sources = mod.plan(FakeCapture(), INSPECT, ["alpha", "extra"], include_binds=True)
    assert [s["name"] for s in sources] == [ANON, "alpha", "extra", "zeta", "bind:/srv/conf dir"]
    bind = sources[-1]
    assert bind["type"] == "bind" and bind["source"] == "/srv/conf dir" and bind["rw"] is False
    assert _check_file_name(bind["file"]) is None
    extra = sources[2]
    assert extra["destination"] is None and extra["type"] == "volume"


@pytest.mark.parametrize("path", ["/", "/srv/conf dir", "/../..", "/.hidden", "/a" * 200])
def test_bind_file_names_are_plain_and_distinct(path):
    name = bind_file_name(path, ".zst")
    assert _check_file_name(name) is None
    assert name != bind_file_name(path + "x", ".zst")


@pytest.mark.parametrize(("value", "expected"), [("0600", 0o600), ("640", 0o640), (0o600, 0o600), ("0o755", 0o755)])
def test_parse_mode_accepts_octal_strings_and_ints(value, expected):
    assert parse_mode(value, "mode") == expected


@pytest.mark.parametrize("value", ["rw", "0800", "", True, 0o17777])
def test_parse_mode_rejects_the_rest(value):
    with pytest.raises(ValueError, match="mode"):
        parse_mode(value, "mode")


class FakeClient:
    base_url = "http+docker://localhost"

    def __init__(self, name, security=()):
        self._info = {"Name": name, "SecurityOptions": list(security)}

    def info(self):
        return self._info


class LocatingCapture(FakeCapture):
    def __init__(self, client):
        self.client = client

    def errors(self, what):
        return contextlib.nullcontext()


@pytest.mark.parametrize(
    ("engine", "security", "driver", "options", "local"),
    [
        ("HOST", [], "local", {}, True),
        ("HOST", [], "local", {"type": "nfs", "o": "addr=1.2.3.4"}, False),
        ("HOST", ["name=rootless"], "local", {}, False),
        ("other-host", [], "local", {}, False),
    ],
)
def test_locate_reads_a_directory_only_when_it_is_the_engines(tmp_path, engine, security, driver, options, local):
    host = socket.gethostname() if engine == "HOST" else engine
    cap = LocatingCapture(FakeClient(host, security))
    sources = [
        dict(name="v", type="volume", volume="v"),
        dict(name=f"bind:{tmp_path}", type="bind", source=str(tmp_path)),
    ]
    inspects = {"v": {"Mountpoint": str(tmp_path), "Driver": driver, "Options": options}}
    mod.locate(cap, sources, inspects)
    assert (sources[0]["local"] == str(tmp_path)) is local
    assert (sources[0]["reason"] is None) is local
    assert (sources[1]["local"] == str(tmp_path)) is (engine == "HOST" and not security)


def test_a_source_read_through_the_engine_reports_what_it_loses():
    notes = mod.api_notes(dict(reason="the Docker engine is not reached over a local unix socket"))
    assert [item["attribute"] for item in notes.as_list()] == ["sparse", "xattr user.* and POSIX ACLs"]
    assert all("not reached over a local unix socket" in item["reason"] for item in notes.as_list())
